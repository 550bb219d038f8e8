"""How results.md prints numbers, settings and the paired comparisons with the control: one
place for every table's formatting."""

from __future__ import annotations

from typing import Sequence

from embaug_jax import evaluate, registry
from embaug_jax.registry import display_name
from embaug_jax.report.statistics import FAMILIES

# Every metric a table compares with the control: (label, scale, unit, better), better being +1
# where higher is better and -1 where lower is.
_CALIBRATION_LABELS = {"ece": "ECE", "ece_mass": "ECE, equal-mass bins",
                       "ece_seen": "ECE, seen rows", "nll": "NLL", "brier": "Brier score"}
_SCALING_LABELS = {"ts": "after temperature scaling", "vs": "after vector scaling"}
METRIC_LABELS = {
    "weighted_auc": ("weighted AUC", 1.0, "", 1),
    "seen_auc": ("seen-class AUC", 1.0, "", 1),
    "none_auroc": ("\"none\" AUC", 1.0, "", 1),
    "overall_accuracy": ("overall accuracy", 100.0, " pp", 1),
    "none_accuracy": ("\"none\" accuracy", 100.0, " pp", 1),
    "oscr_auc": ("OSCR area", 1.0, "", 1),
    "none_aupr": ("AUPR, \"none\" positive", 1.0, "", 1),
    "seen_aupr": ("AUPR, \"none\" negative", 1.0, "", 1),
    "none_fpr_at_95_tpr": ("FPR @ 95% TPR", 1.0, "", -1),
    "tuned_overall_accuracy": ("overall accuracy @ own threshold", 100.0, " pp", 1),
    "tuned_none_accuracy": ("\"none\" accuracy @ own threshold", 100.0, " pp", 1),
    "tuned_seen_accuracy": ("seen accuracy @ own threshold", 100.0, " pp", 1),
    "best_detector_auroc": ("best detector's AUROC", 1.0, "", 1),
    "best_detector_aupr": ("best detector's AUPR", 1.0, "", 1),
    "best_detector_fpr_at_95_tpr": ("best detector's FPR @ 95% TPR", 1.0, "", -1),
    **{key: (label, 1.0, "", -1) for key, label in _CALIBRATION_LABELS.items()},
    **{f"{key}_{s}": (f"{label} {_SCALING_LABELS[s]}", 1.0, "", -1)
       for s in evaluate.SCALINGS for key, label in _CALIBRATION_LABELS.items()},
}


def number(x, digits: int = 4, *, scale: float = 1.0, signed: bool = False) -> str:
    """x * scale with `digits` decimals, "n/a" for None; signed ones carry "+" or "-", and a
    value that rounds to zero prints as zero ("0.0000", never "-0.0000")."""
    if x is None:
        return "n/a"
    value = x * scale
    if round(value, digits) == 0:
        return f"{0.0:.{digits}f}"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def stat_text(stat: dict, *, scale=1.0, digits=4, dev="max_dev") -> str:
    """A summarised metric (`results.summarize`): "mean ± max deviation", or the mean of one."""
    if stat["mean"] is None:
        return "n/a"
    if stat["n"] < 2:
        return number(stat["mean"], digits, scale=scale)
    mean, spread = (number(stat[k], digits, scale=scale) for k in ("mean", dev))
    return f"{mean} ± {spread}"


def interval_text(low, high, excludes, scale, digits) -> str:
    """A 95% interval "[low, high]", marked where it contains 0; "-" where not computed."""
    if low is None or high is None:
        return "-"
    mark = "" if excludes else " (contains 0)"
    return (f"[{number(low, digits, scale=scale, signed=True)}, "
            f"{number(high, digits, scale=scale, signed=True)}]{mark}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _swept(results: dict) -> list[str]:
    """The settings every method reads that the sweep ran several values of: the variants
    record only those (`report.results.swept_settings`)."""
    return [s.name for s in registry.settings(every_method=True)
            if any(s.name in e for e in results["variants"].values())]


def column_settings(results: dict) -> list[str]:
    """The settings with a column of their own: the paper's alpha and softness, and the swept
    settings every method reads (a weight decay grid, say)."""
    return [s.name for s in registry.settings() if s.column] + _swept(results)


def reads(method: str, results: dict) -> tuple[str, ...]:
    """The settings `method` reads (a method not registered here: the column settings), and
    the swept ones every method reads."""
    try:
        own = registry.method(method).reads
    except registry.UnknownNameError:
        own = tuple(s.name for s in registry.settings() if s.column)
    return own + tuple(_swept(results))


def setting_text(entry: dict, results: dict) -> str:
    """A variant's settings in a few characters: "alpha 0.2, softness 0.05" or "-"."""
    return ", ".join(f"{k} {entry.get(k, 0):g}"
                     for k in reads(entry["method"], results)) or "-"


def metric_label(metric: str) -> tuple[str, float, int]:
    """(label, scale, digits) of a per-member metric in tables and figures: accuracies in %."""
    label = METRIC_LABELS.get(metric, (metric.replace("_", " ").replace("none", '"none"'),))[0]
    return (label + " (%)", 100.0, 2) if metric.endswith("accuracy") else (label, 1.0, 4)


def paired_rows_text(results: dict) -> str:
    """Which rows chose each method's setting and which measured its differences."""
    if results["paired"]["rows"] == "report":
        sel = results["selection"]
        return (f"alpha chosen on {sel['num_selection_rows']} selection rows per trial, "
                f"differences on the other {sel['num_report_rows']}")
    return ("alpha chosen and differences measured on the same validation rows, the paper's "
            "procedure, which favours the methods")


def difference_text(d: dict, key: str) -> str:
    """A paired difference with its unit: "+0.0123" or "-4.80 pp"."""
    _, scale, unit, _ = METRIC_LABELS[key]
    return number(d["mean"], 2 if unit else 4, scale=scale, signed=True) + unit


def _holm_cell(p_adjusted, level) -> str:
    if p_adjusted is None:
        return "-"
    return f"p {p_adjusted:.3f}, {'yes' if p_adjusted <= level else 'no'}"


def format_paired(results: dict, family: str = "table1") -> str:
    """Each method minus the control on the metrics of one family of comparisons
    (`statistics.FAMILIES`): mean paired difference, its two 95% intervals, and Holm's
    correction over the family."""
    paired = results["paired"]
    holm = paired.get("families", {}).get(family)
    header = ["Method", "Difference in", "Mean", "Trials", "95% paired t",
              f"95% bootstrap ({paired['bootstrap_resamples']} resamples)", "Beyond noise"]
    if holm:
        header.append(f"Holm ({holm['comparisons']} comparisons)")
    metrics = FAMILIES[family]
    rows = []
    for method, entry in paired["methods"].items():
        for key in metrics:
            d = entry.get(key)
            if d is None or d["mean"] is None:  # e.g. no "none" row in any trial
                continue
            label, scale, unit, _ = METRIC_LABELS[key]
            digits = 2 if unit else 4
            rows.append([
                display_name(method), label + (f" ({unit.strip()})" if unit else ""),
                number(d["mean"], digits, scale=scale, signed=True), str(d["n"]),
                interval_text(d["t_low"], d["t_high"], d["t_excludes_zero"], scale, digits),
                interval_text(d["boot_low"], d["boot_high"], d["boot_excludes_zero"], scale,
                              digits),
                "yes" if d["distinguishable"] else "no",
                *([_holm_cell(holm["adjusted"][method].get(key), holm["level"])] if holm
                  else [])])
    return markdown_table(header, rows)


def holm_note(results: dict, family: str) -> str:
    """How many comparisons a table makes and what Holm's correction does with them."""
    holm = results["paired"].get("families", {}).get(family)
    if not holm or not holm["comparisons"]:
        return ""
    m, level = holm["comparisons"], holm["level"]
    return (f"This table makes {m} comparisons with the control: were no method different from "
            f"it, up to about {m * level:.1f} of them could still exclude 0 at the 95% level by "
            f"chance. The last column corrects for that (Holm's step-down rule over the "
            f"table's {m}, family-wise level {level:g}): each comparison's adjusted p-value, "
            f"from the larger of its paired-t p-value and its bootstrap one (the normal "
            f"approximation from the resamples' spread), and \"yes\" where it is at most "
            f"{level:g}.")
