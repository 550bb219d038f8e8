"""Evaluation of a classifier with a "none" category (paper sec. 2.5, 3.5, 4).

Conventions shared by every function here:

- `probs` float [N, C]: sigmoid outputs over ALL classes of the dataset.
- `labels` int [N]: true class ids in [0, C).
- `seen_mask` bool [C]: the classes present in the training split. An example whose class is
  unseen is a "none" example; predictions ignore unseen classes (their columns are masked out
  before any max / argmax), exactly as if the classifier had never had those outputs.

The threshold metrics are jnp, jit- and vmap-able: the training program calls them on device for
its learning curves. Everything else (the weighted AUC and its ROC curves, "none" detection,
calibration, bootstrap resamples) is float64 numpy, run once per member by the report: the AUCs
equal sklearn's.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from embaug_jax.util import is_traced, list_first

DEFAULT_THRESHOLD = 0.6
# np.arange(0.05, 0.951, 0.05) rounded, so 0.15 prints as 0.15 and not 0.15000000000000002.
DEFAULT_THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
DEFAULT_FPR_GRID = np.linspace(0.0, 1.0, 201)
NONE_NAME = "none"


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_inputs(probs, labels, seen_mask, *, where: str) -> None:
    """Raises ValueError on inconsistent shapes, and on bad values when they are concrete."""
    p_shape, l_shape, s_shape = np.shape(probs), np.shape(labels), np.shape(seen_mask)
    if len(p_shape) != 2:
        raise ValueError(f"{where}: probs must be [N, C], got shape {p_shape}.")
    n, c = p_shape
    if l_shape != (n,):
        raise ValueError(f"{where}: labels must be [N] = [{n}] to match probs {p_shape}, "
                         f"got shape {l_shape}.")
    if s_shape != (c,):
        raise ValueError(f"{where}: seen_mask must be [C] = [{c}] to match probs {p_shape}, "
                         f"got shape {s_shape}.")
    if n == 0:
        raise ValueError(f"{where}: no examples (probs has N = 0 rows).")
    labels_dtype = labels.dtype if hasattr(labels, "dtype") else np.asarray(labels).dtype
    if not np.issubdtype(labels_dtype, np.integer):
        raise ValueError(f"{where}: labels must be integer class ids, got dtype {labels_dtype}.")
    if any(is_traced(x) for x in (probs, labels, seen_mask)):
        return
    labels_np = np.asarray(labels)
    bad = np.flatnonzero((labels_np < 0) | (labels_np >= c))
    if bad.size:
        raise ValueError(f"{where}: labels must lie in [0, {c}); rows [{list_first(bad)}] hold "
                         f"[{list_first(labels_np[bad])}].")
    probs_np = np.asarray(probs)
    bad_rows = np.flatnonzero(~np.isfinite(probs_np).all(axis=1))
    if bad_rows.size:
        raise ValueError(f"{where}: probs has NaN/Inf in rows [{list_first(bad_rows)}] "
                         f"({bad_rows.size} rows in all); the model diverged or the input is bad.")


# --------------------------------------------------------------------------------------------
# Accuracy against a confidence threshold (paper sec. 3.5; Figures 3 and 5)
# --------------------------------------------------------------------------------------------


def top_seen_prediction(probs, seen_mask):
    """Returns (predicted class [N], its probability [N]) over the seen classes only.

    With no seen class at all the confidence is -inf, so every example is predicted "none".
    """
    masked = jnp.where(jnp.asarray(seen_mask, bool)[None, :], probs, -jnp.inf)
    return jnp.argmax(masked, axis=-1), jnp.max(masked, axis=-1)


def _masked_mean(values, mask):
    """Mean of `values` over `mask`; NaN (not a division warning) when the mask is empty."""
    count = jnp.sum(mask)
    total = jnp.sum(jnp.where(mask, values, 0.0))
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def threshold_accuracy(probs, labels, seen_mask, threshold=DEFAULT_THRESHOLD):
    """Overall, "none" and seen accuracy at a confidence threshold, as the paper's sec. 3.5.

    The predicted class is the argmax over the seen classes (a tie goes to the lowest class
    id, as `jnp.argmax`); its probability must be strictly
    *higher than* `threshold` (the paper's words), otherwise the prediction is "none": a
    probability exactly equal to the threshold predicts "none". An example is correct iff its
    class is seen and predicted, or its class is unseen and "none" is predicted.

    jnp throughout; `threshold` may be a traced scalar, so this vmaps over members and
    thresholds alike.

    Returns:
      dict(overall=, none=, seen=) float32 scalars. `none` is the accuracy over the "none"
      examples (the fraction of unseen-class examples predicted "none") and is NaN when the
      split has no unseen-class example; `seen` is the accuracy over the other examples and
      is NaN when there are none of those.
    """
    _check_inputs(probs, labels, seen_mask, where="threshold_accuracy")
    return _threshold_accuracy(jnp.asarray(probs), jnp.asarray(labels),
                               jnp.asarray(seen_mask, bool), jnp.asarray(threshold))


@jax.jit
def _threshold_accuracy(probs, labels, seen_mask, threshold):
    predicted, confidence = top_seen_prediction(probs, seen_mask)
    predicted_none = ~(confidence > jnp.asarray(threshold, confidence.dtype))
    truth_seen = seen_mask[labels]
    correct = jnp.where(truth_seen, ~predicted_none & (predicted == labels), predicted_none)
    correct = correct.astype(jnp.float32)
    return dict(
        overall=jnp.mean(correct),
        none=_masked_mean(correct, ~truth_seen),
        seen=_masked_mean(correct, truth_seen),
    )


def threshold_sweep(probs, labels, seen_mask, thresholds=DEFAULT_THRESHOLDS):
    """`threshold_accuracy` at every threshold (Figure 3).

    Returns:
      dict(thresholds=[T], overall=[T], none=[T], seen=[T]).
    """
    thresholds = jnp.asarray(thresholds)
    if thresholds.ndim != 1 or thresholds.shape[0] == 0:
        raise ValueError(f"threshold_sweep: thresholds must be a non-empty 1-D array, got shape "
                         f"{thresholds.shape}.")
    _check_inputs(probs, labels, seen_mask, where="threshold_sweep")
    out = _threshold_sweep(jnp.asarray(probs), jnp.asarray(labels),
                           jnp.asarray(seen_mask, bool), thresholds)
    return dict(thresholds=thresholds, **out)


@jax.jit
def _threshold_sweep(probs, labels, seen_mask, thresholds):
    # The argmax does not depend on the threshold, so vmap leaves it unbatched: computed once.
    return jax.vmap(_threshold_accuracy, in_axes=(None, None, None, 0))(
        probs, labels, seen_mask, thresholds)


# --------------------------------------------------------------------------------------------
# One-vs-rest ROC over the seen classes plus "none" (Table 1, Figure 4)
# --------------------------------------------------------------------------------------------


def none_score(probs, seen_mask):
    """Score of the "none" column: 1 - the highest seen-class probability (1 with no seen class)."""
    xp = jnp if any(is_traced(x) or isinstance(x, jax.Array) for x in (probs, seen_mask)) else np
    top = xp.max(xp.where(xp.asarray(seen_mask, bool)[None, :], probs, 0), axis=-1)
    return 1 - top


class OvrScores(NamedTuple):
    """The one-vs-rest problem Table 1 scores, in sklearn's multilabel-indicator form."""

    onehot_truth: np.ndarray  # bool [N, K]
    scores: np.ndarray        # float [N, K]
    support: np.ndarray       # int [K]: positives per column
    names: list[str]          # [K]: class names (or ids) and finally "none"


def ovr_scores(probs, labels, seen_mask, *, class_names: Sequence[str] | None = None) -> OvrScores:
    """Builds the one-vs-rest columns: seen classes with validation support > 0, plus "none".

    A seen class's score is its probability; the "none" column's positives are the unseen-class
    examples and its score is 1 - max seen probability. Columns without a single positive are
    left out (their AUC is undefined); "none" too when every class was seen in training.
    `sklearn.metrics.roc_auc_score(onehot_truth, scores, average="weighted")` is then Table 1.
    """
    _check_inputs(probs, labels, seen_mask, where="ovr_scores")
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    seen_mask = np.asarray(seen_mask, bool)
    c = probs.shape[1]
    if class_names is not None and len(class_names) != c:
        raise ValueError(f"ovr_scores: {len(class_names)} class_names for {c} classes.")
    truth_seen = seen_mask[labels]
    support_all = np.bincount(labels, minlength=c)
    columns = _seen_columns(labels, seen_mask)
    onehot = labels[:, None] == columns[None, :]
    scores = probs[:, columns]
    support = support_all[columns]
    names = [str(class_names[k]) if class_names is not None else str(k) for k in columns]
    num_none = int(np.sum(~truth_seen))
    if num_none:
        onehot = np.concatenate([onehot, ~truth_seen[:, None]], axis=1)
        scores = np.concatenate([scores, none_score(probs, seen_mask)[:, None]], axis=1)
        support = np.append(support, num_none)
        names.append(NONE_NAME)
    return OvrScores(onehot, scores, support, names)


def _seen_columns(labels, seen_mask) -> np.ndarray:
    """Class ids of the one-vs-rest problem's seen-class columns: seen and present in validation."""
    support = np.bincount(np.asarray(labels), minlength=len(seen_mask))
    return np.flatnonzero(np.asarray(seen_mask, bool) & (support > 0))


def binary_roc(is_positive, score):
    """ROC operating points at every distinct score, highest first, from (0, 0) (float64 numpy).

    The same points as `sklearn.metrics.roc_curve(..., drop_intermediate=False)`.

    Returns:
      (fpr, tpr, thresholds, num_positives, num_negatives); fpr / tpr are NaN when there are no
      negatives / positives.
    """
    is_positive = np.asarray(is_positive, bool)
    score = np.asarray(score)
    order = np.argsort(-score)  # tie order is irrelevant: ties collapse to one point
    score, is_positive = score[order], is_positive[order]
    # The last index of each run of equal scores: one operating point per distinct threshold.
    ends = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    tps = np.r_[0, np.cumsum(is_positive)[ends]].astype(np.float64)
    fps = np.r_[0, ends + 1].astype(np.float64) - tps
    num_pos, num_neg = tps[-1], fps[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr, tpr = fps / num_neg, tps / num_pos
    return fpr, tpr, np.r_[np.inf, score[ends]], int(num_pos), int(num_neg)


def interpolate_roc(fpr_grid, fpr, tpr):
    """The ROC curve's TPR at each grid FPR; at a vertical segment, the top of it.

    Between operating points the curve is the straight line the trapezoidal AUC integrates.
    """
    fpr_grid = np.asarray(fpr_grid, np.float64)
    last = len(fpr) - 1
    i = np.clip(np.searchsorted(fpr, fpr_grid, side="right") - 1, 0, last)
    j = np.minimum(i + 1, last)
    x0, x1, y0, y1 = fpr[i], fpr[j], tpr[i], tpr[j]
    on_point = (x0 >= fpr_grid) | (i == last)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(on_point, 0.0, (fpr_grid - x0) / (x1 - x0))
    return np.where(on_point, y0, y0 + t * (y1 - y0))


class OvrRoc(NamedTuple):
    """Table 1 and Figure 4 of one model, from one sort per column (float64 numpy)."""

    weighted_auc: float     # support-weighted mean of class_auc (NaN if any is undefined)
    fpr: np.ndarray         # [G] the common FPR grid
    tpr: np.ndarray         # [G] support-weighted mean TPR on it
    class_auc: np.ndarray   # [K] per column, in ovr_scores order
    support: np.ndarray     # [K]
    names: list[str]        # [K]


def ovr_roc(probs, labels, seen_mask, *, fpr_grid=DEFAULT_FPR_GRID,
            class_names: Sequence[str] | None = None) -> OvrRoc:
    """Per-column ROC curves of the one-vs-rest problem: their AUCs and their weighted mean.

    `weighted_auc` is the trapezoidal area in float64, the number sklearn's
    `roc_auc_score(..., average="weighted")` computes (Table 1); `fpr`/`tpr` are the
    support-weighted mean ROC curve on `fpr_grid` (Figure 4), whose area tends to
    `weighted_auc` as the grid gets finer (integration is linear).
    """
    truth, scores, support, names = ovr_scores(probs, labels, seen_mask, class_names=class_names)
    fpr_grid = np.asarray(fpr_grid, np.float64)
    class_auc = np.full(truth.shape[1], np.nan)
    total = np.zeros_like(fpr_grid)
    for k in range(truth.shape[1]):
        fpr, tpr, _, _, num_neg = binary_roc(truth[:, k], scores[:, k])
        if num_neg == 0:  # every example in this column: no ROC (sklearn raises)
            continue
        class_auc[k] = np.trapezoid(tpr, fpr)
        total += support[k] * interpolate_roc(fpr_grid, fpr, tpr)
    weight = support.sum()
    if weight == 0 or np.isnan(class_auc).any():
        return OvrRoc(np.nan, fpr_grid, np.full_like(fpr_grid, np.nan), class_auc, support, names)
    return OvrRoc(float(np.sum(support * class_auc) / weight), fpr_grid, total / weight,
                  class_auc, support, names)


class AucParts(NamedTuple):
    """Table 1's weighted AUC split into its "none" column and its seen-class columns.

    weighted_auc = none_part + seen_part, with none_part = none_weight * none_auc and
    seen_part = (1 - none_weight) * seen_auc: the weights of Table 1's average are the column
    supports, so the "none" column carries the "none" share of the validation rows.
    """

    weighted_auc: float  # support-weighted mean of every column's AUC (Table 1)
    seen_auc: float      # support-weighted mean AUC over the seen-class columns alone
    none_auc: float      # the "none" column's AUC (= none_detection's auroc); NaN without one
    none_weight: float   # the "none" column's share of the support (0 without one)
    seen_part: float     # (1 - none_weight) * seen_auc
    none_part: float     # none_weight * none_auc (0 without a "none" column)


def _auc_parts(class_auc, support, has_none: bool) -> AucParts:
    class_auc = np.asarray(class_auc, np.float64)
    support = np.asarray(support, np.float64)
    total = support.sum()
    seen_auc_k, seen_support = (class_auc[:-1], support[:-1]) if has_none else (class_auc, support)
    none_support = support[-1] if has_none else 0.0
    none_auc = float(class_auc[-1]) if has_none else math.nan
    if total == 0 or np.isnan(class_auc).any():
        return AucParts(math.nan, math.nan, none_auc, math.nan, math.nan, math.nan)
    seen_sum = float(np.sum(seen_support * seen_auc_k))
    seen_total = float(seen_support.sum())
    seen_auc = seen_sum / seen_total if seen_total else math.nan
    none_weight = float(none_support / total)
    # Each part is its columns' share of the weighted sum, so the two add up to the weighted AUC
    # to the last bits of float64 (no NaN part when a side is empty: its part is 0).
    none_part = float(none_support * none_auc / total) if has_none else 0.0
    seen_part = seen_sum / total
    return AucParts(float(np.sum(support * class_auc) / total), seen_auc, none_auc, none_weight,
                    seen_part, none_part)


def auc_decomposition(probs, labels, seen_mask) -> AucParts:
    """Table 1's weighted AUC as "none" weight x "none" AUC + (1 - weight) x seen-class AUC.

    `seen_auc` is `sklearn.metrics.roc_auc_score(average="weighted")` over the seen-class columns
    of `ovr_scores` alone, `none_auc` its "none" column's AUC and `none_weight` the share of
    validation rows whose class is unseen. A method's gain in weighted AUC thus splits into what
    it gains on the classes it was trained on and what it gains on spotting unseen ones.
    """
    roc = ovr_roc(probs, labels, seen_mask)
    num_none = int(np.sum(~np.asarray(seen_mask, bool)[np.asarray(labels)]))
    return _auc_parts(roc.class_auc, roc.support, num_none > 0)


# --------------------------------------------------------------------------------------------
# Beyond the paper: "none" detection as its own task, and calibration
# --------------------------------------------------------------------------------------------


def none_detection(probs, labels, seen_mask, *, target_tpr=0.95):
    """Detecting unseen-class examples by score = 1 - max seen prob (positives = "none").

    Returns:
      dict(auroc=, aupr=, fpr_at_95_tpr=, num_none=, num_seen=). `aupr` is average precision
      (sklearn's `average_precision_score`, no interpolation); `fpr_at_95_tpr` is the lowest
      FPR among operating points whose TPR >= `target_tpr`. All three are NaN without both
      "none" and seen examples.
    """
    _check_inputs(probs, labels, seen_mask, where="none_detection")
    seen_mask = np.asarray(seen_mask, bool)
    is_none = ~seen_mask[np.asarray(labels)]
    fpr, tpr, _, num_pos, num_neg = binary_roc(is_none, none_score(np.asarray(probs), seen_mask))
    result = dict(auroc=np.nan, aupr=np.nan, fpr_at_95_tpr=np.nan, num_none=num_pos,
                  num_seen=num_neg)
    if num_pos == 0 or num_neg == 0:
        return result
    tps, fps = tpr * num_pos, fpr * num_neg
    precision = tps[1:] / (tps[1:] + fps[1:])
    result["auroc"] = float(np.trapezoid(tpr, fpr))
    result["aupr"] = float(np.sum(np.diff(tpr) * precision))
    result["fpr_at_95_tpr"] = float(np.min(fpr[tpr >= target_tpr]))
    return result


def calibration(probs, labels, seen_mask, *, num_bins=15):
    """Top-label calibration over the seen classes: ECE and the reliability-diagram data.

    Confidence is the highest seen-class probability, and the prediction is correct iff that
    class is the true one, so an unseen-class example always counts as wrong: a model sure of
    itself on classes it never saw is overconfident. Bins are equal-width and right-closed,
    (lo, hi], the first also holding 0 (Guo et al., 2017).

    Returns:
      dict(ece=float, edges=[B+1], confidence=[B], accuracy=[B], count=[B]) with NaN
      confidence / accuracy in empty bins. ECE = sum_b count_b / N * |accuracy_b - confidence_b|.
    """
    _check_inputs(probs, labels, seen_mask, where="calibration")
    if int(num_bins) < 1:
        raise ValueError(f"calibration: num_bins must be >= 1, got {num_bins}.")
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels)
    seen_mask = np.asarray(seen_mask, bool)
    if not seen_mask.any():
        raise ValueError("calibration: seen_mask has no seen class, so there is no prediction.")
    masked = np.where(seen_mask[None, :], probs, -np.inf)
    predicted = np.argmax(masked, axis=1)
    confidence = masked[np.arange(len(labels)), predicted]
    correct = (predicted == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, int(num_bins) + 1)
    bins = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, num_bins - 1)
    count = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, confidence, minlength=num_bins) / count
        mean_acc = np.bincount(bins, correct, minlength=num_bins) / count
    gaps = np.where(count > 0, np.abs(mean_acc - mean_conf), 0.0)
    ece = float(np.sum(count / len(labels) * gaps))
    return dict(ece=ece, edges=edges, confidence=mean_conf, accuracy=mean_acc, count=count)


# --------------------------------------------------------------------------------------------
# Everything the report needs of one member
# --------------------------------------------------------------------------------------------


@jax.jit
def _threshold_metrics(probs, labels, seen_mask, threshold, thresholds):
    return (threshold_accuracy(probs, labels, seen_mask, threshold),
            threshold_sweep(probs, labels, seen_mask, thresholds))


def evaluate_member(probs, labels, seen_mask, *, threshold=DEFAULT_THRESHOLD,
                    thresholds=DEFAULT_THRESHOLDS, fpr_grid=DEFAULT_FPR_GRID,
                    num_bins=15) -> dict:
    """Every metric of one member's validation probabilities: the scalars of results.json (the
    weighted AUC with its parts, see `AucParts`; "none_auroc" is the "none" column's AUC), the
    per-class AUCs ([C] by class id) and the curves the figures draw (threshold sweep, mean ROC,
    calibration bins)."""
    acc, sweep = jax.device_get(_threshold_metrics(
        probs, labels, seen_mask, jnp.float32(threshold), np.asarray(thresholds, np.float32)))
    roc = ovr_roc(probs, labels, seen_mask, fpr_grid=fpr_grid)
    none_det = none_detection(probs, labels, seen_mask)
    calib = calibration(probs, labels, seen_mask, num_bins=num_bins)
    parts = _auc_parts(roc.class_auc, roc.support, none_det["num_none"] > 0)
    # Per class id (NaN where the class is no column: unseen, or absent from validation), so
    # trials whose seen classes differ line up class by class.
    columns = _seen_columns(labels, seen_mask)
    class_auc = np.full(np.shape(probs)[1], np.nan)
    class_auc[columns] = roc.class_auc[:columns.size]
    return dict(
        weighted_auc=roc.weighted_auc,
        seen_auc=parts.seen_auc,
        none_weight=parts.none_weight,
        seen_part=parts.seen_part,
        none_part=parts.none_part,
        overall_accuracy=float(acc["overall"]),
        none_accuracy=float(acc["none"]),
        seen_accuracy=float(acc["seen"]),
        none_auroc=none_det["auroc"],
        none_aupr=none_det["aupr"],
        none_fpr_at_95_tpr=none_det["fpr_at_95_tpr"],
        ece=calib["ece"],
        sweep_overall=np.asarray(sweep["overall"], np.float64),
        sweep_none=np.asarray(sweep["none"], np.float64),
        roc_tpr=roc.tpr,
        class_auc=class_auc,
        calibration=calib,
    )


# --------------------------------------------------------------------------------------------
# The same metrics on bootstrap resamples of the validation rows (paired statistics)
# --------------------------------------------------------------------------------------------


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


def _resampled_binary_auc(is_positive, score, counts):
    """ROC AUC of one column under each resample's row counts [B, N] (ties one half): [B].

    The rows are sorted once; a resample only reweights them, so its AUC is the Mann-Whitney sum
    over groups of tied scores, sum_g pos_g * (neg below g + neg_g / 2) / (P * N), with the
    group weights summed from the counts. NaN where a resample has no positive or no negative.
    """
    order = np.argsort(score, kind="stable")
    sorted_score, positive = np.asarray(score)[order], np.asarray(is_positive, bool)[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    weight = counts[:, order]
    negative_weight = np.where(positive[None, :], 0, weight)
    group_neg = np.add.reduceat(negative_weight, starts, axis=1)
    group_pos = np.add.reduceat(weight - negative_weight, starts, axis=1)
    with_pos = group_pos.any(axis=0)  # only groups holding a positive contribute
    below = (np.cumsum(group_neg, axis=1) - group_neg)[:, with_pos]
    twice = np.sum(group_pos[:, with_pos] * (2 * below + group_neg[:, with_pos]), axis=1,
                   dtype=np.float64)
    num_pos = group_pos.sum(axis=1, dtype=np.float64)
    num_neg = group_neg.sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((num_pos > 0) & (num_neg > 0), twice / (2 * num_pos * num_neg), np.nan)


RESAMPLED_METRICS = ("weighted_auc", "seen_auc", "none_auroc", "none_weight", "seen_part",
                     "none_part", "overall_accuracy", "none_accuracy", "seen_accuracy", "ece")


def resampled_metrics(probs, labels, seen_mask, counts, *, threshold=DEFAULT_THRESHOLD,
                      num_bins=15) -> dict[str, np.ndarray]:
    """`evaluate_member`'s scalar metrics on every bootstrap resample of the validation rows.

    Resample r is the validation set with row i repeated counts[r, i] times (see
    `bootstrap_counts`); the result equals `evaluate_member` on that expanded set, computed
    without expanding it. Metrics undefined on a resample (no "none" row drawn) are NaN.

    Args:
      counts: int [B, N] row counts, N = len(labels).

    Returns:
      {name: float64 [B]} for each name in RESAMPLED_METRICS.
    """
    _check_inputs(probs, labels, seen_mask, where="resampled_metrics")
    counts = np.asarray(counts)
    n = np.shape(labels)[0]
    if counts.ndim != 2 or counts.shape[1] != n:
        raise ValueError(f"resampled_metrics: counts must be [B, N] = [B, {n}], got shape "
                         f"{counts.shape}.")
    if not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise ValueError("resampled_metrics: counts must be non-negative integers (how often each "
                         "row is drawn); build them with bootstrap_counts.")
    probs_np, labels = np.asarray(probs), np.asarray(labels)
    seen_mask = np.asarray(seen_mask, bool)
    truth, scores, _, _ = ovr_scores(probs_np, labels, seen_mask)
    has_none = bool(np.any(~seen_mask[labels]))
    num_resamples = counts.shape[0]
    column_auc = np.stack([_resampled_binary_auc(truth[:, k], scores[:, k], counts)
                           for k in range(truth.shape[1])], axis=1)
    column_support = (counts @ truth.astype(np.int64)).astype(np.float64)  # [B, K]
    # A column a resample draws no positive of is left out, as ovr_scores leaves it out.
    in_problem = column_support > 0
    undefined = np.any(in_problem & np.isnan(column_auc), axis=1)
    weighted_sum = np.where(in_problem, column_support * np.nan_to_num(column_auc), 0.0)
    total = column_support.sum(axis=1)
    seen_cols = slice(0, truth.shape[1] - 1) if has_none else slice(None)
    seen_sum = weighted_sum[:, seen_cols].sum(axis=1)
    seen_total = column_support[:, seen_cols].sum(axis=1)
    none_support = column_support[:, -1] if has_none else np.zeros(num_resamples)
    none_sum = weighted_sum[:, -1] if has_none else np.zeros(num_resamples)
    with np.errstate(invalid="ignore", divide="ignore"):
        nan_if = lambda bad, x: np.where(bad, np.nan, x)  # noqa: E731
        out = dict(
            weighted_auc=nan_if(undefined, weighted_sum.sum(axis=1) / total),
            seen_auc=nan_if(undefined | (seen_total == 0), seen_sum / seen_total),
            none_auroc=(np.where(none_support > 0, column_auc[:, -1], np.nan) if has_none
                        else np.full(num_resamples, np.nan)),
            none_weight=nan_if(undefined, none_support / total),
            seen_part=nan_if(undefined, seen_sum / total),
            none_part=nan_if(undefined, none_sum / total),
        )

        # Accuracies at the threshold: the rule of `threshold_accuracy`, row by row, then counted.
        masked = np.where(seen_mask[None, :], probs_np, -np.inf)
        predicted = np.argmax(masked, axis=1)
        confidence = masked[np.arange(n), predicted]
        predicted_none = ~(confidence > np.asarray(threshold, confidence.dtype))
        truth_seen = seen_mask[labels]
        correct = np.where(truth_seen, ~predicted_none & (predicted == labels), predicted_none)
        rows = counts.sum(axis=1).astype(np.float64)
        none_rows = counts @ (~truth_seen).astype(np.int64)
        out["overall_accuracy"] = (counts @ correct.astype(np.int64)) / rows
        out["none_accuracy"] = (counts @ (correct & ~truth_seen).astype(np.int64)) / none_rows
        out["seen_accuracy"] = ((counts @ (correct & truth_seen).astype(np.int64))
                                / (rows - none_rows))

        # ECE = sum over bins of |sum of (correct - confidence) in it| / rows, as `calibration`.
        probs64 = np.where(seen_mask[None, :], probs_np.astype(np.float64), -np.inf)
        top = np.argmax(probs64, axis=1)
        top_conf = probs64[np.arange(n), top]
        edges = np.linspace(0.0, 1.0, int(num_bins) + 1)
        bins = np.clip(np.searchsorted(edges[1:-1], top_conf, side="left"), 0, num_bins - 1)
        gap = np.zeros((n, int(num_bins)))
        gap[np.arange(n), bins] = (top == labels) - top_conf
        out["ece"] = np.abs(counts.astype(np.float64) @ gap).sum(axis=1) / rows
    return out
