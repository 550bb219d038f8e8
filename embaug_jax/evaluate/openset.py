"""Open-set classification over every threshold: the OSCR curve and its area, and the threshold
chosen on held-out rows.

A threshold t accepts a row's top seen-class prediction when its confidence (the highest
seen-class probability) exceeds t and answers "none" otherwise (`threshold.threshold_counts`), so
raising t trades correct acceptances of seen rows for rejections of "none" rows. The accuracy at
one fixed threshold is one point of that trade-off, and a model that is merely less confident
says "none" more often there by construction. The open-set classification rate curve (OSCR;
Dhamija et al., 2018) draws the whole trade-off: the correct-classification rate CCR(t) (seen
rows accepted with their true class / seen rows) against the false-acceptance rate FPR(t)
("none" rows accepted / "none" rows). Its area is threshold-free and unchanged by temperature
scaling, which moves confidences but not their order.

The area is one weighted Mann-Whitney statistic, P(a correctly classified seen row is more
confident than a "none" row) (ties one half) times the share of seen rows classified correctly:
the trapezoidal area under the curve's operating points, a sum over rows under per-row weights.
"""

from __future__ import annotations

import numpy as np

from embaug_jax.evaluate.inputs import check_inputs, top_seen_prediction, unit_weights
from embaug_jax.evaluate.roc import mann_whitney_auc, roc_points, tied_groups


def _accept_problem(probs, labels, seen_mask):
    """(is_none [N], correctly classified seen row [N], confidence float [N])."""
    seen_mask = np.asarray(seen_mask, bool)
    labels = np.asarray(labels)
    predicted, confidence = top_seen_prediction(np.asarray(probs), seen_mask)
    is_none = ~seen_mask[labels]
    return is_none, ~is_none & (predicted == labels), confidence


def oscr_area(probs, labels, seen_mask, weights) -> np.ndarray:
    """The area under each weighting's OSCR curve [B] (float64).

    1 for a model that classifies every seen row correctly and is more confident on each of them
    than on any "none" row; it is at most the seen rows' closed-set accuracy. NaN where a
    weighting has no seen row or no "none" row (the curve needs both).

    Args:
      weights: int [B, N] (see `inputs`).
    """
    is_none, correct, confidence = _accept_problem(probs, labels, seen_mask)
    weights = np.asarray(weights)
    # Misclassified seen rows move neither rate: they count only in CCR's denominator.
    groups = tied_groups(correct, confidence, weights * (correct | is_none))
    num_seen = weights @ (~is_none).astype(np.int64)
    num_correct = weights @ correct.astype(np.int64)
    num_none = weights @ is_none.astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        area = np.where(num_correct > 0, mann_whitney_auc(groups) * (num_correct / num_seen),
                        0.0)
    return np.where((num_seen > 0) & (num_none > 0), area, np.nan)


def oscr_curve(probs, labels, seen_mask) -> tuple[np.ndarray, np.ndarray]:
    """The OSCR curve's operating points, every row once: (false-acceptance rate, correct-
    classification rate), float64 [G + 1] each, from (0, 0) as the threshold falls through every
    distinct confidence. NaN where there is no seen or no "none" row."""
    check_inputs(probs, labels, seen_mask, where="oscr_curve")
    is_none, correct, confidence = _accept_problem(probs, labels, seen_mask)
    groups = tied_groups(correct, confidence, unit_weights(is_none.size) * (correct | is_none))
    fpr, tpr, _, num_correct, _ = roc_points(groups)
    num_seen = int(np.sum(~is_none))
    if num_seen == 0 or not is_none.any():
        return np.full_like(fpr, np.nan), np.full_like(fpr, np.nan)
    ccr = np.zeros_like(fpr) if num_correct == 0 else tpr * (num_correct / num_seen)
    return fpr, ccr


def choose_threshold(probs, labels, seen_mask) -> float:
    """The confidence threshold that maximises the mean of the overall and the "none" accuracy
    on these rows (the overall accuracy alone when none of them is "none").

    The accuracies change only where the threshold passes a row's confidence, so every cut
    between two distinct confidences is tried, and below the lowest and above the highest;
    the first best cut wins, and its threshold is the midpoint of the interval, in the
    confidences' dtype (the highest confidence it rejects, where no number lies between).
    A threshold above every confidence (all rows "none") may be 1.

    Returns:
      t such that `threshold_counts(..., t, ...)` rejects exactly the rows at or below the cut.
    """
    check_inputs(probs, labels, seen_mask, where="choose_threshold")
    is_none, correct, confidence = _accept_problem(probs, labels, seen_mask)
    # One group per distinct confidence: its correct seen rows (positive) and "none" rows
    # (negative; the other rows weigh 0), as the OSCR curve groups them.
    groups = tied_groups(correct, confidence, unit_weights(is_none.size) * (correct | is_none))
    values, correct_per_group, none_per_group = (groups.scores, groups.positive[0],
                                                 groups.negative[0])
    # Cut j rejects the groups below j: j = 0 accepts every row, j = G rejects every row.
    rejected_none = np.r_[0, np.cumsum(none_per_group)]
    accepted_correct = correct_per_group.sum() - np.r_[0, np.cumsum(correct_per_group)]
    overall = (rejected_none + accepted_correct) / is_none.size
    objective = overall if not is_none.any() else (overall + rejected_none / is_none.sum()) / 2
    if values[0] <= 0:  # a confidence of 0 is never above a threshold in [0, 1]
        objective[0] = -np.inf
    best = int(np.argmax(objective))
    dtype = confidence.dtype.type
    if best == len(values):
        return float(max(dtype((values[-1] + 1) / 2), values[-1]))
    if best == 0:
        return float(dtype(values[0] / 2))
    low, high = values[best - 1], values[best]
    middle = dtype((np.float64(low) + np.float64(high)) / 2)
    return float(middle if low <= middle < high else low)
