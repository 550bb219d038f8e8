"""embaug_jax.metrics against sklearn, the paper's rule worked by hand, and direct numpy oracles."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from embaug_jax import metrics

# Compiling dominates these small problems.
pytestmark = pytest.mark.usefixtures("fast_compile")


def _problem(seed, n=400, c=9, *, decimals=None, unseen=(2, 5), missing=(7,)):
    """Random sigmoid outputs with unseen classes and a seen class absent from validation."""
    rng = np.random.default_rng(seed)
    present = np.setdiff1d(np.arange(c), missing)
    labels = rng.choice(present, n)
    probs = rng.random((n, c))
    probs[np.arange(n), labels] += rng.random(n)  # some signal, so AUCs are not all 0.5
    probs = np.clip(probs / 1.5, 0, 1).astype(np.float32)
    if decimals is not None:  # coarse values: many ties within and across classes
        probs = np.round(probs, decimals).astype(np.float32)
    seen = np.ones(c, bool)
    seen[list(unseen)] = False
    return probs, labels, seen


def _paper_rule(probs, labels, seen, threshold):
    """Sec. 3.5 written out example by example, in plain Python."""
    correct, none_correct, seen_correct = [], [], []
    for p, y in zip(probs.tolist(), labels.tolist()):
        candidates = [(p[k], k) for k in range(len(p)) if seen[k]]
        conf, pred = max(candidates, key=lambda t: (t[0], -t[1])) if candidates else (-1, -1)
        predicted_none = not conf > threshold
        ok = predicted_none if not seen[y] else (not predicted_none and pred == y)
        correct.append(ok)
        (seen_correct if seen[y] else none_correct).append(ok)
    mean = lambda xs: np.mean(xs) if xs else np.nan  # noqa: E731
    return mean(correct), mean(none_correct), mean(seen_correct)


# ----- threshold accuracy ------------------------------------------------------------------


def test_threshold_accuracy_hand_checked():
    seen = np.array([True, True, True, False])  # class 3 never seen in training
    probs = np.array([
        [0.90, 0.10, 0.10, 0.99],  # y=0: unseen column ignored, 0.9 > 0.6 -> correct
        [0.70, 0.65, 0.00, 0.00],  # y=1: predicts 0 -> wrong
        [0.10, 0.10, 0.60, 0.00],  # y=2: exactly at the threshold -> "none" -> wrong
        [0.20, 0.30, 0.10, 0.95],  # y=3 unseen: best seen 0.3 -> "none" -> correct
        [0.61, 0.00, 0.00, 0.00],  # y=3 unseen: predicts 0 -> wrong
        [0.50, 0.10, 0.10, 0.10],  # y=0: below threshold -> "none" -> wrong
    ], np.float32)
    labels = np.array([0, 1, 2, 3, 3, 0])
    got = metrics.threshold_accuracy(probs, labels, seen, 0.6)
    np.testing.assert_allclose([got["overall"], got["none"], got["seen"]], [2 / 6, 1 / 2, 1 / 4],
                               rtol=1e-6)
    # Lowering the threshold below 0.6 lets row 2 through; row 5 (0.5) stays "none".
    got = metrics.threshold_accuracy(probs, labels, seen, 0.55)
    np.testing.assert_allclose([got["overall"], got["none"], got["seen"]], [3 / 6, 1 / 2, 2 / 4],
                               rtol=1e-6)


def test_threshold_accuracy_nan_rules():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    labels = np.array([0, 1])
    got = metrics.threshold_accuracy(probs, labels, np.array([True, True]))
    assert np.isnan(got["none"]) and got["overall"] == 1.0 and got["seen"] == 1.0
    # Nothing seen in training: every prediction is "none", which is right for every example.
    got = metrics.threshold_accuracy(probs, labels, np.array([False, False]))
    assert got["overall"] == 1.0 and got["none"] == 1.0 and np.isnan(got["seen"])


@pytest.mark.parametrize("seed", [0, 1])
def test_threshold_sweep_matches_paper_rule(seed):
    probs, labels, seen = _problem(seed, n=150, decimals=2)
    sweep = metrics.threshold_sweep(probs, labels, seen)
    np.testing.assert_allclose(sweep["thresholds"], np.arange(0.05, 0.951, 0.05), atol=1e-6)
    for k, t in enumerate(np.asarray(sweep["thresholds"])):
        want = _paper_rule(probs, labels, seen, np.float32(t))
        got = [sweep["overall"][k], sweep["none"][k], sweep["seen"][k]]
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"threshold {t}")


def test_threshold_accuracy_vmaps_over_members_and_thresholds():
    probs, labels, seen = _problem(3, n=64)
    members = np.stack([probs, probs ** 2, np.sqrt(probs)])
    thresholds = jnp.array([0.3, 0.6])

    @jax.jit
    @chex.assert_max_traces(n=1)
    def grid(p, t):
        inner = jax.vmap(metrics.threshold_accuracy, in_axes=(None, None, None, 0))
        return jax.vmap(inner, in_axes=(0, None, None, None))(p, labels, seen, t)

    out = grid(members, thresholds)
    grid(members * 0.5, thresholds)  # new values, same shapes: no retrace
    for m in range(3):
        for j, t in enumerate([0.3, 0.6]):
            want = metrics.threshold_accuracy(members[m], labels, seen, t)
            for key in ("overall", "none", "seen"):
                np.testing.assert_allclose(out[key][m, j], want[key], rtol=1e-6)


# ----- weighted AUC (Table 1) ----------------------------------------------------------------


@pytest.mark.parametrize("case", ["ties", "continuous", "all_seen", "tiny"])
def test_weighted_auc_equals_sklearn(case):
    kw = dict(ties=dict(decimals=1), continuous=dict(), all_seen=dict(unseen=(), decimals=2),
              tiny=dict(n=12, c=4, unseen=(3,), missing=(), decimals=1))[case]
    seed = dict(ties=0, continuous=1, all_seen=2, tiny=3)[case]
    probs, labels, seen = _problem(seed, **kw)
    truth, scores, support, names = metrics.ovr_scores(probs, labels, seen)
    want = roc_auc_score(truth, scores, average="weighted")
    roc = metrics.ovr_roc(probs, labels, seen)  # the float64 numpy route the report takes
    assert abs(roc.weighted_auc - want) < 1e-12, (roc.weighted_auc, want)
    assert abs(metrics.auc_decomposition(probs, labels, seen).weighted_auc - want) < 1e-12
    np.testing.assert_allclose(roc.class_auc, [roc_auc_score(truth[:, k], scores[:, k])
                                               for k in range(truth.shape[1])], atol=1e-12)
    # The columns: seen classes present in validation, then "none" iff any unseen example.
    present_seen = [k for k in range(probs.shape[1]) if seen[k] and np.any(labels == k)]
    has_none = bool(np.any(~seen[labels]))
    assert names == [str(k) for k in present_seen] + (["none"] if has_none else [])
    np.testing.assert_array_equal(support, truth.sum(0))
    if has_none:
        np.testing.assert_allclose(scores[:, -1], 1 - probs[:, seen].max(1), rtol=1e-6)


def test_weighted_auc_over_trials_with_different_seen_classes():
    problems = [_problem(s, n=200, unseen=u, decimals=1)
                for s, u in [(0, (1,)), (1, (2, 6)), (2, ())]]
    for probs, labels, seen in problems:
        want = roc_auc_score(*metrics.ovr_scores(probs, labels, seen)[:2], average="weighted")
        assert abs(metrics.ovr_roc(probs, labels, seen).weighted_auc - want) < 1e-12


def test_weighted_auc_perfect_and_undefined():
    labels = np.array([0, 1, 2, 2, 3])
    seen = np.array([True, True, True, False])
    probs = np.eye(4, dtype=np.float32)[labels] * seen  # unseen-class rows: all zeros
    assert metrics.ovr_roc(probs, labels, seen).weighted_auc == 1.0
    # A single class in validation: no negatives, AUC undefined (sklearn raises): NaN.
    single = metrics.ovr_roc(probs[:1].repeat(3, 0), labels[:1].repeat(3), seen)
    assert np.isnan(single.weighted_auc)


def test_mean_roc_curve_matches_sklearn_interpolation_and_auc():
    probs, labels, seen = _problem(7, n=300)  # continuous scores: no grid point hits a vertex
    grid = np.sort(np.random.default_rng(0).random(60))
    tpr = metrics.ovr_roc(probs, labels, seen, fpr_grid=grid).tpr
    truth, scores, support, _ = metrics.ovr_scores(probs, labels, seen)
    want = np.zeros_like(grid)
    for k in range(truth.shape[1]):
        fpr_k, tpr_k, _ = roc_curve(truth[:, k], scores[:, k])
        want += support[k] * np.interp(grid, fpr_k, tpr_k)
    np.testing.assert_allclose(tpr, want / support.sum(), atol=1e-12)
    # Area under the mean curve = weighted AUC (integration is linear), up to the grid.
    fine = metrics.ovr_roc(probs, labels, seen, fpr_grid=np.linspace(0, 1, 4001))
    tpr_fine = fine.tpr
    area = np.trapezoid(tpr_fine, fine.fpr)
    assert abs(area - roc_auc_score(truth, scores, average="weighted")) < 2e-4
    assert np.all(np.diff(tpr_fine) >= -1e-12) and tpr_fine[-1] == 1.0


# ----- the weighted AUC's parts --------------------------------------------------------------


@pytest.mark.parametrize("case", ["ties", "continuous", "all_seen", "tiny"])
def test_auc_decomposition_parts_match_sklearn_and_add_up(case):
    kw = dict(ties=dict(decimals=1), continuous=dict(), all_seen=dict(unseen=(), decimals=2),
              tiny=dict(n=12, c=4, unseen=(3,), missing=(), decimals=1))[case]
    probs, labels, seen = _problem(20 + len(case), **kw)
    got = metrics.auc_decomposition(probs, labels, seen)
    truth, scores, _, names = metrics.ovr_scores(probs, labels, seen)
    has_none = names[-1] == "none"
    seen_cols = slice(0, -1) if has_none else slice(None)
    assert abs(got.weighted_auc - roc_auc_score(truth, scores, average="weighted")) < 1e-12
    assert abs(got.seen_auc - roc_auc_score(truth[:, seen_cols], scores[:, seen_cols],
                                            average="weighted")) < 1e-12
    is_none = ~seen[labels]
    assert got.none_weight == is_none.mean()
    if has_none:
        assert abs(got.none_auc - roc_auc_score(is_none, 1 - probs[:, seen].max(1))) < 1e-12
    else:
        assert np.isnan(got.none_auc) and got.none_part == 0.0
    # The identity the report relies on, to float64 rounding.
    assert abs(got.none_part + got.seen_part - got.weighted_auc) < 1e-15
    w = got.none_weight
    assert abs(w * np.nan_to_num(got.none_auc) + (1 - w) * got.seen_auc - got.weighted_auc) < 1e-15


def test_evaluate_member_carries_the_parts_and_per_class_aucs():
    probs, labels, seen = _problem(30, n=300, decimals=2)
    got = metrics.evaluate_member(probs, labels, seen)
    parts = metrics.auc_decomposition(probs, labels, seen)
    for key in ("weighted_auc", "seen_auc", "none_weight", "seen_part", "none_part"):
        assert got[key] == getattr(parts, key), key
    assert got["none_auroc"] == parts.none_auc
    # Per class id: sklearn's AUC for seen classes present in validation, NaN for the rest.
    for k in range(probs.shape[1]):
        if seen[k] and np.any(labels == k):
            assert abs(got["class_auc"][k] - roc_auc_score(labels == k, probs[:, k])) < 1e-12
        else:
            assert np.isnan(got["class_auc"][k])


# ----- bootstrap resamples ------------------------------------------------------------------


def test_bootstrap_counts_are_resamples_with_replacement():
    counts = metrics.bootstrap_counts(jax.random.key(0), 50, 400)
    assert counts.shape == (400, 50) and counts.dtype == np.int32
    np.testing.assert_array_equal(counts.sum(1), 50)
    # Each row is drawn Binomial(50, 1/50) times per resample: mean 1, variance 49/50.
    assert abs(counts.mean() - 1) < 1e-12 and abs(counts.var() - 0.98) < 0.05
    again = metrics.bootstrap_counts(jax.random.key(0), 50, 400)
    np.testing.assert_array_equal(counts, again)


@pytest.mark.parametrize("decimals", [None, 1])
def test_resampled_metrics_equal_evaluation_of_the_expanded_resample(decimals):
    probs, labels, seen = _problem(40, n=150, c=6, unseen=(4,), missing=(), decimals=decimals)
    counts = metrics.bootstrap_counts(jax.random.key(1), len(labels), 6)
    got = metrics.resampled_metrics(probs, labels, seen, counts, threshold=0.45, num_bins=7)
    assert set(got) == set(metrics.RESAMPLED_METRICS)
    for r in range(len(counts)):
        rows = np.repeat(np.arange(len(labels)), counts[r])
        want = metrics.evaluate_member(probs[rows], labels[rows], seen, threshold=0.45,
                                       num_bins=7)
        for key in metrics.RESAMPLED_METRICS:
            # evaluate_member's accuracies are float32 (the jnp metric); the rest float64.
            rtol = 1e-6 if key.endswith("accuracy") else 1e-10
            np.testing.assert_allclose(got[key][r], want[key], rtol=rtol, atol=1e-12,
                                       err_msg=key)
        # And the AUC against sklearn's sample weights directly.
        truth, scores, _, _ = metrics.ovr_scores(probs, labels, seen)
        keep = truth[rows].any(0)
        want_auc = roc_auc_score(truth[:, keep], scores[:, keep], average="weighted",
                                 sample_weight=counts[r])
        assert abs(got["weighted_auc"][r] - want_auc) < 1e-12


def test_resampled_metrics_undefined_parts_are_nan():
    probs, labels, seen = _problem(41, n=40, c=4, unseen=(3,), missing=())
    counts = np.zeros((2, 40), np.int32)
    counts[0, np.flatnonzero(seen[labels])[:5]] = 8  # no "none" row drawn
    counts[1] = 1
    got = metrics.resampled_metrics(probs, labels, seen, counts)
    assert np.isnan(got["none_auroc"][0]) and np.isnan(got["none_accuracy"][0])
    assert got["none_weight"][0] == 0 and got["none_part"][0] == 0
    assert np.isfinite(got["weighted_auc"]).all()
    with pytest.raises(ValueError, match="counts must be"):
        metrics.resampled_metrics(probs, labels, seen, counts[:, :-1])
    with pytest.raises(ValueError, match="non-negative integers"):
        metrics.resampled_metrics(probs, labels, seen, counts.astype(np.float32))


# ----- "none" detection and calibration -----------------------------------------------------


@pytest.mark.parametrize("decimals", [None, 1])
def test_none_detection_matches_sklearn(decimals):
    probs, labels, seen = _problem(11, n=300, decimals=decimals)
    got = metrics.none_detection(probs, labels, seen)
    is_none = ~seen[labels]
    score = 1 - probs[:, seen].max(1)
    fpr, tpr, _ = roc_curve(is_none, score, drop_intermediate=False)
    np.testing.assert_allclose(got["auroc"], roc_auc_score(is_none, score), atol=1e-12)
    np.testing.assert_allclose(got["aupr"], average_precision_score(is_none, score), atol=1e-12)
    np.testing.assert_allclose(got["fpr_at_95_tpr"], fpr[np.argmax(tpr >= 0.95)], atol=1e-12)
    assert (got["num_none"], got["num_seen"]) == (is_none.sum(), (~is_none).sum())
    # Without "none" examples the task is undefined.
    assert np.isnan(metrics.none_detection(probs, labels, np.ones_like(seen))["auroc"])


def test_calibration_hand_checked():
    # Two bins, (0, 0.5] and (0.5, 1]; a confidence of exactly 0.5 falls in the first.
    probs = np.array([[0.9, 0.0, 0.0], [0.8, 0.1, 0.0], [0.3, 0.1, 0.0], [0.0, 0.5, 0.0],
                      [0.7, 0.2, 0.9]], np.float32)
    labels = np.array([0, 1, 0, 0, 2])  # class 2 unseen: row 4 counts as a wrong prediction
    seen = np.array([True, True, False])
    got = metrics.calibration(probs, labels, seen, num_bins=2)
    np.testing.assert_array_equal(got["count"], [2, 3])
    np.testing.assert_allclose(got["confidence"], [0.4, 0.8], rtol=1e-6)
    np.testing.assert_allclose(got["accuracy"], [0.5, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(got["ece"], 2 / 5 * 0.1 + 3 / 5 * (0.8 - 1 / 3), rtol=1e-6)


def test_calibration_matches_direct_numpy_oracle():
    probs, labels, seen = _problem(5, n=500, decimals=2)
    got = metrics.calibration(probs, labels, seen, num_bins=10)
    pred = np.where(seen, probs, -1).argmax(1)
    conf = probs[np.arange(len(labels)), pred].astype(np.float64)
    correct = pred == labels
    ece = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        in_bin = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        assert got["count"][b] == in_bin.sum()
        if in_bin.any():
            np.testing.assert_allclose(got["accuracy"][b], correct[in_bin].mean(), rtol=1e-12)
            np.testing.assert_allclose(got["confidence"][b], conf[in_bin].mean(), rtol=1e-12)
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
        else:
            assert np.isnan(got["accuracy"][b])
    np.testing.assert_allclose(got["ece"], ece, rtol=1e-10)


# ----- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [metrics.threshold_accuracy, metrics.auc_decomposition,
                                metrics.ovr_scores, metrics.none_detection, metrics.calibration])
def test_bad_inputs_raise_clear_errors(fn):
    probs, labels, seen = _problem(0, n=20, c=5, unseen=(), missing=())
    with pytest.raises(ValueError, match="labels must be"):
        fn(probs, labels[:-1], seen)
    with pytest.raises(ValueError, match="seen_mask must be"):
        fn(probs, labels, seen[:-1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        fn(probs, np.where(np.arange(20) == 3, 5, labels), seen)
    with pytest.raises(ValueError, match="integer"):
        fn(probs, labels.astype(np.float32), seen)
    bad = probs.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN/Inf in rows \[4\]"):
        fn(bad, labels, seen)
