"""embaug_jax.evaluate.roc against sklearn: the weighted AUC, its parts, the curves, "none"."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from embaug_jax import evaluate

CASES = ["ties", "continuous", "all_seen", "tiny"]


def _case(case):
    return dict(ties=dict(decimals=1), continuous=dict(), all_seen=dict(unseen=(), decimals=2),
                tiny=dict(n=12, c=4, unseen=(3,), missing=(), decimals=1))[case]


# ----- weighted AUC (Table 1) ----------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_weighted_auc_equals_sklearn(case, metric_problem):
    seed = dict(ties=0, continuous=1, all_seen=2, tiny=3)[case]
    probs, labels, seen = metric_problem(seed, **_case(case))
    truth, scores, support, names = evaluate.ovr_scores(probs, labels, seen)
    want = roc_auc_score(truth, scores, average="weighted")
    roc = evaluate.ovr_roc(probs, labels, seen)  # the float64 numpy route the report takes
    assert abs(roc.weighted_auc - want) < 1e-12, (roc.weighted_auc, want)
    assert abs(evaluate.auc_decomposition(probs, labels, seen).weighted_auc - want) < 1e-12
    np.testing.assert_allclose(roc.class_auc, [roc_auc_score(truth[:, k], scores[:, k])
                                               for k in range(truth.shape[1])], atol=1e-12)
    # The columns: seen classes present in validation, then "none" iff any unseen example.
    present_seen = [k for k in range(probs.shape[1]) if seen[k] and np.any(labels == k)]
    has_none = bool(np.any(~seen[labels]))
    assert names == [str(k) for k in present_seen] + (["none"] if has_none else [])
    np.testing.assert_array_equal(support, truth.sum(0))
    if has_none:
        np.testing.assert_allclose(scores[:, -1], 1 - probs[:, seen].max(1), rtol=1e-6)


def test_weighted_auc_over_trials_with_different_seen_classes(metric_problem):
    problems = [metric_problem(s, n=200, unseen=u, decimals=1)
                for s, u in [(0, (1,)), (1, (2, 6)), (2, ())]]
    for probs, labels, seen in problems:
        want = roc_auc_score(*evaluate.ovr_scores(probs, labels, seen)[:2], average="weighted")
        assert abs(evaluate.ovr_roc(probs, labels, seen).weighted_auc - want) < 1e-12


def test_weighted_auc_perfect_and_undefined():
    labels = np.array([0, 1, 2, 2, 3])
    seen = np.array([True, True, True, False])
    probs = np.eye(4, dtype=np.float32)[labels] * seen  # unseen-class rows: all zeros
    assert evaluate.ovr_roc(probs, labels, seen).weighted_auc == 1.0
    # A single class in validation: no negatives, AUC undefined (sklearn raises): NaN.
    single = evaluate.ovr_roc(probs[:1].repeat(3, 0), labels[:1].repeat(3), seen)
    assert np.isnan(single.weighted_auc) and np.isnan(single.tpr).all()


@pytest.mark.parametrize("decimals", [None, 1])
def test_weighted_mann_whitney_equals_sklearn_with_sample_weights(decimals, metric_problem):
    """One AUC for every weighting: the column AUCs under row counts [B, N] are sklearn's
    roc_auc_score with those counts as sample weights, and weights 1 give ovr_roc's."""
    probs, labels, seen = metric_problem(8, n=150, decimals=decimals)
    truth, scores, _, _ = evaluate.ovr_scores(probs, labels, seen)
    weights = np.random.default_rng(1).integers(0, 3, (4, 150)).astype(np.int32)
    weights[0] = 1
    auc, support = evaluate.column_aucs(truth, scores, weights)
    assert auc.shape == support.shape == (4, truth.shape[1])
    np.testing.assert_array_equal(auc[0], evaluate.ovr_roc(probs, labels, seen).class_auc)
    for b in range(4):
        np.testing.assert_array_equal(support[b], weights[b] @ truth)
        for k in range(truth.shape[1]):
            want = roc_auc_score(truth[:, k], scores[:, k], sample_weight=weights[b])
            assert abs(auc[b, k] - want) < 1e-12, (b, k)


def test_binary_roc_points_are_sklearns(metric_problem):
    probs, labels, seen = metric_problem(9, n=200, decimals=2)
    is_none = ~seen[labels]
    score = evaluate.none_score(probs, seen)
    fpr, tpr, thresholds, num_pos, num_neg = evaluate.binary_roc(is_none, score)
    want_fpr, want_tpr, want_thresholds = roc_curve(is_none, score, drop_intermediate=False)
    np.testing.assert_array_equal(fpr, want_fpr)
    np.testing.assert_array_equal(tpr, want_tpr)
    np.testing.assert_array_equal(thresholds[1:], want_thresholds[1:])
    assert (num_pos, num_neg) == (is_none.sum(), (~is_none).sum())


def test_mean_roc_curve_matches_sklearn_interpolation_and_auc(metric_problem):
    probs, labels, seen = metric_problem(7, n=300)  # continuous scores: no grid point hits a vertex
    grid = np.sort(np.random.default_rng(0).random(60))
    tpr = evaluate.ovr_roc(probs, labels, seen, fpr_grid=grid).tpr
    truth, scores, support, _ = evaluate.ovr_scores(probs, labels, seen)
    want = np.zeros_like(grid)
    for k in range(truth.shape[1]):
        fpr_k, tpr_k, _ = roc_curve(truth[:, k], scores[:, k])
        want += support[k] * np.interp(grid, fpr_k, tpr_k)
    np.testing.assert_allclose(tpr, want / support.sum(), atol=1e-12)
    # Area under the mean curve = weighted AUC (integration is linear), up to the grid.
    fine = evaluate.ovr_roc(probs, labels, seen, fpr_grid=np.linspace(0, 1, 4001))
    tpr_fine = fine.tpr
    area = np.trapezoid(tpr_fine, fine.fpr)
    assert abs(area - roc_auc_score(truth, scores, average="weighted")) < 2e-4
    assert np.all(np.diff(tpr_fine) >= -1e-12) and tpr_fine[-1] == 1.0


# ----- the weighted AUC's parts --------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_auc_decomposition_parts_match_sklearn_and_add_up(case, metric_problem):
    probs, labels, seen = metric_problem(20 + len(case), **_case(case))
    got = evaluate.auc_decomposition(probs, labels, seen)
    truth, scores, _, names = evaluate.ovr_scores(probs, labels, seen)
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


def test_auc_parts_of_several_weightings_are_each_weightings_own(metric_problem):
    """auc_parts over [B, K] is, row by row, the parts of that one weighting; a column a
    weighting gives no positive is left out of its problem."""
    probs, labels, seen = metric_problem(10, n=120, c=6, unseen=(4,), missing=(), decimals=1)
    truth, scores, _, _ = evaluate.ovr_scores(probs, labels, seen)
    weights = np.random.default_rng(2).integers(0, 3, (5, 120)).astype(np.int32)
    weights[1, truth[:, 0]] = 0  # column 0 has no positive in weighting 1
    weights[2, truth[:, -1]] = 0  # nor the "none" column in weighting 2
    auc, support = evaluate.column_aucs(truth, scores, weights)
    parts = evaluate.auc_parts(auc, support, has_none=True)
    for b in range(5):
        one = evaluate.auc_parts(auc[b:b + 1], support[b:b + 1], has_none=True)
        for name in evaluate.AucParts._fields:
            np.testing.assert_array_equal(getattr(parts, name)[b], getattr(one, name)[0])
    keep = support[1] > 0
    want = np.sum(support[1, keep] * auc[1, keep]) / support[1].sum()
    assert abs(parts.weighted_auc[1] - want) < 1e-15
    assert np.isnan(parts.none_auc[2]) and parts.none_weight[2] == 0 and parts.none_part[2] == 0


# ----- "none" detection ---------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [None, 1])
def test_none_detection_matches_sklearn(decimals, metric_problem):
    probs, labels, seen = metric_problem(11, n=300, decimals=decimals)
    got = evaluate.none_detection(probs, labels, seen)
    is_none = ~seen[labels]
    score = 1 - probs[:, seen].max(1)
    fpr, tpr, _ = roc_curve(is_none, score, drop_intermediate=False)
    np.testing.assert_allclose(got["auroc"], roc_auc_score(is_none, score), atol=1e-12)
    np.testing.assert_allclose(got["aupr"], average_precision_score(is_none, score), atol=1e-12)
    np.testing.assert_allclose(got["fpr_at_95_tpr"], fpr[np.argmax(tpr >= 0.95)], atol=1e-12)
    assert (got["num_none"], got["num_seen"]) == (is_none.sum(), (~is_none).sum())
    # The "none" column's AUC of the one-vs-rest problem: one AUC, computed one way.
    assert got["auroc"] == evaluate.auc_decomposition(probs, labels, seen).none_auc
    # Without "none" examples the task is undefined.
    assert np.isnan(evaluate.none_detection(probs, labels, np.ones_like(seen))["auroc"])


# ----- average precision and FPR at a TPR, under weights --------------------------------------


@pytest.mark.parametrize("decimals", [None, 1])
def test_average_precision_and_fpr_at_tpr_are_sklearns_with_sample_weights(decimals,
                                                                          metric_problem):
    probs, labels, seen = metric_problem(12, n=160, decimals=decimals)
    is_none = ~seen[labels]
    score = evaluate.none_score(probs, seen)
    weights = np.random.default_rng(4).integers(0, 3, (3, 160)).astype(np.int32)
    groups = evaluate.tied_groups(is_none, score, weights)
    ap = evaluate.average_precision(groups)
    ap_seen = evaluate.average_precision(evaluate.swap_classes(groups))
    fpr95 = evaluate.fpr_at_tpr(groups, 0.95)
    for b in range(3):
        w = weights[b]
        assert abs(ap[b] - average_precision_score(is_none, score, sample_weight=w)) < 1e-12
        assert abs(ap_seen[b] - average_precision_score(~is_none, -score, sample_weight=w)) \
            < 1e-12
        fpr, tpr, _ = roc_curve(is_none, score, sample_weight=w, drop_intermediate=False)
        assert abs(fpr95[b] - fpr[np.argmax(tpr >= 0.95)]) < 1e-12


def test_average_precision_and_fpr_at_tpr_are_nan_without_both_classes():
    score = np.array([0.1, 0.4, 0.4, 0.9])
    groups = evaluate.tied_groups(np.array([True, False, True, False]), score,
                                  np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]]))
    assert np.isfinite(evaluate.average_precision(groups)[0])
    assert np.isnan(evaluate.average_precision(groups)[1:]).all()
    assert np.isnan(evaluate.fpr_at_tpr(groups)[1:]).all()
