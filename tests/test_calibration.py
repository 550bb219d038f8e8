"""embaug_jax.evaluate.calibration worked by hand, against a direct numpy oracle, under weights."""

import numpy as np
import pytest

from embaug_jax import evaluate


def test_calibration_hand_checked():
    # Two bins, (0, 0.5] and (0.5, 1]; a confidence of exactly 0.5 falls in the first.
    probs = np.array([[0.9, 0.0, 0.0], [0.8, 0.1, 0.0], [0.3, 0.1, 0.0], [0.0, 0.5, 0.0],
                      [0.7, 0.2, 0.9]], np.float32)
    labels = np.array([0, 1, 0, 0, 2])  # class 2 unseen: row 4 counts as a wrong prediction
    seen = np.array([True, True, False])
    got = evaluate.calibration(probs, labels, seen, num_bins=2)
    np.testing.assert_array_equal(got["count"], [2, 3])
    np.testing.assert_allclose(got["confidence"], [0.4, 0.8], rtol=1e-6)
    np.testing.assert_allclose(got["accuracy"], [0.5, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(got["ece"], 2 / 5 * 0.1 + 3 / 5 * (0.8 - 1 / 3), rtol=1e-6)


def test_calibration_matches_direct_numpy_oracle(metric_problem):
    probs, labels, seen = metric_problem(5, n=500, decimals=2)
    got = evaluate.calibration(probs, labels, seen, num_bins=10)
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


def test_weighted_binning_is_the_binning_of_the_expanded_rows(metric_problem):
    """Each weighting's bins are those of its rows repeated by their weights, bit for bit in
    the counts, and the first of several weightings is that weighting alone."""
    probs, labels, seen = metric_problem(12, n=80, decimals=2)
    weights = np.random.default_rng(3).integers(0, 4, (3, 80)).astype(np.int32)
    bins = evaluate.calibration_bins(probs, labels, seen, weights, 7)
    ece = evaluate.expected_calibration_error(bins)
    assert bins.count.shape == (3, 7) and ece.shape == (3,)
    for b in range(3):
        rows = np.repeat(np.arange(80), weights[b])
        want = evaluate.calibration(probs[rows], labels[rows], seen, num_bins=7)
        np.testing.assert_array_equal(bins.count[b], want["count"])
        np.testing.assert_allclose(ece[b], want["ece"], rtol=1e-12)
        alone = evaluate.calibration_bins(probs, labels, seen, weights[b:b + 1], 7)
        np.testing.assert_array_equal(alone.confidence[0], bins.confidence[b])
        np.testing.assert_array_equal(evaluate.expected_calibration_error(alone)[0], ece[b])


def test_calibration_refuses_what_has_no_prediction(metric_problem):
    probs, labels, seen = metric_problem(13, n=20)
    with pytest.raises(ValueError, match="num_bins must be >= 1"):
        evaluate.calibration(probs, labels, seen, num_bins=0)
    with pytest.raises(ValueError, match="no seen class"):
        evaluate.calibration(probs, labels, np.zeros_like(seen))


def test_equal_mass_bins_hold_equal_rows_in_order_of_confidence(metric_problem):
    probs, labels, seen = metric_problem(14, n=300)  # continuous: no ties
    got = evaluate.calibration(probs, labels, seen, num_bins=6, binning="mass")
    np.testing.assert_array_equal(got["count"], np.full(6, 50))
    assert np.isnan(got["edges"]).all()
    # The direct computation: rows sorted by confidence, cut into six runs of 50.
    pred = np.where(seen, probs, -1).argmax(1)
    conf = probs[np.arange(len(labels)), pred].astype(np.float64)
    correct = pred == labels
    order = np.argsort(conf)
    ece = 0.0
    for b, rows in enumerate(np.array_split(order, 6)):
        np.testing.assert_allclose(got["confidence"][b], conf[rows].mean(), rtol=1e-12)
        np.testing.assert_allclose(got["accuracy"][b], correct[rows].mean(), rtol=1e-12)
        ece += abs(conf[rows].mean() - correct[rows].mean()) / 6
    np.testing.assert_allclose(got["ece"], ece, rtol=1e-10)


def test_equal_mass_weighted_binning_is_the_binning_of_the_expanded_rows(metric_problem):
    """Tied rows share a bin, so a row's copies in a resample are binned as that row
    weighted: bit for bit in the counts."""
    probs, labels, seen = metric_problem(15, n=70, decimals=2)
    weights = np.random.default_rng(5).integers(0, 4, (3, 70)).astype(np.int32)
    bins = evaluate.calibration_bins(probs, labels, seen, weights, 5, binning="mass")
    ece = evaluate.expected_calibration_error(bins)
    for b in range(3):
        rows = np.repeat(np.arange(70), weights[b])
        want = evaluate.calibration(probs[rows], labels[rows], seen, num_bins=5,
                                    binning="mass")
        np.testing.assert_array_equal(bins.count[b], want["count"])
        np.testing.assert_allclose(ece[b], want["ece"], rtol=1e-12)
    with pytest.raises(ValueError, match="binning must be one of"):
        evaluate.calibration(probs, labels, seen, binning="quantile")


def test_scoring_rules_are_sklearns_over_the_seen_class_forecasts(metric_problem):
    from sklearn.metrics import brier_score_loss, log_loss

    probs, labels, seen = metric_problem(16, n=120)
    probs = np.clip(probs, 0.01, 0.99).astype(np.float64)  # away from the float32 saturation
    logits = evaluate.sigmoid_logits(probs)
    weights = np.random.default_rng(6).integers(0, 3, (2, 120)).astype(np.int32)
    weights[0] = 1
    nll, brier = evaluate.scoring_rules(logits, labels, seen, weights)
    k = int(seen.sum())
    truth = (labels[:, None] == np.flatnonzero(seen)[None]).ravel()
    forecast = probs[:, seen].ravel()
    for b in range(2):
        w = np.repeat(weights[b], k)
        np.testing.assert_allclose(nll[b], k * log_loss(truth, forecast, sample_weight=w),
                                   rtol=1e-10)
        np.testing.assert_allclose(brier[b], k * brier_score_loss(truth, forecast,
                                                                  sample_weight=w), rtol=1e-10)
    # "None" rows are negatives for every seen class: an all-zero forecast costs them nothing.
    none_rows = ~seen[labels]
    zeros = evaluate.sigmoid_logits(np.where(none_rows[:, None], 0.0, probs))
    only_none = none_rows[None, :].astype(np.int32)
    nll_none, brier_none = evaluate.scoring_rules(zeros, labels, seen, only_none)
    assert nll_none[0] < 1e-12 and brier_none[0] < 1e-12
    assert np.isnan(evaluate.scoring_rules(logits, labels, seen, np.zeros((1, 120), int))[0]).all()


def test_seen_row_ece_leaves_the_none_rows_out(metric_problem):
    probs, labels, seen = metric_problem(17, n=200, decimals=2)
    is_seen = seen[labels]
    weights = np.ones((1, 200), np.int32)
    got = evaluate.expected_calibration_error(
        evaluate.calibration_bins(probs, labels, seen, weights * is_seen))
    want = evaluate.calibration(probs[is_seen], labels[is_seen], seen)["ece"]
    np.testing.assert_allclose(got[0], want, rtol=1e-12)
