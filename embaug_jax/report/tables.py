"""The Table-1 analogue and results.md, as markdown."""

from embaug_jax.registry import display_name
from embaug_jax.report.answers import (format_calibration, format_detectors, format_open_set,
                                       grid_notes, headline)
from embaug_jax.report.formatting import (METRIC_LABELS, column_settings, difference_text,
                                          format_paired, holm_note, markdown_table, metric_label,
                                          paired_rows_text, reads, setting_text, stat_text)
from embaug_jax.report.statistics import HEADLINE_METRICS
from embaug_jax.workdir import FIGURES


def _fmt_param(entry: dict, key: str, results: dict) -> str:
    """A variant's value of setting `key`, or "-" when its method does not read it; for key
    "other", the settings without a column of their own (e.g. "smoothing 0.1")."""
    used = reads(entry["method"], results)
    if key == "other":
        return ", ".join(f"{k} {entry.get(k, 0):g}" for k in used
                         if k not in column_settings(results)) or "-"
    return f"{entry[key]:g}" if key in used else "-"


def _has_other(results: dict) -> bool:
    return any(set(reads(e["method"], results)) - set(column_settings(results))
               for e in results["variants"].values())


PAPER_COLUMN = "Paper's weighted AUC (its own data: Fashion Product Images)"


def _no_none(results: dict) -> bool:
    return not any(results.get("num_none_examples", [1]))


def no_none_note(results: dict) -> str:
    """What a reader needs to know when no trial has a "none" example."""
    return ("No validation example belongs to a class held out of training in any trial, so the "
            "\"none\" metrics (\"none\" accuracy, \"none\" AUC, the \"none\" part of the "
            "weighted AUC) are absent and the weighted AUC is the seen-class AUC alone. Hold "
            "classes out with --config.data.holdout_classes=K (K random classes per trial) or "
            "--config.data.holdout_classes=a,b (these classes, by name, in every trial).")


def format_table(results: dict) -> str:
    """The Table-1 analogue (markdown): best variant per method, mean ± max deviation."""
    t = results["threshold"]
    other = _has_other(results)
    header = ["Method", *column_settings(results), *(["other"] if other else []),
              "Weighted AUC",
              f"Overall acc @{t:g} (%)", f"None acc @{t:g} (%)", PAPER_COLUMN]
    rows = []
    for method, entry in results["methods"].items():
        paper = results.get("paper_table1", {}).get(method)
        rows.append([
            display_name(method),
            *(_fmt_param(entry, k, results) for k in column_settings(results)),
            *([_fmt_param(entry, "other", results)] if other else []),
            stat_text(entry["weighted_auc"]),
            stat_text(entry["overall_accuracy"], scale=100, digits=2),
            stat_text(entry["none_accuracy"], scale=100, digits=2),
            f"{paper['mean']:.4f} ± {paper['max_dev']:.4f}" if paper else "-",
        ])
    return markdown_table(header, rows)


def format_decomposition(results: dict, section: str = "methods") -> str:
    """Weighted AUC = seen part + "none" part, with the AUCs and the weight behind each part."""
    header = ["Method", "Weighted AUC", "= seen part", "+ \"none\" part", "Seen-class AUC",
              "\"None\" AUC", "\"None\" weight"]
    absent = "absent" if _no_none(results) else "n/a"
    rows = [[display_name(m), stat_text(e["weighted_auc"]), stat_text(e["seen_part"]),
             stat_text(e["none_part"]), stat_text(e["seen_auc"]),
             stat_text(e["none_auroc"]) if e["none_auroc"]["mean"] is not None else absent,
             stat_text(e["none_weight"])] for m, e in results[section].items()]
    return markdown_table(header, rows)


def paired_sentences(results: dict) -> list[str]:
    """One plain sentence per method: which differences from the control stand out of noise."""
    paired = results.get("paired")
    if not paired:
        return []
    out = []
    for method, entry in paired["methods"].items():
        name = display_name(method)
        clear, unclear = [], []
        for key in HEADLINE_METRICS:
            d = entry[key]
            if d["mean"] is None:
                continue
            text = f"{METRIC_LABELS[key][0]} {difference_text(d, key)}"
            (clear if d["distinguishable"] else unclear).append(text)
        n = max((entry[k]["n"] for k in HEADLINE_METRICS), default=0)
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
        rows.append([display_name(method), setting_text(paper, results),
                     stat_text(paper["weighted_auc"]), setting_text(entry, results),
                     stat_text(entry["weighted_auc"]),
                     stat_text(entry["overall_accuracy"], scale=100, digits=2),
                     stat_text(entry["none_accuracy"], scale=100, digits=2)])
    return markdown_table(header, rows)


def format_axes(results: dict) -> str:
    """results["axes"] as markdown: per swept setting and metric, a row per method and a
    column per value."""
    axes = results["axes"]
    parts = []
    for axis, line in axes["settings"].items():
        for metric in axes["metrics"]:
            label, scale, digits = metric_label(metric)
            rows = []
            for method, e in line["methods"].items():
                cells = []
                for value, stat in zip(line["values"], e[metric]):
                    text = "-" if stat is None else stat_text(stat, scale=scale, digits=digits)
                    cells.append(f"**{text}**" if stat is not None and value == e["chosen"]
                                 else text)
                fixed = ", ".join(f"{k} {v:g}" for k, v in e["fixed"].items()
                                  if k in reads(method, results)) or "-"
                rows.append([display_name(method), fixed, *cells])
            parts += [f"{label[:1].upper()}{label[1:]} against {axis}:", "",
                      markdown_table(["Method", "other settings",
                                      *(f"{axis} {v:g}" for v in line["values"])], rows), ""]
    return "\n".join(parts[:-1])


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
    return markdown_table(header, rows)


def _lines(sentences: list[str]) -> list[str]:
    """Sentences as a paragraph of their own (nothing when there are none)."""
    return [" ".join(sentences), ""] if sentences else []


def format_summary(results: dict) -> str:
    """What `embaug train` prints: Table 1, its decomposition and the paired differences."""
    parts = [format_table(results), "", "Weighted AUC by part (each method's Table-1 variant):",
             "", format_decomposition(results)]
    if results.get("paired"):
        where = paired_rows_text(results)
        parts += ["", f"Differences from the control, trial by trial ({where}):", "",
                  format_paired(results), ""] + paired_sentences(results)
    if _no_none(results):
        parts += ["", no_none_note(results)]
    if results.get("paired", {}).get("rows") == "report":
        parts += ["", *headline(results)[2:]]
    return "\n".join(parts).rstrip("\n")


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
        *headline(results),
        "## Table 1: best alpha per method (by mean weighted AUC)",
        "",
        "The paper's procedure: alpha chosen by the weighted AUC on the same validation rows "
        "that are reported. The last column is the paper's figure on its own data set, for "
        "orientation only: it is not a number this data set can reproduce.",
        "",
        format_table(results),
        "",
        *_lines(grid_notes(results)),
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
        f"({FIGURES['auc_decomposition']}). Each method's Table-1 variant on all validation "
        "rows (the paper's procedure).",
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
            *_lines(grid_notes(results, "selection")),
        ]
    if results.get("paired"):
        parts += [
            "## Differences from the control",
            "",
            f"Members that differ only in method share split, initialisation and shuffles, so "
            f"each method is compared with the control trial by trial "
            f"({paired_rows_text(results)}). Intervals are 95%: paired t over trials (does "
            f"the difference survive another split and initialisation?) and a bootstrap over "
            f"validation rows within each trial (does it survive another draw of validation "
            f"rows?). A difference is distinguishable from noise when every interval excludes 0.",
            "",
            format_paired(results),
            "",
            holm_note(results, "table1"),
            "",
        ] + paired_sentences(results) + [""]
    parts += [*format_open_set(results), *format_calibration(results),
              *format_detectors(results)]
    parts += [
        "## Per-class AUC (each method's Table-1 variant; mean over trials)",
        "",
        format_class_auc(results),
        "",
        "## \"None\" detection (score = 1 - max seen probability) and calibration",
        "",
        "Each method's Table-1 variant on all validation rows (the paper's procedure).",
        "",
        markdown_table(
            ["Method", "None AUROC", "None AUPR", "FPR @ 95% TPR", "ECE (15 bins)"],
            [[display_name(m), stat_text(e["none_auroc"]), stat_text(e["none_aupr"]),
              stat_text(e["none_fpr_at_95_tpr"]), stat_text(e["ece"])]
             for m, e in results["methods"].items()]),
        "",
    ]
    if results.get("axes", {}).get("settings"):
        choice = ("chosen on the selection rows" if results["axes"]["choice"] == "held-out"
                  else "chosen by the paper's procedure")
        parts += [
            "## Along each swept setting",
            "",
            f"Each method's metrics at each value of a setting it ran several values of, its "
            f"other settings held at its chosen variant ({choice}; **bold**: the chosen value). "
            f"Mean ± max deviation over trials on all validation rows, as in the table below "
            f"({FIGURES['settings']}).",
            "",
            format_axes(results),
            "",
        ]
    parts += [
        "## Every variant (the alpha grid)",
        "",
        "Every variant on all validation rows: no choice is made here.",
        "",
        markdown_table(
            ["Method", *column_settings(results), *(["other"] if _has_other(results) else []),
             "members", "Weighted AUC", "Overall acc (%)", "None acc (%)", "None AUROC", "ECE"],
            [[display_name(e["method"]),
              *(_fmt_param(e, k, results) for k in column_settings(results)),
              *([_fmt_param(e, "other", results)] if _has_other(results) else []),
              str(e["num_members"]), stat_text(e["weighted_auc"]),
              stat_text(e["overall_accuracy"], scale=100, digits=2),
              stat_text(e["none_accuracy"], scale=100, digits=2), stat_text(e["none_auroc"]),
              stat_text(e["ece"])]
             for e in results["variants"].values()]),
        "",
    ]
    parts += ["## Figures", ""]
    parts += [f"![{f}]({f})" for f in results.get("figures", [])]
    return "\n".join(parts) + "\n"


