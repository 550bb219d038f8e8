"""Calibration: one weighted binning for the ECE and the reliability bins, and the NLL and Brier
score of the sigmoid outputs.

ECE is top-label over the seen classes: confidence is the highest seen-class probability, and
the prediction is correct iff that class is the true one, so an unseen-class ("none") example
always counts as wrong: a model sure of itself on classes it never saw is overconfident. The
same ECE over the seen rows alone (weights 0 on the "none" rows) separates that from the
calibration of the seen classes. Bins are equal-width and right-closed, (lo, hi], the first also
holding 0 (Guo et al., 2017), or equal-mass: each bin holds the same weight of rows, in order of
confidence (Nixon et al., 2019). `calibration_bins` sums each bin's rows under per-row weights
(weights 1 for `calibration`, row counts for the bootstrap), and ECE comes from those sums alone.

`scoring_rules` treats every seen class's sigmoid output as what the model trained it to be, a
binary forecast of "this row is of that class" ("none" rows are negatives for every seen class):
the NLL and the Brier score of those forecasts, summed over the seen classes, averaged over rows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import expit

from embaug_jax.evaluate.inputs import check_inputs, top_seen_prediction, unit_weights

NUM_BINS = 15
BINNINGS = ("width", "mass")


class CalibrationBins(NamedTuple):
    """Each weighting's rows summed per confidence bin."""

    edges: np.ndarray       # [num_bins + 1] from 0 to 1; NaN for equal-mass bins (no fixed edges)
    count: np.ndarray       # float64 [B, num_bins] the weight of the bin's rows
    confidence: np.ndarray  # float64 [B, num_bins] their weighted confidence sum
    correct: np.ndarray     # float64 [B, num_bins] their weighted number of correct predictions


def calibration_bins(probs, labels, seen_mask, weights, num_bins: int = NUM_BINS, *,
                     binning: str = "width") -> CalibrationBins:
    """Bins every row by its confidence and sums each weighting's rows per bin.

    Args:
      weights: int [B, N] (see `inputs`).
      binning: "width": equal-width bins on [0, 1]; "mass": each weighting's rows sorted by
        confidence and cut into bins of equal weight, a row going to the bin that holds the
        middle of its weight, and tied rows staying together (so a row's copies in a bootstrap
        resample are binned as that row weighted).
    """
    if int(num_bins) < 1:
        raise ValueError(f"calibration: num_bins must be >= 1, got {num_bins}.")
    if binning not in BINNINGS:
        raise ValueError(f"calibration: binning must be one of {BINNINGS}, got {binning!r}.")
    num_bins = int(num_bins)
    labels, seen_mask = np.asarray(labels), np.asarray(seen_mask, bool)
    if not seen_mask.any():
        raise ValueError("calibration: seen_mask has no seen class, so there is no prediction.")
    predicted, confidence = top_seen_prediction(np.asarray(probs), seen_mask)
    confidence = confidence.astype(np.float64)
    weights = np.asarray(weights)
    if binning == "width":
        edges = np.linspace(0.0, 1.0, num_bins + 1)
        bins = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, num_bins - 1)
        bins = bins[None, :]
    else:
        edges = np.full(num_bins + 1, np.nan)
        bins = _equal_mass_bins(confidence, weights, num_bins)
    # One bincount for every weighting: weighting b's rows go to their own num_bins slots, and
    # each slot adds its rows in row order whatever the number of weightings.
    b = weights.shape[0]
    slots = (bins + num_bins * np.arange(b)[:, None]).ravel()

    def per_bin(values):
        return np.bincount(slots, values.ravel(), minlength=b * num_bins).reshape(b, num_bins)

    return CalibrationBins(edges, per_bin(weights), per_bin(weights * confidence),
                           per_bin(weights * (predicted == labels)))


def _equal_mass_bins(confidence, weights, num_bins: int) -> np.ndarray:
    """Each row's equal-mass bin under each weighting [B, N]: the bin of the middle of its tie
    group's weight, floor(num_bins * (weight below + group weight / 2) / total weight)."""
    order = np.argsort(confidence, kind="stable")
    ordered = confidence[order]
    new_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group_weight = np.add.reduceat(np.asarray(weights, np.int64)[:, order],
                                   np.flatnonzero(new_group), axis=1)
    below = np.cumsum(group_weight, axis=1) - group_weight
    total = np.maximum(group_weight.sum(axis=1, keepdims=True), 1)
    # In integers: no rounding can move a row whose middle sits on a bin boundary.
    group_bin = np.minimum(num_bins * (2 * below + group_weight) // (2 * total), num_bins - 1)
    bins = np.empty(np.shape(weights), np.int64)
    bins[:, order] = group_bin[:, np.cumsum(new_group) - 1]
    return bins


def expected_calibration_error(bins: CalibrationBins) -> np.ndarray:
    """ECE of each weighting [B]: sum over bins of count_b / total * |accuracy_b - confidence_b|."""
    with np.errstate(invalid="ignore", divide="ignore"):
        gaps = np.abs(bins.correct / bins.count - bins.confidence / bins.count)
        share = bins.count / bins.count.sum(axis=1, keepdims=True)
    return np.sum(share * np.where(bins.count > 0, gaps, 0.0), axis=1)


def calibration(probs, labels, seen_mask, *, num_bins: int = NUM_BINS,
                binning: str = "width") -> dict:
    """ECE and the reliability-diagram data of one model, every row once.

    Returns:
      dict(ece=float, edges=[B+1], confidence=[B], accuracy=[B], count=[B]) with NaN
      confidence / accuracy in empty bins. ECE = sum_b count_b / N * |accuracy_b - confidence_b|.
    """
    check_inputs(probs, labels, seen_mask, where="calibration")
    bins = calibration_bins(probs, labels, seen_mask, unit_weights(np.shape(labels)[0]),
                            num_bins, binning=binning)
    count = bins.count[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence, accuracy = bins.confidence[0] / count, bins.correct[0] / count
    return dict(ece=float(expected_calibration_error(bins)[0]), edges=bins.edges,
                confidence=confidence, accuracy=accuracy, count=count.astype(np.int64))


def scoring_rules(logits, labels, seen_mask, weights) -> tuple[np.ndarray, np.ndarray]:
    """The NLL and the Brier score of each weighting [B], from the outputs' logits.

    Per row, over the seen classes k: NLL = sum_k softplus(z_k) - y_k z_k (the binary
    cross-entropy of sigmoid(z_k), computed stably from the logit) and Brier = sum_k
    (sigmoid(z_k) - y_k)^2, with y_k = 1 iff the row is of class k; then the weighted mean over
    rows. So each is sklearn's `log_loss` / `brier_score_loss` over the flattened [rows, seen
    classes] forecasts, times the number of seen classes. NaN where a weighting has no rows.

    Args:
      logits: float [N, C], e.g. `sigmoid_logits` of stored probabilities, or scaled ones.
      weights: int [B, N] (see `inputs`).
    """
    seen_mask = np.asarray(seen_mask, bool)
    if not seen_mask.any():
        raise ValueError("scoring_rules: seen_mask has no seen class, so there is no forecast.")
    z = np.asarray(logits, np.float64)[:, seen_mask]
    y = np.asarray(labels)[:, None] == np.flatnonzero(seen_mask)[None, :]
    nll = np.sum(np.logaddexp(0.0, z) - np.where(y, z, 0.0), axis=1)
    brier = np.sum((expit(z) - y) ** 2, axis=1)
    weights = np.asarray(weights, np.float64)
    total = weights.sum(axis=1)
    # Row sums, not matrix products: a weighting's sum then does not depend on how many
    # weightings are computed with it.
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(weights * nll, axis=1) / total, np.sum(weights * brier, axis=1) / total
