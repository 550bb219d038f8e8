"""Top-label calibration over the seen classes: one weighted binning, ECE and reliability bins.

Confidence is the highest seen-class probability, and the prediction is correct iff that class
is the true one, so an unseen-class example always counts as wrong: a model sure of itself on
classes it never saw is overconfident. Bins are equal-width and right-closed, (lo, hi], the first
also holding 0 (Guo et al., 2017). `calibration_bins` sums each bin's rows under per-row weights
(weights 1 for `calibration`, row counts for the bootstrap), and ECE comes from those sums alone.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from embaug_jax.evaluate.inputs import check_inputs, top_seen_prediction, unit_weights

NUM_BINS = 15


class CalibrationBins(NamedTuple):
    """Each weighting's rows summed per confidence bin."""

    edges: np.ndarray       # [num_bins + 1] from 0 to 1
    count: np.ndarray       # float64 [B, num_bins] the weight of the bin's rows
    confidence: np.ndarray  # float64 [B, num_bins] their weighted confidence sum
    correct: np.ndarray     # float64 [B, num_bins] their weighted number of correct predictions


def calibration_bins(probs, labels, seen_mask, weights, num_bins: int = NUM_BINS
                     ) -> CalibrationBins:
    """Bins every row by its confidence and sums each weighting's rows per bin.

    Args:
      weights: int [B, N] (see `inputs`).
    """
    if int(num_bins) < 1:
        raise ValueError(f"calibration: num_bins must be >= 1, got {num_bins}.")
    num_bins = int(num_bins)
    labels, seen_mask = np.asarray(labels), np.asarray(seen_mask, bool)
    if not seen_mask.any():
        raise ValueError("calibration: seen_mask has no seen class, so there is no prediction.")
    predicted, confidence = top_seen_prediction(np.asarray(probs), seen_mask)
    confidence = confidence.astype(np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, num_bins - 1)
    weights = np.asarray(weights)
    # One bincount for every weighting: weighting b's rows go to their own num_bins slots, and
    # each slot adds its rows in row order whatever the number of weightings.
    b = weights.shape[0]
    slots = (bins[None, :] + num_bins * np.arange(b)[:, None]).ravel()

    def per_bin(values):
        return np.bincount(slots, values.ravel(), minlength=b * num_bins).reshape(b, num_bins)

    return CalibrationBins(edges, per_bin(weights), per_bin(weights * confidence),
                           per_bin(weights * (predicted == labels)))


def expected_calibration_error(bins: CalibrationBins) -> np.ndarray:
    """ECE of each weighting [B]: sum over bins of count_b / total * |accuracy_b - confidence_b|."""
    with np.errstate(invalid="ignore", divide="ignore"):
        gaps = np.abs(bins.correct / bins.count - bins.confidence / bins.count)
        share = bins.count / bins.count.sum(axis=1, keepdims=True)
    return np.sum(share * np.where(bins.count > 0, gaps, 0.0), axis=1)


def calibration(probs, labels, seen_mask, *, num_bins: int = NUM_BINS) -> dict:
    """ECE and the reliability-diagram data of one model, every row once.

    Returns:
      dict(ece=float, edges=[B+1], confidence=[B], accuracy=[B], count=[B]) with NaN
      confidence / accuracy in empty bins. ECE = sum_b count_b / N * |accuracy_b - confidence_b|.
    """
    check_inputs(probs, labels, seen_mask, where="calibration")
    bins = calibration_bins(probs, labels, seen_mask, unit_weights(np.shape(labels)[0]),
                            num_bins)
    count = bins.count[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence, accuracy = bins.confidence[0] / count, bins.correct[0] / count
    return dict(ece=float(expected_calibration_error(bins)[0]), edges=bins.edges,
                confidence=confidence, accuracy=accuracy, count=count.astype(np.int64))
