"""The Table-1 analogue and results.md, as markdown."""

from typing import Sequence

from embaug_jax.report.results import DISPLAY_NAMES


def _fmt(stat: dict, *, scale=1.0, digits=4, dev="max_dev") -> str:
    if stat["mean"] is None:
        return "n/a"
    if stat["n"] < 2:
        return f"{stat['mean'] * scale:.{digits}f}"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat[dev] * scale:.{digits}f}"


def _fmt_param(entry: dict, key: str) -> str:
    method = entry["method"]
    used = (method != "control") if key == "alpha" else method.startswith("soft_")
    return f"{entry[key]:g}" if used else "-"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def format_table(results: dict) -> str:
    """The Table-1 analogue (markdown): best variant per method, mean ± max deviation."""
    t = results["threshold"]
    header = ["Method", "alpha", "softness", "Weighted AUC", f"Overall acc @{t:g} (%)",
              f"None acc @{t:g} (%)", "Paper weighted AUC"]
    rows = []
    for method, entry in results["methods"].items():
        paper = results.get("paper_table1", {}).get(method)
        rows.append([
            DISPLAY_NAMES.get(method, method), _fmt_param(entry, "alpha"),
            _fmt_param(entry, "softness"), _fmt(entry["weighted_auc"]),
            _fmt(entry["overall_accuracy"], scale=100, digits=2),
            _fmt(entry["none_accuracy"], scale=100, digits=2),
            f"{paper['mean']:.4f} ± {paper['max_dev']:.4f}" if paper else "-",
        ])
    return _markdown(header, rows)


def _results_markdown(results: dict, title: str | None) -> str:
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
        format_table(results),
        "",
        "## \"None\" detection (score = 1 - max seen probability) and calibration",
        "",
        _markdown(
            ["Method", "None AUROC", "None AUPR", "FPR @ 95% TPR", "ECE (15 bins)"],
            [[DISPLAY_NAMES.get(m, m), _fmt(e["none_auroc"]), _fmt(e["none_aupr"]),
              _fmt(e["none_fpr_at_95_tpr"]), _fmt(e["ece"])]
             for m, e in results["methods"].items()]),
        "",
        "## Every variant (the alpha grid)",
        "",
        _markdown(
            ["Method", "alpha", "softness", "members", "Weighted AUC", "Overall acc (%)",
             "None acc (%)", "None AUROC", "ECE"],
            [[DISPLAY_NAMES.get(e["method"], e["method"]), _fmt_param(e, "alpha"),
              _fmt_param(e, "softness"), str(e["num_members"]), _fmt(e["weighted_auc"]),
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


