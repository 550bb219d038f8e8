"""The one-vs-rest ROC problem of Table 1 and Figure 4: its columns, AUCs, parts and "none" column.

The problem's columns are the seen classes present in validation plus "none" (`ovr_scores`).
One column's AUC has one definition, `mann_whitney_auc`: the weighted Mann-Whitney statistic
(ties count one half) over the column's rows sorted once and grouped by tied score
(`tied_groups`). Integer sums and one division make it the trapezoidal area sklearn's
`roc_auc_score` computes, to float64 rounding, and per-row weights make it serve plain
evaluation (weights 1) and bootstrap resamples (row counts [B, N]) alike. The weighted AUC, its
seen-class and "none" parts (`auc_parts`) all come from the same per-column AUCs and supports.
The ROC curve points (Figure 4) come from the same groups (`roc_points`), and so do a
detection's average precision and FPR at 95% TPR under every weighting (`average_precision`,
`fpr_at_tpr`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from embaug_jax.evaluate.inputs import array_namespace, check_inputs, unit_weights

FPR_GRID = np.linspace(0.0, 1.0, 201)  # Figure 4's common FPR axis
NONE_NAME = "none"


def none_score(probs, seen_mask):
    """Score of the "none" column: 1 - the highest seen-class probability (1 with no seen class)."""
    xp = array_namespace(probs, seen_mask)
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
    check_inputs(probs, labels, seen_mask, where="ovr_scores")
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    seen_mask = np.asarray(seen_mask, bool)
    c = probs.shape[1]
    if class_names is not None and len(class_names) != c:
        raise ValueError(f"ovr_scores: {len(class_names)} class_names for {c} classes.")
    truth_seen = seen_mask[labels]
    support_all = np.bincount(labels, minlength=c)
    columns = seen_columns(labels, seen_mask)
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


def seen_columns(labels, seen_mask) -> np.ndarray:
    """Class ids of the one-vs-rest problem's seen-class columns: seen and present in validation."""
    support = np.bincount(np.asarray(labels), minlength=len(seen_mask))
    return np.flatnonzero(np.asarray(seen_mask, bool) & (support > 0))


# --------------------------------------------------------------------------------------------
# One column: its rows grouped by tied score, its AUC and its ROC curve
# --------------------------------------------------------------------------------------------


class TiedGroups(NamedTuple):
    """One column's rows sorted by score, one group per distinct score, weights summed."""

    scores: np.ndarray    # [G] the distinct scores, ascending
    positive: np.ndarray  # int [B, G] the weight of the group's positive rows, per weighting
    negative: np.ndarray  # int [B, G] and of its negative rows


def tied_groups(is_positive, score, weights) -> TiedGroups:
    """Sorts one column's rows once and sums each weighting's positives and negatives per score.

    Args:
      is_positive: bool [N]; score: float [N]; weights: int [B, N] (see `inputs`).
    """
    order = np.argsort(score)  # tie order is irrelevant: ties collapse into one group
    sorted_score, positive = np.asarray(score)[order], np.asarray(is_positive, bool)[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    weight = np.asarray(weights)[:, order]
    negative_weight = np.where(positive[None, :], 0, weight)
    return TiedGroups(sorted_score[starts],
                      np.add.reduceat(weight - negative_weight, starts, axis=1),
                      np.add.reduceat(negative_weight, starts, axis=1))


def mann_whitney_auc(groups: TiedGroups) -> np.ndarray:
    """ROC AUC of each weighting [B]: P(a positive outscores a negative), ties counting one half.

    The Mann-Whitney sum over groups, sum_g pos_g * (neg below g + neg_g / 2) / (P * N), in
    integers with one division at the end, so it is the exact area under the ROC curve rounded
    once. NaN where a weighting has no positive or no negative weight.
    """
    group_pos, group_neg = groups.positive, groups.negative
    with_pos = group_pos.any(axis=0)  # only groups holding a positive contribute
    below = (np.cumsum(group_neg, axis=1) - group_neg)[:, with_pos]
    twice = np.sum(group_pos[:, with_pos] * (2 * below + group_neg[:, with_pos]), axis=1,
                   dtype=np.float64)
    num_pos = group_pos.sum(axis=1, dtype=np.float64)
    num_neg = group_neg.sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((num_pos > 0) & (num_neg > 0), twice / (2 * num_pos * num_neg), np.nan)


def roc_points(groups: TiedGroups):
    """ROC operating points of the first weighting at every distinct score, highest first, from
    (0, 0) (float64 numpy).

    Returns:
      (fpr, tpr, thresholds, num_positives, num_negatives); fpr / tpr are NaN when there are no
      negatives / positives.
    """
    tps = np.r_[0, np.cumsum(groups.positive[0, ::-1])].astype(np.float64)
    fps = np.r_[0, np.cumsum(groups.negative[0, ::-1])].astype(np.float64)
    num_pos, num_neg = tps[-1], fps[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr, tpr = fps / num_neg, tps / num_pos
    return fpr, tpr, np.r_[np.inf, groups.scores[::-1]], int(num_pos), int(num_neg)


def binary_roc(is_positive, score):
    """ROC operating points of one column, every row once: `roc_points` of its `tied_groups`.

    The same points as `sklearn.metrics.roc_curve(..., drop_intermediate=False)`.
    """
    return roc_points(tied_groups(is_positive, score, unit_weights(np.shape(score)[0])))


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


def _rates(groups: TiedGroups):
    """Each weighting's true and false positives at every distinct score, highest first, and
    their totals: (tps int [B, G], fps [B, G], positives [B], negatives [B])."""
    tps = np.cumsum(groups.positive[:, ::-1], axis=1)
    fps = np.cumsum(groups.negative[:, ::-1], axis=1)
    return tps, fps, tps[:, -1], fps[:, -1]


def average_precision(groups: TiedGroups) -> np.ndarray:
    """Average precision of each weighting [B]: the sum over operating points (distinct scores,
    highest first) of the recall gained there times the precision there.

    sklearn's `average_precision_score` with sample weights: no interpolation, and tied rows
    form one operating point. NaN where a weighting has no positive or no negative weight.
    """
    tps, fps, num_pos, num_neg = _rates(groups)
    # Only points that hold a positive gain recall; there tps + fps >= 1.
    gains = groups.positive[:, ::-1].any(axis=0)
    gained, tps, fps = groups.positive[:, ::-1][:, gains], tps[:, gains], fps[:, gains]
    # Row by row in memory order, so a weighting's sum does not depend on how many
    # weightings are computed with it (the selected columns can come out column-major).
    terms = np.ascontiguousarray(gained * (tps / np.maximum(tps + fps, 1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.sum(terms, axis=1) / num_pos
    return np.where((num_pos > 0) & (num_neg > 0), ap, np.nan)


def fpr_at_tpr(groups: TiedGroups, target_tpr: float = 0.95) -> np.ndarray:
    """Each weighting's lowest false-positive rate among operating points whose TPR reaches
    `target_tpr` [B]; NaN where a weighting has no positive or no negative weight."""
    tps, fps, num_pos, num_neg = _rates(groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, fpr = tps / num_pos[:, None], fps / num_neg[:, None]
    # The last point (everything positive) has TPR 1, so every defined weighting finds one.
    lowest = np.min(np.where(tpr >= target_tpr, fpr, np.inf), axis=1)
    return np.where((num_pos > 0) & (num_neg > 0), lowest, np.nan)


def swap_classes(groups: TiedGroups) -> TiedGroups:
    """The same rows with positives and negatives swapped and the scores negated: the
    detection problem seen from the other class (AUPR with "none" as the negative class)."""
    return TiedGroups(-groups.scores[::-1], groups.negative[:, ::-1], groups.positive[:, ::-1])


# --------------------------------------------------------------------------------------------
# Every column: the weighted AUC and its seen / "none" parts
# --------------------------------------------------------------------------------------------


def column_aucs(truth, scores, weights) -> tuple[np.ndarray, np.ndarray]:
    """Every column's AUC and support under each weighting.

    Args:
      truth: bool [N, K] and scores: float [N, K], as `ovr_scores`; weights: int [B, N].

    Returns:
      (auc float64 [B, K], support int [B, K]); an AUC is NaN where its column has no positive
      or no negative weight.
    """
    auc, support = [], []
    for k in range(truth.shape[1]):
        groups = tied_groups(truth[:, k], scores[:, k], weights)
        auc.append(mann_whitney_auc(groups))
        # From the groups: numpy's integer matrix product (no BLAS) would cost more than the
        # sorts.
        support.append(groups.positive.sum(axis=1))
    return np.stack(auc, axis=1), np.stack(support, axis=1)


class AucParts(NamedTuple):
    """Table 1's weighted AUC split into its "none" column and its seen-class columns.

    weighted_auc = none_part + seen_part, with none_part = none_weight * none_auc and
    seen_part = (1 - none_weight) * seen_auc: the weights of Table 1's average are the column
    supports, so the "none" column carries the "none" share of the validation rows. Each field
    is a float, or a [B] array over the weightings of `auc_parts`.
    """

    weighted_auc: float  # support-weighted mean of every column's AUC (Table 1)
    seen_auc: float      # support-weighted mean AUC over the seen-class columns alone
    none_auc: float      # the "none" column's AUC (= none_detection's auroc); NaN without one
    none_weight: float   # the "none" column's share of the support (0 without one)
    seen_part: float     # (1 - none_weight) * seen_auc
    none_part: float     # none_weight * none_auc (0 without a "none" column)


def auc_parts(column_auc, column_support, has_none: bool) -> AucParts:
    """The weighted AUC and its parts under each weighting, from `column_aucs`' [B, K] arrays.

    A column a weighting gives no positive is left out of that weighting's problem, as
    `ovr_scores` leaves it out. Everything but `none_auc` is NaN where a column in the problem
    has an undefined AUC; `none_auc` is NaN where the "none" column is left out.

    Returns:
      AucParts of float64 [B] arrays.
    """
    column_auc = np.asarray(column_auc, np.float64)
    support = np.asarray(column_support, np.float64)
    in_problem = support > 0
    undefined = np.any(in_problem & np.isnan(column_auc), axis=1)
    weighted_sum = np.where(in_problem, support * np.nan_to_num(column_auc), 0.0)
    total = support.sum(axis=1)
    seen_cols = slice(0, -1) if has_none else slice(None)
    seen_sum = weighted_sum[:, seen_cols].sum(axis=1)
    seen_total = support[:, seen_cols].sum(axis=1)
    # Each part is its columns' share of the weighted sum, so the two add up to the weighted AUC
    # to the last bits of float64 (no NaN part when a side is empty: its part is 0).
    none_support = support[:, -1] if has_none else np.zeros_like(total)
    none_sum = weighted_sum[:, -1] if has_none else np.zeros_like(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        def nan_if(bad, x):
            return np.where(bad, np.nan, x)

        return AucParts(
            weighted_auc=nan_if(undefined, weighted_sum.sum(axis=1) / total),
            seen_auc=nan_if(undefined | (seen_total == 0), seen_sum / seen_total),
            none_auc=(np.where(none_support > 0, column_auc[:, -1], np.nan) if has_none
                      else np.full_like(total, np.nan)),
            none_weight=nan_if(undefined, none_support / total),
            seen_part=nan_if(undefined, seen_sum / total),
            none_part=nan_if(undefined, none_sum / total))


class OvrRoc(NamedTuple):
    """Table 1 and Figure 4 of one model, from one sort per column (float64 numpy)."""

    parts: AucParts         # the weighted AUC and its seen / "none" parts, as floats
    fpr: np.ndarray         # [G] the common FPR grid
    tpr: np.ndarray         # [G] support-weighted mean TPR on it (NaN if any AUC is undefined)
    class_auc: np.ndarray   # [K] per column, in ovr_scores order
    support: np.ndarray     # [K]
    names: list[str]        # [K]

    @property
    def weighted_auc(self) -> float:
        """Support-weighted mean of class_auc (Table 1); NaN if any is undefined."""
        return self.parts.weighted_auc


def ovr_roc(probs, labels, seen_mask, *, fpr_grid=FPR_GRID,
            class_names: Sequence[str] | None = None) -> OvrRoc:
    """Per-column ROC curves of the one-vs-rest problem: their AUCs, weighted mean and parts.

    `weighted_auc` is the number sklearn's `roc_auc_score(..., average="weighted")` computes
    (Table 1); `fpr`/`tpr` are the support-weighted mean ROC curve on `fpr_grid` (Figure 4),
    whose area tends to `weighted_auc` as the grid gets finer (integration is linear).
    """
    truth, scores, support, names = ovr_scores(probs, labels, seen_mask, class_names=class_names)
    fpr_grid = np.asarray(fpr_grid, np.float64)
    weights = unit_weights(truth.shape[0])
    class_auc = np.full(truth.shape[1], np.nan)
    total = np.zeros_like(fpr_grid)
    for k in range(truth.shape[1]):
        groups = tied_groups(truth[:, k], scores[:, k], weights)
        class_auc[k] = mann_whitney_auc(groups)[0]
        if np.isnan(class_auc[k]):  # every example in this column: no ROC (sklearn raises)
            continue
        fpr, tpr, _, _, _ = roc_points(groups)
        total += support[k] * interpolate_roc(fpr_grid, fpr, tpr)
    has_none = bool(np.any(~np.asarray(seen_mask, bool)[np.asarray(labels)]))
    parts = AucParts._make(float(x[0]) for x in auc_parts(class_auc[None], support[None],
                                                          has_none))
    undefined = np.isnan(class_auc).any()
    tpr = np.full_like(fpr_grid, np.nan) if undefined else total / support.sum()
    return OvrRoc(parts, fpr_grid, tpr, class_auc, support, names)


def auc_decomposition(probs, labels, seen_mask) -> AucParts:
    """Table 1's weighted AUC as "none" weight x "none" AUC + (1 - weight) x seen-class AUC.

    `seen_auc` is `sklearn.metrics.roc_auc_score(average="weighted")` over the seen-class columns
    of `ovr_scores` alone, `none_auc` its "none" column's AUC and `none_weight` the share of
    validation rows whose class is unseen. A method's gain in weighted AUC thus splits into what
    it gains on the classes it was trained on and what it gains on spotting unseen ones.
    """
    return ovr_roc(probs, labels, seen_mask).parts


# --------------------------------------------------------------------------------------------
# Beyond the paper: "none" detection as its own task
# --------------------------------------------------------------------------------------------


def none_detection(probs, labels, seen_mask, *, target_tpr=0.95):
    """Detecting unseen-class examples by score = 1 - max seen prob (positives = "none").

    Returns:
      dict(auroc=, aupr=, fpr_at_95_tpr=, num_none=, num_seen=). `auroc` is the "none" column's
      AUC of `ovr_roc`; `aupr` is average precision (`average_precision`, as sklearn's
      `average_precision_score`); `fpr_at_95_tpr` is the lowest FPR among operating points whose
      TPR >= `target_tpr`. All three are NaN without both "none" and seen examples.
    """
    check_inputs(probs, labels, seen_mask, where="none_detection")
    seen_mask = np.asarray(seen_mask, bool)
    is_none = ~seen_mask[np.asarray(labels)]
    groups = tied_groups(is_none, none_score(np.asarray(probs), seen_mask),
                         unit_weights(is_none.size))
    num_none = int(groups.positive.sum())
    return dict(auroc=float(mann_whitney_auc(groups)[0]),
                aupr=float(average_precision(groups)[0]),
                fpr_at_95_tpr=float(fpr_at_tpr(groups, target_tpr)[0]), num_none=num_none,
                num_seen=int(is_none.size - num_none))
