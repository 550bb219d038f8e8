"""`evaluate_member`'s scalar metrics on bootstrap resamples of the validation rows.

A resample is a weighting of the rows (how often each is drawn), so every metric is the one
`evaluate_member` computes, called with the resamples' row counts [B, N] as its weights instead
of ones: the result equals evaluation of each expanded resample, without expanding it. A
member's post-hoc fits (`PostHoc`, from its selection rows) are held fixed across resamples.
"""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np

from embaug_jax.evaluate.calibration import NUM_BINS
from embaug_jax.evaluate.detectors import OUTPUT_DETECTORS
from embaug_jax.evaluate.inputs import check_inputs, check_weights, sigmoid_logits
from embaug_jax.evaluate.member import calibration_metrics, open_set_metrics, scalar_metrics
from embaug_jax.evaluate.posthoc import PostHoc
from embaug_jax.evaluate.roc import auc_parts, column_aucs, ovr_scores
from embaug_jax.evaluate.threshold import accuracies, threshold_counts


def bootstrap_counts(key, num_rows: int, num_resamples: int) -> np.ndarray:
    """How often each of `num_rows` rows is drawn in each of `num_resamples` bootstrap resamples.

    Returns:
      int32 [num_resamples, num_rows]; every row sums to num_rows (sampling with replacement).
    """
    if int(num_rows) < 1 or int(num_resamples) < 1:
        raise ValueError(f"bootstrap_counts: need num_rows >= 1 and num_resamples >= 1, got "
                         f"{num_rows} and {num_resamples}.")
    b, n = int(num_resamples), int(num_rows)
    draws = np.asarray(jax.random.randint(key, (b, n), 0, n))
    # One bincount for all resamples: resample r's draws are offset into their own n slots.
    flat = (draws + (np.arange(b) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.int32)


def resampled_metrics(probs, labels, seen_mask, counts, *, threshold, num_bins=NUM_BINS,
                      posthoc: PostHoc | None = None,
                      embedding_scores: Mapping[str, np.ndarray] | None = None,
                      detectors=OUTPUT_DETECTORS) -> dict[str, np.ndarray]:
    """`evaluate_member`'s scalar metrics on every bootstrap resample of the validation rows.

    Resample r is the validation set with row i repeated counts[r, i] times (see
    `bootstrap_counts`). Metrics undefined on a resample (no "none" row drawn) are NaN. The
    accuracies are float64 here; `evaluate_member` rounds the same ratios to float32.

    Args:
      counts: int [B, N] row counts, N = len(labels).
      posthoc, embedding_scores, detectors: as `evaluate_member`'s.

    Returns:
      {name: float64 [B]} for each name in RESAMPLED_METRICS.
    """
    check_inputs(probs, labels, seen_mask, where="resampled_metrics")
    counts = check_weights(counts, np.shape(labels)[0], where="resampled_metrics")
    probs, labels = np.asarray(probs), np.asarray(labels)
    seen_mask = np.asarray(seen_mask, bool)
    truth, scores, _, _ = ovr_scores(probs, labels, seen_mask)
    has_none = bool(np.any(~seen_mask[labels]))
    parts = auc_parts(*column_aucs(truth, scores, counts), has_none)
    accuracy = accuracies(threshold_counts(probs, labels, seen_mask, threshold, counts))
    logits = sigmoid_logits(probs)
    calibration = calibration_metrics(probs, labels, seen_mask, counts, num_bins=num_bins,
                                      posthoc=posthoc, logits=logits)
    return dict(**scalar_metrics(parts, accuracy, calibration.pop("ece")),
                **open_set_metrics(probs, labels, seen_mask, counts, posthoc=posthoc,
                                   embedding_scores=embedding_scores, detectors=detectors,
                                   logits=logits),
                **calibration)
