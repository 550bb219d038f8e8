"""The Table-1 analogue and results.md, as markdown."""

from typing import Sequence

from embaug_jax import registry
from embaug_jax.registry import display_name
from embaug_jax.workdir import FIGURES


def _fmt(stat: dict, *, scale=1.0, digits=4, dev="max_dev") -> str:
    if stat["mean"] is None:
        return "n/a"
    if stat["n"] < 2:
        return f"{stat['mean'] * scale:.{digits}f}"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat[dev] * scale:.{digits}f}"


def _columns() -> list[str]:
    """The settings with a column of their own (the paper's alpha and softness)."""
    return [s.name for s in registry.settings() if s.column]


def _reads(method: str) -> tuple[str, ...]:
    """The settings `method` reads (a method not registered here: the column settings)."""
    try:
        return registry.method(method).reads
    except registry.UnknownNameError:
        return tuple(_columns())


def _fmt_param(entry: dict, key: str) -> str:
    """A variant's value of setting `key`, or "-" when its method does not read it; for key
    "other", the settings without a column of their own (e.g. "smoothing 0.1")."""
    used = _reads(entry["method"])
    if key == "other":
        return ", ".join(f"{k} {entry.get(k, 0):g}" for k in used
                         if k not in _columns()) or "-"
    return f"{entry[key]:g}" if key in used else "-"


def _has_other(results: dict) -> bool:
    return any(set(_reads(e["method"])) - set(_columns())
               for e in results["variants"].values())


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


PAPER_COLUMN = "Paper's weighted AUC (its own data: Fashion Product Images)"
# Paired differences: (metric, label, scale, unit) in the order the tables list them.
PAIRED_ROWS = (("weighted_auc", "weighted AUC", 1.0, ""), ("seen_auc", "seen-class AUC", 1.0, ""),
               ("none_auroc", "\"none\" AUC", 1.0, ""),
               ("overall_accuracy", "overall accuracy", 100.0, " pp"),
               ("none_accuracy", "\"none\" accuracy", 100.0, " pp"), ("ece", "ECE", 1.0, ""))


def _no_none(results: dict) -> bool:
    return not any(results.get("num_none_examples", [1]))


def no_none_note(results: dict) -> str:
    """What a reader needs to know when no trial has a "none" example."""
    return ("No validation example belongs to a class held out of training in any trial, so the "
            "\"none\" metrics (\"none\" accuracy, \"none\" AUC, the \"none\" part of the "
            "weighted AUC) are absent and the weighted AUC is the seen-class AUC alone. Hold "
            "classes out with --config.data.holdout_classes=K (K random classes per trial) or "
            "--config.data.holdout_names=a,b (fixed classes).")


def format_table(results: dict) -> str:
    """The Table-1 analogue (markdown): best variant per method, mean ± max deviation."""
    t = results["threshold"]
    other = _has_other(results)
    header = ["Method", *_columns(), *(["other"] if other else []), "Weighted AUC",
              f"Overall acc @{t:g} (%)", f"None acc @{t:g} (%)", PAPER_COLUMN]
    rows = []
    for method, entry in results["methods"].items():
        paper = results.get("paper_table1", {}).get(method)
        rows.append([
            display_name(method), *(_fmt_param(entry, k) for k in _columns()),
            *([_fmt_param(entry, "other")] if other else []),
            _fmt(entry["weighted_auc"]),
            _fmt(entry["overall_accuracy"], scale=100, digits=2),
            _fmt(entry["none_accuracy"], scale=100, digits=2),
            f"{paper['mean']:.4f} ± {paper['max_dev']:.4f}" if paper else "-",
        ])
    return _markdown(header, rows)


def _signed(x, scale=1.0, digits=4) -> str:
    return "n/a" if x is None else f"{x * scale:+.{digits}f}"


def _interval(low, high, excludes, scale, digits) -> str:
    if low is None or high is None:
        return "-"
    mark = "" if excludes else " (contains 0)"
    return f"[{low * scale:+.{digits}f}, {high * scale:+.{digits}f}]{mark}"


def format_decomposition(results: dict, section: str = "methods") -> str:
    """Weighted AUC = seen part + "none" part, with the AUCs and the weight behind each part."""
    header = ["Method", "Weighted AUC", "= seen part", "+ \"none\" part", "Seen-class AUC",
              "\"None\" AUC", "\"None\" weight"]
    absent = "absent" if _no_none(results) else "n/a"
    rows = [[display_name(m), _fmt(e["weighted_auc"]), _fmt(e["seen_part"]),
             _fmt(e["none_part"]), _fmt(e["seen_auc"]),
             _fmt(e["none_auroc"]) if e["none_auroc"]["mean"] is not None else absent,
             _fmt(e["none_weight"])] for m, e in results[section].items()]
    return _markdown(header, rows)


def format_paired(results: dict) -> str:
    """Each method minus the control: mean paired difference and its two 95% intervals."""
    paired = results["paired"]
    header = ["Method", "Difference in", "Mean", "Trials", "95% paired t",
              f"95% bootstrap ({paired['bootstrap_resamples']} resamples)", "Beyond noise"]
    rows = []
    for method, entry in paired["methods"].items():
        for key, label, scale, unit in PAIRED_ROWS:
            d = entry[key]
            if d["mean"] is None:  # e.g. no "none" example in any trial: nothing to compare
                continue
            digits = 2 if unit else 4
            rows.append([
                display_name(method), label + (f" ({unit.strip()})" if unit else ""),
                _signed(d["mean"], scale, digits), str(d["n"]),
                _interval(d["t_low"], d["t_high"], d["t_excludes_zero"], scale, digits),
                _interval(d["boot_low"], d["boot_high"], d["boot_excludes_zero"], scale, digits),
                "yes" if d["distinguishable"] else "no"])
    return _markdown(header, rows)


def paired_sentences(results: dict) -> list[str]:
    """One plain sentence per method: which differences from the control stand out of noise."""
    paired = results.get("paired")
    if not paired:
        return []
    out = []
    for method, entry in paired["methods"].items():
        name = display_name(method)
        clear, unclear = [], []
        for key, label, scale, unit in PAIRED_ROWS:
            d = entry[key]
            if d["mean"] is None:
                continue
            digits = 2 if unit else 4
            text = f"{label} {_signed(d['mean'], scale, digits)}{unit}"
            (clear if d["distinguishable"] else unclear).append(text)
        n = max((entry[k]["n"] for k, *_ in PAIRED_ROWS), default=0)
        sentence = f"{name} against the control ({n} paired trial{'s' if n != 1 else ''}): "
        if clear:
            sentence += "distinguishable from noise: " + ", ".join(clear)
            sentence += ("; within noise: " + ", ".join(unclear)) if unclear else ""
        else:
            sentence += "no difference is distinguishable from noise (" + ", ".join(unclear) + ")"
        out.append(sentence + ".")
    return out


def format_selection(results: dict) -> str:
    """The paper's alpha choice beside the choice made on held-out rows."""
    sel = results["selection"]
    header = ["Method", "setting (paper's procedure)", "Weighted AUC (paper's procedure)",
              "setting (held-out choice)", "Weighted AUC on report rows", "Overall acc (%)",
              "None acc (%)"]
    rows = []
    for method, entry in sel["methods"].items():
        paper = results["methods"][method]
        rows.append([display_name(method), _setting(paper),
                     _fmt(paper["weighted_auc"]), _setting(entry),
                     _fmt(entry["weighted_auc"]),
                     _fmt(entry["overall_accuracy"], scale=100, digits=2),
                     _fmt(entry["none_accuracy"], scale=100, digits=2)])
    return _markdown(header, rows)


def _setting(entry: dict) -> str:
    """A variant's settings in a few characters: "alpha 0.2, softness 0.05" or "-"."""
    return ", ".join(f"{k} {entry.get(k, 0):g}" for k in _reads(entry["method"])) or "-"


def format_class_auc(results: dict) -> str:
    """Per-class AUC of each method's chosen variant (mean over trials; n = trials it was a
    column in), then the "none" column."""
    methods = list(results["methods"])
    classes = []
    for e in results["methods"].values():
        classes += [c for c in e.get("class_auc", {}) if c not in classes]
    header = ["Class"] + [display_name(m) for m in methods] + ["n"]
    rows = []
    for c in classes:
        stats = [results["methods"][m].get("class_auc", {}).get(c) for m in methods]
        n = max((s["n"] for s in stats if s), default=0)
        rows.append([c] + [f"{s['mean']:.4f}" if s and s["mean"] is not None else "-"
                           for s in stats] + [str(n)])
    none = [results["methods"][m]["none_auroc"] for m in methods]
    if any(s["mean"] is not None for s in none):
        rows.append(["\"none\""] + [f"{s['mean']:.4f}" if s["mean"] is not None else "-"
                                     for s in none] + [str(max(s["n"] for s in none))])
    return _markdown(header, rows)


def format_summary(results: dict) -> str:
    """What `embaug train` prints: Table 1, its decomposition and the paired differences."""
    parts = [format_table(results), "", "Weighted AUC by part (each method's Table-1 variant):",
             "", format_decomposition(results)]
    if results.get("paired"):
        where = _paired_rows_text(results)
        parts += ["", f"Differences from the control, trial by trial ({where}):", "",
                  format_paired(results), ""] + paired_sentences(results)
    if _no_none(results):
        parts += ["", no_none_note(results)]
    return "\n".join(parts)


def _paired_rows_text(results: dict) -> str:
    if results["paired"]["rows"] == "report":
        sel = results["selection"]
        return (f"alpha chosen on {sel['num_selection_rows']} selection rows per trial, "
                f"differences on the other {sel['num_report_rows']}")
    return ("alpha chosen and differences measured on the same validation rows, the paper's "
            "procedure, which favours the methods")


def results_markdown(results: dict, title: str | None) -> str:
    """results.md: `results` as tables and sentences, under the heading `title`."""
    t = results["threshold"]
    parts = [
        f"# {title or 'Results'}",
        "",
        f"{results['num_members']} members over {results['num_trials']} trials; "
        f"{results['num_validation']} validation examples per trial, {results['num_classes']} "
        f"classes ({', '.join(map(str, sorted(set(results['num_seen_classes']))))} seen in "
        f"training; \"none\" examples per trial: {results['num_none_examples']}). Figures are "
        f"mean ± max deviation over trials and seeds, as the paper prints them; accuracies at "
        f"confidence threshold {t:g} (a prediction needs probability strictly above it).",
        "",
        "## Table 1: best alpha per method (by mean weighted AUC)",
        "",
        "The paper's procedure: alpha chosen by the weighted AUC on the same validation rows "
        "that are reported. The last column is the paper's figure on its own data set, for "
        "orientation only: it is not a number this data set can reproduce.",
        "",
        format_table(results),
        "",
    ]
    if _no_none(results):
        parts += [no_none_note(results), ""]
    parts += [
        "## The weighted AUC by part",
        "",
        "Table 1's weighted AUC averages one-vs-rest AUCs weighted by support, so it is exactly "
        "(\"none\" weight) x (\"none\" AUC) + (1 - \"none\" weight) x (seen-class AUC), "
        "where the \"none\" weight is the share of validation rows from classes held out of "
        "training. A method's gain over the control splits the same way "
        f"({FIGURES['auc_decomposition']}).",
        "",
        format_decomposition(results),
        "",
    ]
    if "selection" in results:
        sel = results["selection"]
        parts += [
            "## Alpha chosen on held-out rows",
            "",
            f"Each trial's validation rows split at random: {sel['num_selection_rows']} choose "
            f"each method's alpha (by mean weighted AUC), the other {sel['num_report_rows']} "
            f"report it. Choosing and reporting on the same rows (the paper's procedure, left) "
            f"flatters every method with an alpha to choose; the right is free of that bias.",
            "",
            format_selection(results),
            "",
        ]
    if results.get("paired"):
        parts += [
            "## Differences from the control",
            "",
            f"Members that differ only in method share split, initialisation and shuffles, so "
            f"each method is compared with the control trial by trial "
            f"({_paired_rows_text(results)}). Intervals are 95%: paired t over trials (does "
            f"the difference survive another split and initialisation?) and a bootstrap over "
            f"validation rows within each trial (does it survive another draw of validation "
            f"rows?). A difference is distinguishable from noise when every interval excludes 0.",
            "",
            format_paired(results),
            "",
        ] + paired_sentences(results) + [""]
    parts += [
        "## Per-class AUC (each method's Table-1 variant; mean over trials)",
        "",
        format_class_auc(results),
        "",
        "## \"None\" detection (score = 1 - max seen probability) and calibration",
        "",
        _markdown(
            ["Method", "None AUROC", "None AUPR", "FPR @ 95% TPR", "ECE (15 bins)"],
            [[display_name(m), _fmt(e["none_auroc"]), _fmt(e["none_aupr"]),
              _fmt(e["none_fpr_at_95_tpr"]), _fmt(e["ece"])]
             for m, e in results["methods"].items()]),
        "",
        "## Every variant (the alpha grid)",
        "",
        _markdown(
            ["Method", *_columns(), *(["other"] if _has_other(results) else []),
             "members", "Weighted AUC", "Overall acc (%)", "None acc (%)", "None AUROC", "ECE"],
            [[display_name(e["method"]), *(_fmt_param(e, k) for k in _columns()),
              *([_fmt_param(e, "other")] if _has_other(results) else []),
              str(e["num_members"]), _fmt(e["weighted_auc"]),
              _fmt(e["overall_accuracy"], scale=100, digits=2),
              _fmt(e["none_accuracy"], scale=100, digits=2), _fmt(e["none_auroc"]),
              _fmt(e["ece"])]
             for e in results["variants"].values()]),
        "",
        "## Figures",
        "",
    ]
    parts += [f"![{f}]({f})" for f in results.get("figures", [])]
    return "\n".join(parts) + "\n"


