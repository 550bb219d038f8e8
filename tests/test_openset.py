"""embaug_jax.evaluate.openset: the OSCR area against a direct numpy computation of the curve,
under weights, and the threshold chosen on held-out rows against a brute-force search."""

import numpy as np
import pytest

from embaug_jax import evaluate


def _direct_oscr(probs, labels, seen):
    """The curve point by point: every distinct confidence as a threshold (accept >= it), then
    the trapezoidal area from (0, 0) to (1, closed-set accuracy)."""
    conf = np.where(seen, probs, -np.inf).max(1)
    pred = np.where(seen, probs, -np.inf).argmax(1)
    is_none = ~seen[labels]
    correct = ~is_none & (pred == labels)
    points = [(0.0, 0.0)]
    for t in np.sort(np.unique(conf))[::-1]:
        accepted = conf >= t
        points.append(((accepted & is_none).sum() / is_none.sum(),
                       (accepted & correct).sum() / (~is_none).sum()))
    fpr, ccr = np.array(points).T
    return np.trapezoid(ccr, fpr), fpr, ccr


@pytest.mark.parametrize("decimals", [None, 1, 2])
def test_oscr_area_and_curve_are_the_direct_computation(decimals, metric_problem):
    probs, labels, seen = metric_problem(50, n=250, decimals=decimals)
    want, want_fpr, want_ccr = _direct_oscr(probs, labels, seen)
    got = evaluate.oscr_area(probs, labels, seen, np.ones((1, 250), np.int32))
    assert abs(got[0] - want) < 1e-12
    fpr, ccr = evaluate.oscr_curve(probs, labels, seen)
    np.testing.assert_allclose(fpr, want_fpr, atol=1e-12)
    np.testing.assert_allclose(ccr, want_ccr, atol=1e-12)
    # It ends at the seen rows' closed-set accuracy, and is the threshold sweep's trade-off.
    pred = np.where(seen, probs, -1).argmax(1)
    assert abs(ccr[-1] - np.mean(pred[seen[labels]] == labels[seen[labels]])) < 1e-12


def test_oscr_area_under_weights_is_the_area_of_the_expanded_rows(metric_problem):
    probs, labels, seen = metric_problem(51, n=90, decimals=1)
    weights = np.random.default_rng(0).integers(0, 4, (4, 90)).astype(np.int32)
    got = evaluate.oscr_area(probs, labels, seen, weights)
    for b in range(4):
        rows = np.repeat(np.arange(90), weights[b])
        assert abs(got[b] - _direct_oscr(probs[rows], labels[rows], seen)[0]) < 1e-12


def test_oscr_area_ignores_temperature_and_needs_both_kinds_of_rows(metric_problem):
    probs, labels, seen = metric_problem(52, n=200)
    ones = np.ones((1, 200), np.int32)
    hotter = 1 / (1 + np.exp(-evaluate.sigmoid_logits(probs) / 3))
    np.testing.assert_allclose(evaluate.oscr_area(hotter, labels, seen, ones),
                               evaluate.oscr_area(probs, labels, seen, ones), atol=1e-12)
    assert np.isnan(evaluate.oscr_area(probs, labels, np.ones_like(seen), ones)).all()
    only_none = ones * ~seen[labels]
    assert np.isnan(evaluate.oscr_area(probs, labels, seen, only_none)).all()
    # Every seen row misclassified: the curve lies on CCR = 0.
    wrong = np.where(seen[labels][:, None], np.eye(probs.shape[1])[(labels + 1) % 3], probs)
    assert evaluate.oscr_area(wrong.astype(np.float32), labels, seen, ones)[0] == 0.0
    assert np.isnan(evaluate.oscr_curve(probs, labels, np.ones_like(seen))[1]).all()


def _objective(probs, labels, seen, t):
    acc = evaluate.accuracies(evaluate.threshold_counts(probs, labels, seen, t,
                                                        np.ones(len(labels), np.int64)))
    return acc["overall"] if np.isnan(acc["none"]) else (acc["overall"] + acc["none"]) / 2


@pytest.mark.parametrize("decimals", [None, 2])
def test_choose_threshold_finds_the_brute_force_best(decimals, metric_problem):
    probs, labels, seen = metric_problem(53, n=300, decimals=decimals)
    t = evaluate.choose_threshold(probs, labels, seen)
    conf = np.where(seen, probs, -1).max(1)
    # Every cut: each distinct confidence (reject it and below) and below them all.
    candidates = np.r_[np.unique(conf), 0.0]
    best = max(_objective(probs, labels, seen, c) for c in candidates)
    assert _objective(probs, labels, seen, t) == best
    assert 0 <= t <= 1


def test_choose_threshold_without_none_rows_maximises_overall_accuracy(metric_problem):
    probs, labels, seen = metric_problem(54, n=200, decimals=2)
    all_seen = np.ones_like(seen)
    t = evaluate.choose_threshold(probs, labels, all_seen)
    conf = probs.max(1)
    best = max(_objective(probs, labels, all_seen, c) for c in np.r_[np.unique(conf), 0.0])
    assert _objective(probs, labels, all_seen, t) == best
    # Every row correct once accepted: the best is to accept them all.
    perfect = np.eye(probs.shape[1], dtype=np.float32)[labels] * 0.9
    assert evaluate.choose_threshold(perfect, labels, all_seen) < 0.9


def test_choose_threshold_sits_between_adjacent_float32_confidences():
    low = np.float32(0.7)
    high = np.nextafter(low, np.float32(1))
    probs = np.array([[low, 0.0], [high, 0.0]], np.float32)
    labels = np.array([1, 0])  # class 1 unseen: reject the first row, accept the second
    seen = np.array([True, False])
    t = evaluate.choose_threshold(probs, labels, seen)
    assert t == low
    counts = evaluate.threshold_counts(probs, labels, seen, t, np.ones(2, np.int64))
    assert counts[0] == 2  # both correct
