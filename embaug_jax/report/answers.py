"""results.md's answers beyond Table 1: does a method beat the control once the control is
calibrated and thresholded as well as it can be (`headline`), "none" without a fixed threshold
(`format_open_set`), calibration before and after post-hoc scaling (`format_calibration`), the
"none" detectors (`format_detectors`), and the settings chosen at the edge of their grid
(`grid_notes`)."""

from __future__ import annotations

from embaug_jax import evaluate
from embaug_jax.registry import display_name
from embaug_jax.report.formatting import (METRIC_LABELS, difference_text, format_paired,
                                          holm_note, markdown_table, number, paired_rows_text,
                                          setting_text, stat_text)
from embaug_jax.workdir import FIGURES

DETECTOR_LABELS = {"msp": "1 - max probability", "max_logit": "max-logit", "energy": "energy",
                   "mahalanobis": "Mahalanobis", "knn": "k nearest neighbours"}
# The headline's three questions: (what, metric).
_QUESTIONS = (("seen classes", "seen_auc"), ("\"none\"", "oscr_auc"),
              ("calibration", "ece_ts"))


def _source(results: dict) -> tuple[dict, str]:
    """The section the tables beyond Table 1 read, and the sentence that says where it comes
    from: the held-out choice on the report rows when there is one, else the paper's."""
    if "selection" in results:
        sel = results["selection"]
        return sel["methods"], (
            f"Held-out procedure: each method's setting chosen on {sel['num_selection_rows']} "
            f"selection rows per trial, each member's post-hoc fits made there too, and every "
            f"figure measured on the other {sel['num_report_rows']} rows.")
    return results["methods"], (
        "The paper's procedure: each method's Table-1 variant on all validation rows. The "
        "post-hoc fits need rows of their own (config.report.selection_fraction > 0), so the "
        "figures that depend on them are n/a.")


def _interval_pair(d: dict, key: str) -> str:
    _, scale, unit, _ = METRIC_LABELS[key]
    digits = 2 if unit else 4

    def ends(low, high):
        if low is None or high is None:
            return None
        return (f"{number(low, digits, scale=scale, signed=True)}, "
                f"{number(high, digits, scale=scale, signed=True)}")

    parts = [f"{name} {text}" for name, text in (("t", ends(d["t_low"], d["t_high"])),
                                                 ("bootstrap", ends(d["boot_low"],
                                                                    d["boot_high"])))
             if text is not None]
    return f" [{'; '.join(parts)}]" if parts else ""


def _verdict(d: dict | None, key: str) -> str:
    if d is None or d["mean"] is None:
        return "not defined here (no \"none\" row, or no post-hoc fit)"
    if not d["distinguishable"]:
        word = "no difference beyond noise"
    else:
        word = "better" if METRIC_LABELS[key][3] * d["mean"] > 0 else "worse"
    return f"{word}, {difference_text(d, key)}{_interval_pair(d, key)}"


def headline(results: dict) -> list[str]:
    """The first section of results.md: per method, the three answers with their intervals."""
    out = ["## The answer: does a method beat the control at its best?", ""]
    paired = results.get("paired")
    if not paired:
        return out + ["No comparison: the sweep has no control, or no other method.", ""]
    if paired["rows"] != "report":
        return out + ["The answers need held-out rows to calibrate and threshold each model "
                      "on (config.report.selection_fraction > 0); the tables below hold the "
                      "paper's procedure only.", ""]
    sel = results["selection"]
    out += [
        f"The control calibrated and thresholded as well as it can be, and each method too: "
        f"settings chosen on {sel['num_selection_rows']} selection rows per trial, where each "
        f"member's outputs are also temperature-scaled and its confidence threshold chosen "
        f"(the best mean of overall and \"none\" accuracy); differences measured on the other "
        f"{sel['num_report_rows']} rows, paired over trials, with 95% intervals (paired t over "
        f"trials; bootstrap over rows). Seen classes: the seen-class AUC (no threshold, and "
        f"scaling does not move it). \"None\": the area under the OSCR curve, correct "
        f"acceptance of seen rows against false acceptance of \"none\" rows over every "
        f"threshold. Calibration: ECE after temperature scaling of both.",
        ""]
    holm = paired.get("families", {}).get("answers")
    for method, entry in paired["methods"].items():
        chosen = sel["methods"][method]
        answers = "; ".join(f"{what}: {_verdict(entry.get(key), key)}"
                            for what, key in _QUESTIONS)
        edges = "".join(f"; {e['setting']} at the {e['side']} end of its grid: extend it"
                        for e in chosen.get("grid_edge", []))
        line = (f"- **{display_name(method)}** ({setting_text(chosen, results)}{edges}): "
                f"{answers}.")
        tuned = [f"{label} {difference_text(entry[k], k)}{_interval_pair(entry[k], k)}"
                 for label, k in (("overall accuracy", "tuned_overall_accuracy"),
                                  ("\"none\" accuracy", "tuned_none_accuracy"))
                 if entry.get(k) and entry[k]["mean"] is not None]
        if tuned:
            line += f" At each model's own threshold: {', '.join(tuned)}."
        best = entry.get("best_detector_auroc")
        if best and best["mean"] is not None:
            line += (f" Best \"none\" detector on the selection rows: "
                     f"{_choices(chosen)}, against the control's "
                     f"{_choices(sel['methods']['control'])}; AUROC "
                     f"{difference_text(best, 'best_detector_auroc')}"
                     f"{_interval_pair(best, 'best_detector_auroc')}.")
        if holm and holm["comparisons"]:
            cells = [f"{what} {'yes' if p <= holm['level'] else 'no'} (p {p:.3f})"
                     for what, key in _QUESTIONS
                     if (p := holm["adjusted"][method].get(key)) is not None]
            line += (f" Beyond noise after Holm's correction over the "
                     f"{holm['comparisons']} answers: {', '.join(cells)}.")
        out.append(line)
    return out + [""]


def _choices(entry: dict) -> str:
    """Which detectors a variant's members chose: "Mahalanobis" or "energy (2), knn (1)"."""
    counts = entry.get("best_detector", {})
    if len(counts) == 1:
        return DETECTOR_LABELS[next(iter(counts))]
    return ", ".join(f"{DETECTOR_LABELS[d]} ({n})" for d, n in counts.items()) or "none"


def grid_notes(results: dict, section: str = "methods") -> list[str]:
    """One sentence per chosen setting that sits at the edge of its grid."""
    methods = results[section]["methods"] if section == "selection" else results[section]
    out = []
    for method, entry in methods.items():
        for edge in entry.get("grid_edge", []):
            grid = ", ".join(f"{v:g}" for v in edge["grid"])
            where = "below" if edge["side"] == "smallest" else "above"
            out.append(f"{display_name(method)}'s {edge['setting']} {edge['value']:g} is the "
                       f"{edge['side']} of its grid ({grid}): the best may lie {where} it, so "
                       f"extend the grid.")
    return out


def _tuned(entry: dict, key: str) -> str:
    stat = entry.get(key)
    return stat_text(stat, scale=100, digits=2) if stat else "n/a"


def format_open_set(results: dict) -> list[str]:
    """"None" over every threshold and at each model's own threshold: values, then the paired
    differences."""
    methods, source = _source(results)
    rows = [[display_name(m), stat_text(e["oscr_auc"]), stat_text(e["none_aupr"]),
             stat_text(e["seen_aupr"]), stat_text(e["none_fpr_at_95_tpr"]),
             # Six digits: an overconfident model's best threshold can sit within 1e-4 of 1.
             stat_text(e["tuned_threshold"], digits=6) if "tuned_threshold" in e else "n/a",
             _tuned(e, "tuned_overall_accuracy"), _tuned(e, "tuned_none_accuracy"),
             _tuned(e, "tuned_seen_accuracy")] for m, e in methods.items()]
    out = [
        "## \"None\" without a fixed threshold",
        "",
        f"{source} A lower-confidence model says \"none\" more often at a fixed threshold by "
        f"construction, so these compare the whole trade-off instead. OSCR area: correct "
        f"acceptance of seen rows against false acceptance of \"none\" rows over every "
        f"threshold (at most the seen rows' closed-set accuracy). AUPR with \"none\" as the "
        f"positive and as the negative class, and the FPR at 95% TPR, of the score 1 - max "
        f"probability. \"Own threshold\": each member's threshold chosen on its selection rows "
        f"(the best mean of overall and \"none\" accuracy there), applied to its report rows. "
        f"{FIGURES['oscr']} draws the curves of each method's Table-1 variant.",
        "",
        markdown_table(["Method", "OSCR area", "AUPR, \"none\" +", "AUPR, \"none\" -",
                        "FPR @ 95% TPR", "Own threshold", "Overall acc @ own (%)",
                        "None acc @ own (%)", "Seen acc @ own (%)"], rows),
        "",
    ]
    return out + _paired_block(results, "open_set")


def _paired_block(results: dict, family: str) -> list[str]:
    if not results.get("paired"):
        return []
    return [f"Differences from the control ({paired_rows_text(results)}):", "",
            format_paired(results, family), "", holm_note(results, family), ""]


def format_calibration(results: dict) -> list[str]:
    """Calibration of each method as it is, temperature-scaled and vector-scaled: values, then
    the paired differences."""
    methods, source = _source(results)
    rows = []
    for method, e in methods.items():
        for state, suffix in (("as trained", ""), ("temperature-scaled", "_ts"),
                              ("vector-scaled", "_vs")):
            label = state
            if suffix == "_ts" and "temperature" in e:
                label += f" (T {stat_text(e['temperature'], digits=2)})"
            rows.append([display_name(method) if not suffix else "", label,
                         *(stat_text(e[f"{k}{suffix}"]) for k in evaluate.CALIBRATION_SCORES)])
    head = results.get("detectors", {}).get("head", "sigmoid")
    softmax = (" The outputs are a softmax head's, so the logits scaled here are their "
               "log-odds, not the network's logits." if head == "softmax" else "")
    out = [
        "## Calibration before and after post-hoc scaling",
        "",
        f"{source} ECE is top-label: the confidence is the highest seen-class probability and "
        f"a prediction counts as correct only when that class is the row's, so every \"none\" "
        f"row counts as wrong, whatever its confidence; \"ECE, seen rows\" leaves the \"none\" "
        f"rows out. Equal-width and equal-mass bins ({evaluate.NUM_BINS} each). NLL and Brier "
        f"score take each seen class's sigmoid output as a binary forecast of that class "
        f"(\"none\" rows are negatives for every seen class), summed over the seen classes, "
        f"averaged over rows. Temperature scaling (one T per member) and vector scaling (a "
        f"scale and a bias per class) minimise that NLL on each member's selection rows, and "
        f"are scored on its report rows; temperature scaling moves no ranking (AUCs, OSCR, "
        f"detection stay as they are).{softmax}",
        "",
        markdown_table(["Method", "Outputs", "ECE", "ECE, equal-mass", "ECE, seen rows", "NLL",
                        "Brier"], rows),
        "",
    ]
    return out + _paired_block(results, "calibration")


def format_detectors(results: dict) -> list[str]:
    """Every "none" detector of every method: values, then the best detectors' paired
    differences."""
    methods, source = _source(results)
    info = results.get("detectors", {})
    rows = []
    for method, e in methods.items():
        for name in info.get("output", evaluate.OUTPUT_DETECTORS):
            keys = evaluate.detector_keys(name)
            chosen = e.get("best_detector", {}).get(name)
            rows.append([display_name(method), DETECTOR_LABELS[name],
                         *(stat_text(e[keys[k]]) for k in ("auroc", "aupr", "fpr_at_95_tpr")),
                         str(chosen) if chosen else "-"])
    first = next(iter(methods.values()), None)
    for name in info.get("embedding", []):
        keys = evaluate.detector_keys(name)
        chosen = {m: e.get("best_detector", {}).get(name) for m, e in methods.items()}
        picks = ", ".join(f"{display_name(m)} {c}" for m, c in chosen.items() if c)
        rows.append(["every method (embeddings)", DETECTOR_LABELS[name],
                     *(stat_text(first[keys[k]]) for k in ("auroc", "aupr", "fpr_at_95_tpr")),
                     picks or "-"])
    if info.get("embedding"):
        distances = (f"Mahalanobis: the smallest squared distance to a seen class's mean of the "
                     f"trial's training embeddings, under their pooled within-class covariance "
                     f"with Ledoit-Wolf shrinkage; k nearest neighbours: the distance of the "
                     f"L2-normalised embedding to its k-th nearest training embedding (k = "
                     f"{info.get('knn_k')}). Both read the embeddings, not a model, so they are "
                     f"the same for every method (one row each).")
    else:
        distances = ("The distance detectors (Mahalanobis, k nearest neighbours) need the "
                     "embeddings: `embaug train` passes its dataset to the report; from a "
                     "notebook, write_report(..., dataset=load_embeddings(config.data.path)).")
    out = [
        "## \"None\" detectors",
        "",
        f"{source} Scores that rise on \"none\" rows, scored with AUROC, AUPR (\"none\" "
        f"positive) and FPR at 95% TPR: 1 - max probability (the score of the tables above), "
        f"max-logit (minus the highest seen-class logit) and energy (minus the sum over seen "
        f"classes of softplus of the logit, the energy of sigmoid outputs); the logits are the "
        f"sigmoid's inverse of the stored probabilities, float32 saturation capping them at "
        f"+16.6. The sigmoid being monotone, max-logit orders rows exactly as 1 - max "
        f"probability does, so the two agree. {distances} The last column counts the members "
        f"whose selection rows chose the detector (highest AUROC there); the paired rows below "
        f"compare each method's chosen detector with the control's.",
        "",
        markdown_table(["Method", "Detector", "AUROC", "AUPR", "FPR @ 95% TPR",
                        "Chosen for (members)"], rows),
        "",
    ]
    return out + _paired_block(results, "detectors")
