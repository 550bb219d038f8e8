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
