"""embaug_jax.report.statistics against scipy and direct recomputation, and what write_report
makes of it: the held-out alpha choice, the paired section, the decomposition, predictions.npz."""

import json
import math

import jax
import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score

from embaug_jax import evaluate, report
from embaug_jax.report import statistics
from embaug_jax.train.result import SweepResult

pytestmark = pytest.mark.usefixtures("fast_compile")

C, TRIALS, NV = 5, 3, 120


def _outputs(seed=0, *, all_seen=False, trials=TRIALS, seeds=(0,)):
    """Control, E-Mixup at two alphas (0.4 better) and E-Stitchup; class 4 unseen."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, (trials, NV))
    seen = np.ones((trials, C), bool)
    if not all_seen:
        seen[:, C - 1] = False
    plan = [("control", 0.0, 0.9), ("e_mixup", 0.2, 0.7), ("e_mixup", 0.4, 1.2),
            ("e_stitchup", 0.3, 1.0)]
    members, probs = [], []
    for method, alpha, signal in plan:
        for t in range(trials):
            for s in seeds:
                members.append(dict(method=method, alpha=alpha, softness=0.0, trial=t, seed=s))
                logits = signal * 3 * np.eye(C)[labels[t]] * seen[t] + rng.normal(0, 1, (NV, C))
                probs.append(1 / (1 + np.exp(-(logits - 1.5))))
    m = len(members)
    return SweepResult(
        members=members, eval_epochs=np.array([2, 4]),
        history={k: rng.random((m, 2))
                 for k in ("overall_accuracy", "none_accuracy", "train_loss")},
        val_probs=np.stack(probs).astype(np.float32), val_labels=labels, seen_mask=seen,
        class_names=[f"c{k}" for k in range(C)], threshold=0.6,
        val_idx=np.stack([rng.permutation(1000)[:NV] for _ in range(trials)]),
        train_idx=rng.integers(0, 1000, (trials, 40)))


# ----- the statistics themselves -------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 7])
def test_paired_t_interval_equals_scipy(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(0.8, 0.05, n), rng.normal(0.79, 0.05, n)
    mean, low, high, count = statistics.paired_t_interval(a - b)
    want = scipy_stats.ttest_rel(a, b).confidence_interval(0.95)
    assert count == n and abs(mean - np.mean(a - b)) < 1e-15
    assert abs(low - want.low) < 1e-12 and abs(high - want.high) < 1e-12
    # NaN differences (no "none" example in a trial) are left out, not propagated.
    mean2, low2, high2, count2 = statistics.paired_t_interval(np.r_[a - b, np.nan])
    assert (mean2, low2, high2, count2) == (mean, low, high, n)


def test_paired_t_interval_needs_two_differences():
    mean, low, high, n = statistics.paired_t_interval([0.01])
    assert mean == 0.01 and math.isnan(low) and math.isnan(high) and n == 1
    assert statistics.paired_t_interval([])[3] == 0


def test_bootstrap_interval_is_the_percentile_interval_of_the_mean_over_trials():
    rng = np.random.default_rng(0)
    resampled = rng.normal(0.01, 0.02, (3, 500))
    low, high = statistics.bootstrap_interval(resampled)
    means = resampled.mean(0)
    np.testing.assert_allclose([low, high], np.percentile(means, [2.5, 97.5]), rtol=1e-12)
    assert low < 0.01 < high


@pytest.mark.parametrize("n", [2, 3, 7])
def test_p_values_are_scipys_and_match_the_intervals(n):
    rng = np.random.default_rng(n)
    diffs = rng.normal(0.01, 0.02, n)
    assert abs(statistics.paired_t_p_value(diffs)
               - scipy_stats.ttest_1samp(diffs, 0.0).pvalue) < 1e-12
    # p < 0.05 exactly when the 95% t interval excludes 0.
    _, low, high, _ = statistics.paired_t_interval(diffs)
    assert (statistics.paired_t_p_value(diffs) < 0.05) == (not low <= 0 <= high)
    assert statistics.paired_t_p_value([0.01, 0.01]) == 0.0
    assert statistics.paired_t_p_value([0.0, 0.0]) == 1.0
    assert math.isnan(statistics.paired_t_p_value([0.01]))
    resampled = rng.normal(0.01, 0.02, (n, 300))
    se = resampled.mean(0).std(ddof=1)
    assert abs(statistics.bootstrap_p_value(resampled, 0.004)
               - 2 * scipy_stats.norm.sf(0.004 / se)) < 1e-12
    assert statistics.bootstrap_p_value(np.zeros((n, 5)), 0.0) == 1.0
    assert math.isnan(statistics.bootstrap_p_value(np.full((n, 5), np.nan), 0.1))


def test_holm_is_the_step_down_rule_written_out():
    p = [0.01, 0.04, np.nan, 0.03, 0.005, 0.5]
    got = statistics.holm(p)
    # By hand: sorted 0.005, 0.01, 0.03, 0.04, 0.5 (m = 5) -> 0.025, 0.04, 0.09, 0.09, 0.5.
    np.testing.assert_allclose(got, [0.04, 0.09, np.nan, 0.09, 0.025, 0.5], rtol=1e-12)
    assert np.isnan(statistics.holm([np.nan])).all() and statistics.holm([]).size == 0
    assert statistics.holm([0.6, 0.7])[1] == 1.0  # capped at 1


def test_selection_rows_split_each_trial_in_two():
    rows = statistics.selection_rows(jax.random.key(3), 4, 101, 0.3)
    assert rows.shape == (4, 101) and (rows.sum(1) == 30).all()
    assert len({tuple(r) for r in rows}) == 4  # each trial draws its own split
    np.testing.assert_array_equal(rows, statistics.selection_rows(jax.random.key(3), 4, 101, 0.3))
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\)"):
        statistics.selection_rows(jax.random.key(3), 4, 101, 1.0)
    with pytest.raises(ValueError, match="leaves one part empty"):
        statistics.selection_rows(jax.random.key(3), 4, 3, 0.1)


def test_paired_bootstrap_scores_both_members_on_the_same_resamples():
    outputs = _outputs(1, seeds=(0, 1))
    members = outputs.members
    idx = lambda method, alpha: [i for i, m in enumerate(members)  # noqa: E731
                                 if m["method"] == method and m["alpha"] == alpha]
    pairs = statistics.pair_members(members, idx("e_mixup", 0.4), idx("control", 0.0))
    assert len(pairs) == TRIALS * 2
    assert all((members[m]["trial"], members[m]["seed"]) == (members[c]["trial"],
                                                             members[c]["seed"])
               for m, c in pairs)
    rows = statistics.selection_rows(jax.random.key(0), TRIALS, NV, 0.5)
    key = jax.random.key(7)
    got = statistics.paired_bootstrap(key, pairs, members, outputs.val_probs,
                                      outputs.val_labels, outputs.seen_mask, ~rows,
                                      num_resamples=4, threshold=0.6)
    assert got["weighted_auc"].shape == (TRIALS, 4)
    # Direct: expand each resample, evaluate both members, difference, mean over the seeds.
    for t in range(TRIALS):
        keep = ~rows[t]
        counts = evaluate.bootstrap_counts(jax.random.fold_in(key, t), keep.sum(), 4)
        for r in range(4):
            expand = np.repeat(np.arange(keep.sum()), counts[r])
            diffs = []
            for m, c in pairs:
                if members[m]["trial"] != t:
                    continue
                auc = [evaluate.ovr_roc(outputs.val_probs[i][keep][expand],
                                       outputs.val_labels[t][keep][expand],
                                       outputs.seen_mask[t]).weighted_auc for i in (m, c)]
                diffs.append(auc[0] - auc[1])
            assert abs(got["weighted_auc"][t, r] - np.mean(diffs)) < 1e-12


def test_compare_with_control_marks_what_noise_explains():
    members = [dict(method=m, trial=t, seed=0) for m in ("control", "a", "b") for t in range(4)]
    chosen = {"control": [0, 1, 2, 3], "a": [4, 5, 6, 7], "b": [8, 9, 10, 11]}
    base = [0.90, 0.92, 0.91, 0.93]
    noise = (0.01, -0.01, 0.02, -0.02)
    auc = base + [x + 0.02 for x in base] + [x + d for x, d in zip(base, noise)]
    values = [{k: auc[i] for k in statistics.HEADLINE_METRICS} for i in range(12)]
    got = statistics.compare_with_control(members, chosen, values, None)
    assert set(got) == {"a", "b"}
    a, b = got["a"]["weighted_auc"], got["b"]["weighted_auc"]
    assert abs(a["mean"] - 0.02) < 1e-12 and a["distinguishable"] and a["t_excludes_zero"]
    assert abs(b["mean"]) < 1e-12 and not b["distinguishable"] and not b["t_excludes_zero"]
    assert a["boot_low"] is None and a["boot_excludes_zero"] is None
    # A bootstrap interval that contains 0 vetoes a clear t interval.
    resampled = {"a": {k: np.full((4, 10), 0.02) + np.linspace(-0.05, 0.05, 10)
                       for k in evaluate.RESAMPLED_METRICS}}
    vetoed = statistics.compare_with_control(members, {"control": chosen["control"],
                                                       "a": chosen["a"]}, values, resampled)
    assert not vetoed["a"]["weighted_auc"]["distinguishable"]
    assert vetoed["a"]["weighted_auc"]["boot_excludes_zero"] is False


# ----- what write_report makes of it ----------------------------------------------------------


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    outputs = _outputs(0)
    workdir = tmp_path_factory.mktemp("stats_report")
    results = report.write_report(workdir, outputs, selection_fraction=0.5,
                                  bootstrap_resamples=50, seed=3)
    return workdir, outputs, results


def test_alpha_is_chosen_on_selection_rows_and_reported_on_the_rest(written):
    _, outputs, results = written
    rows = statistics.selection_rows(jax.random.fold_in(jax.random.key(3), 0), TRIALS, NV, 0.5)
    sel = results["selection"]
    assert (sel["num_selection_rows"], sel["num_report_rows"]) == (60, 60)

    def auc_on(i, keep):
        t = outputs.members[i]["trial"]
        truth, scores, _, _ = evaluate.ovr_scores(outputs.val_probs[i][keep[t]],
                                                 outputs.val_labels[t][keep[t]],
                                                 outputs.seen_mask[t])
        return roc_auc_score(truth, scores, average="weighted")

    by_alpha = {a: [i for i, m in enumerate(outputs.members)
                    if m["method"] == "e_mixup" and m["alpha"] == a] for a in (0.2, 0.4)}
    on_selection = {a: np.mean([auc_on(i, rows) for i in idx]) for a, idx in by_alpha.items()}
    best = max(on_selection, key=on_selection.get)
    entry = sel["methods"]["e_mixup"]
    assert entry["alpha"] == best
    assert abs(entry["selection_weighted_auc"]["mean"] - on_selection[best]) < 1e-12
    assert abs(entry["weighted_auc"]["mean"]
               - np.mean([auc_on(i, ~rows) for i in by_alpha[best]])) < 1e-12


def test_paired_section_on_report_rows(written):
    _, outputs, results = written
    paired = results["paired"]
    assert paired["rows"] == "report" and paired["bootstrap_resamples"] == 50
    rows = statistics.selection_rows(jax.random.fold_in(jax.random.key(3), 0), TRIALS, NV, 0.5)
    alpha = results["selection"]["methods"]["e_mixup"]["alpha"]
    diffs = []
    for t in range(TRIALS):
        keep = ~rows[t]
        i = next(i for i, m in enumerate(outputs.members) if m["method"] == "e_mixup"
                 and m["alpha"] == alpha and m["trial"] == t)
        c = next(i for i, m in enumerate(outputs.members) if m["method"] == "control"
                 and m["trial"] == t)
        acc = [evaluate.threshold_accuracy(outputs.val_probs[j][keep], outputs.val_labels[t][keep],
                                          outputs.seen_mask[t], 0.6)["overall"] for j in (i, c)]
        diffs.append(float(acc[0]) - float(acc[1]))
    d = paired["methods"]["e_mixup"]["overall_accuracy"]
    np.testing.assert_allclose(d["differences"], diffs, atol=1e-6)
    want = scipy_stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    np.testing.assert_allclose([d["t_low"], d["t_high"]], [want.low, want.high], atol=1e-6)
    assert d["boot_low"] <= d["mean"] <= d["boot_high"]
    md = (written[0] / "results.md").read_text()
    assert "E-Mixup against the control (3 paired trials)" in md
    assert "| E-Mixup | overall accuracy (pp) |" in md


def test_decomposition_and_class_auc_in_results(written):
    _, outputs, results = written
    for method, entry in results["methods"].items():
        for t in range(TRIALS):
            w, seen_part = entry["none_weight"]["values"][t], entry["seen_part"]["values"][t]
            none_part, auc = entry["none_part"]["values"][t], entry["weighted_auc"]["values"][t]
            assert abs(seen_part + none_part - auc) < 1e-15
            assert abs(w * entry["none_auroc"]["values"][t]
                       + (1 - w) * entry["seen_auc"]["values"][t] - auc) < 1e-12
            assert w == np.mean(~outputs.seen_mask[t][outputs.val_labels[t]])
    control = results["methods"]["control"]
    assert set(control["class_auc"]) == {"c0", "c1", "c2", "c3"}  # c4 never seen
    i = next(i for i, m in enumerate(outputs.members) if m["method"] == "control"
             and m["trial"] == 1)
    labels = outputs.val_labels[1]
    want = roc_auc_score(labels == 2, outputs.val_probs[i][:, 2])
    assert abs(control["class_auc"]["c2"]["values"][1] - want) < 1e-12
    md = (written[0] / "results.md").read_text()
    assert "| c2 |" in md and '| "none" |' in md


def test_predictions_reload_to_the_same_report(written, tmp_path):
    workdir, outputs, results = written
    loaded = report.load_predictions(workdir)
    np.testing.assert_array_equal(loaded.val_probs, outputs.val_probs)
    np.testing.assert_array_equal(loaded.val_idx, outputs.val_idx)
    np.testing.assert_array_equal(loaded.train_idx, outputs.train_idx)
    assert loaded.members == outputs.members and loaded.class_names == outputs.class_names
    again = report.write_report(tmp_path, loaded, selection_fraction=0.5, bootstrap_resamples=50,
                                seed=3)
    assert json.dumps(again, sort_keys=True) == json.dumps(results, sort_keys=True)
    with pytest.raises(FileNotFoundError, match="predictions.npz is missing"):
        report.load_predictions(tmp_path / "nothing-here")


def test_without_unseen_classes_the_report_says_so(tmp_path):
    outputs = _outputs(2, all_seen=True, trials=2)
    results = report.write_report(tmp_path, outputs, selection_fraction=0,
                                  bootstrap_resamples=0, seed=0)
    assert "selection" not in results and results["paired"]["rows"] == "all"
    assert results["paired"]["methods"]["e_mixup"]["weighted_auc"]["boot_low"] is None
    md = (tmp_path / "results.md").read_text()
    assert "metrics (\"none\" accuracy, \"none\" AUC" in md and "are absent" in md
    assert "--config.data.holdout_classes=K" in report.format_summary(results)
    assert "--config.data.holdout_classes=a,b" in report.format_summary(results)
    entry = results["methods"]["control"]
    assert entry["none_weight"]["mean"] == 0 and entry["none_part"]["mean"] == 0
    assert entry["seen_auc"]["values"] == entry["weighted_auc"]["values"]


@pytest.mark.parametrize("check,good,bad", [
    (statistics.check_selection_fraction, (0, 0.5, 0.99), (1.0, -0.1, float("nan"))),
    (statistics.check_bootstrap_resamples, (0, 200, 50.0), (-1, 2.5)),
])
def test_the_report_settings_are_checked_once(check, good, bad):
    """The checks validate_config and write_report both make."""
    for value in good:
        assert check(value) == value
    for value in bad:
        with pytest.raises(ValueError, match=f"config.report.x={value}"):
            check(value, "config.report.x")
