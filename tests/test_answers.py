"""embaug_jax.report.answers and .formatting: the report's answers beyond Table 1 on a sweep
with its dataset, checked against direct recomputation, and how results.md prints them."""

import json
import re

import jax
import numpy as np
import pytest

from embaug_jax import evaluate, report
from embaug_jax.report import formatting, results as results_module, statistics
from embaug_jax.workdir import Workdir

pytestmark = pytest.mark.usefixtures("fast_compile")
SETTINGS = dict(selection_fraction=0.5, bootstrap_resamples=40, seed=5)


@pytest.fixture(scope="module")
def answered(tmp_path_factory, sweep_with_dataset):
    result, dataset = sweep_with_dataset(3, methods=("control", "e_mixup", "e_stitchup"))
    workdir = tmp_path_factory.mktemp("answers")
    results = report.write_report(workdir, result, dataset=dataset, **SETTINGS)
    return workdir, result, dataset, results


def test_held_out_metrics_are_the_fits_applied_to_the_report_rows(answered):
    workdir, result, dataset, results = answered
    selection = statistics.selection_rows(jax.random.fold_in(jax.random.key(5), 0),
                                          *result.val_labels.shape, 0.5)
    scores = report.fits.embedding_scores(result, dataset)
    control = [i for i, m in enumerate(result.members) if m["method"] == "control"]
    tuned, temperatures, aurocs = [], [], []
    for i in control:
        t = result.members[i]["trial"]
        sel, rep = selection[t], ~selection[t]
        probs, labels, seen = result.val_probs[i], result.val_labels[t], result.seen_mask[t]
        fit = evaluate.fit_posthoc(probs[sel], labels[sel], seen,
                                   embedding_scores={k: v[sel] for k, v in scores[t].items()})
        counts = evaluate.threshold_counts(probs[rep], labels[rep], seen, fit.threshold,
                                           np.ones(rep.sum(), np.int64))
        tuned.append(evaluate.accuracies(counts)["none"])
        temperatures.append(fit.temperature)
        is_none = ~seen[labels[rep]]
        aurocs.append(evaluate.detection_metrics(
            is_none, scores[t]["knn"][rep], np.ones((1, rep.sum()), np.int32))["auroc"][0])
    entry = results["selection"]["methods"]["control"]
    np.testing.assert_allclose(entry["tuned_none_accuracy"]["values"], tuned, rtol=1e-12)
    np.testing.assert_allclose(entry["temperature"]["values"], temperatures, rtol=1e-12)
    np.testing.assert_allclose(entry["knn_auroc"]["values"], aurocs, rtol=1e-12)
    assert sum(entry["best_detector"].values()) == len(control)
    # The embedding detectors read no model: every method has the same figures.
    assert (results["selection"]["methods"]["e_mixup"]["mahalanobis_auroc"]
            == entry["mahalanobis_auroc"])
    assert results["detectors"] == dict(head="sigmoid", output=list(evaluate.OUTPUT_DETECTORS),
                                        embedding=list(evaluate.EMBEDDING_DETECTORS),
                                        knn_k=evaluate.KNN_K)
    # Strict JSON: every number that is not defined is null, never NaN.
    json.loads(Workdir(workdir).results_json.read_text(),
               parse_constant=lambda token: pytest.fail(f"results.json holds {token}"))


def test_every_paired_metric_and_its_holm_family(answered):
    _, _, _, results = answered
    paired = results["paired"]
    entry = paired["methods"]["e_mixup"]
    for key in ("oscr_auc", "tuned_none_accuracy", "ece_ts", "nll_vs", "best_detector_auroc"):
        assert entry[key]["mean"] is not None and entry[key]["p"] is not None, key
        assert entry[key]["p"] == max(entry[key]["p_t"], entry[key]["p_boot"])
    families = paired["families"]
    assert set(families) == set(statistics.FAMILIES)
    for name, family in families.items():
        cells = [(m, k) for m in paired["methods"] for k in statistics.FAMILIES[name]
                 if paired["methods"][m][k]["p"] is not None]
        assert family["comparisons"] == len(cells)
        want = statistics.holm([paired["methods"][m][k]["p"] for m, k in cells])
        got = [family["adjusted"][m][k] for m, k in cells]
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_results_md_answers_first_and_names_its_procedures(answered):
    workdir, _, _, results = answered
    md = Workdir(workdir).results_md.read_text()
    assert md.index("## The answer") < md.index("## Table 1")
    answer = md[md.index("## The answer"):md.index("## Table 1")]
    for method in ("E-Mixup", "E-Stitchup"):
        line = next(row for row in answer.splitlines() if row.startswith(f"- **{method}**"))
        for part in ("seen classes: ", "\"none\": ", "calibration: ", "own threshold",
                     "Holm's correction over the 6 answers", "Best \"none\" detector"):
            assert part in line, (method, part)
        assert re.search(r"\[t [-+]?\d\.\d{4}, [-+]?\d\.\d{4}; bootstrap ", line)
    for heading in ("## \"None\" without a fixed threshold",
                    "## Calibration before and after post-hoc scaling", "## \"None\" detectors"):
        section = md[md.index(heading):].split("\n## ")[0]
        assert "Held-out procedure" in section and "Holm (" in section
        assert re.search(r"This table makes \d+ comparisons", section)
    assert "every \"none\" row counts as wrong" in md and "ECE, seen rows" in md
    assert "every method (embeddings) | Mahalanobis" in md
    assert "-0.0000" not in md and "-0.00 " not in md
    assert "(oscr.png)" in md
    summary = report.format_summary(results)
    assert "- **E-Mixup**" in summary


def test_without_held_out_rows_or_dataset_the_report_says_what_is_missing(tmp_path,
                                                                           sweep_with_dataset):
    result, _ = sweep_with_dataset(4)
    results = report.write_report(tmp_path, result, selection_fraction=0,
                                  bootstrap_resamples=0, seed=0)
    md = Workdir(tmp_path).results_md.read_text()
    assert "The answers need held-out rows" in md
    assert "The paper's procedure: each method's Table-1 variant on all validation rows" in md
    assert "The distance detectors (Mahalanobis, k nearest neighbours) need the embeddings" in md
    assert results["detectors"]["embedding"] == []
    control = results["methods"]["control"]
    assert control["oscr_auc"]["n"] == 3 and control["tuned_none_accuracy"]["n"] == 0
    assert control["knn_auroc"]["mean"] is None


def test_a_softmax_head_leaves_out_what_its_outputs_cannot_give(tmp_path, sweep_with_dataset):
    result, dataset = sweep_with_dataset(5)
    results = report.write_report(tmp_path, result, dataset=dataset, head="softmax", **SETTINGS)
    assert results["detectors"]["output"] == ["msp"]
    assert results["selection"]["methods"]["control"]["max_logit_auroc"]["mean"] is None
    md = Workdir(tmp_path).results_md.read_text()
    assert "| max-logit |" not in md and "log-odds, not the network's logits" in md
    with pytest.raises(ValueError, match="head='tanh'"):
        report.write_report(tmp_path, result, head="tanh", **SETTINGS)


def test_a_chosen_setting_at_the_edge_of_its_grid_is_flagged():
    members = [dict(method="e_mixup", alpha=a, softness=0.0, trial=0, seed=0)
               for a in (0.1, 0.2, 0.4)]
    members += [dict(method="soft_e_mixup", alpha=0.2, softness=s, trial=0, seed=0)
                for s in (0.0, 0.05)]
    variants = results_module.group_variants(members)
    edge = results_module.grid_edge(variants, "e_mixup/alpha=0.1/softness=0")
    assert edge == [dict(setting="alpha", value=0.1, side="smallest", grid=[0.1, 0.2, 0.4])]
    assert results_module.grid_edge(variants, "e_mixup/alpha=0.2/softness=0") == []
    # Softness 0 is where its range ends: nothing below it to try. Alpha has one value.
    assert results_module.grid_edge(variants, "soft_e_mixup/alpha=0.2/softness=0") == []
    top = results_module.grid_edge(variants, "soft_e_mixup/alpha=0.2/softness=0.05")
    assert [e["side"] for e in top] == ["largest"]


def test_a_swept_setting_every_method_reads_is_flagged_at_the_edge_of_its_grid():
    # A weight decay x dropout grid: the control reads neither as its own, yet its choice at
    # the largest dropout tried is as much an edge as an augmentation's alpha.
    members = [dict(method="control", weight_decay=w, dropout=d, trial=0, seed=0)
               for w in (1e-5, 1e-4, 1e-3) for d in (0.1, 0.5)]
    variants = results_module.group_variants(members)
    assert results_module.grid_edge(variants, "control/alpha=0/softness=0/weight_decay=0.0001"
                                    "/dropout=0.5") == [
        dict(setting="dropout", value=0.5, side="largest", grid=[0.1, 0.5])]
    low = results_module.grid_edge(variants, "control/alpha=0/softness=0/weight_decay=1e-05"
                                   "/dropout=0.1")
    assert [(e["setting"], e["side"]) for e in low] == [("weight_decay", "smallest"),
                                                        ("dropout", "smallest")]


@pytest.mark.parametrize("value,kw,want", [
    (-0.00004, dict(signed=True), "0.0000"), (-0.00004, {}, "0.0000"),
    (0.00006, dict(signed=True), "+0.0001"), (-0.0123, dict(signed=True), "-0.0123"),
    (-0.004, dict(digits=2, scale=100.0, signed=True), "-0.40"),
    (-0.00004, dict(digits=2, scale=100.0, signed=True), "0.00"), (None, {}, "n/a")])
def test_numbers_that_round_to_zero_print_without_a_sign(value, kw, want):
    assert formatting.number(value, **kw) == want
    assert formatting.interval_text(-1e-6, 0.2, False, 1.0, 4) == "[0.0000, +0.2000] (contains 0)"


def test_the_headline_and_the_tables_flag_a_setting_at_the_edge_of_its_grid(answered):
    import copy

    from embaug_jax.report import answers

    results = copy.deepcopy(answered[3])
    edge = [dict(setting="alpha", value=0.2, side="largest", grid=[0.1, 0.2])]
    results["selection"]["methods"]["e_mixup"]["grid_edge"] = edge
    line = next(row for row in answers.headline(results) if row.startswith("- **E-Mixup**"))
    assert "alpha at the largest end of its grid: extend it" in line
    assert answers.grid_notes(results, "selection") == [
        "E-Mixup's alpha 0.2 is the largest of its grid (0.1, 0.2): the best may lie above it, "
        "so extend the grid."]
