"""What a member's selection rows fix before its report rows are scored: post-hoc calibration of
its sigmoid outputs, a confidence threshold and a "none" detector (`fit_posthoc`).

Temperature scaling (Guo et al., 2017) divides every logit by one T > 0; vector scaling gives
each class its own scale and bias, p_k = sigmoid(w_k z_k + b_k), which for sigmoid outputs is
Platt scaling of each class. Both minimise the NLL of the outputs as the model was trained to
read them (`calibration.scoring_rules`: each seen class's sigmoid a binary forecast, "none" rows
negatives for every seen class), over the selection rows, by Newton's method in float64 (the
objective is convex in 1 / T, and in (w_k, b_k)). The logits are `sigmoid_logits` of the stored
probabilities. Temperature scaling keeps every ranking, within a row and across rows: the
argmax, the AUCs, the OSCR and every detector stay as they were, and only the values (ECE, NLL,
Brier, the accuracy at a given threshold) move. Vector scaling can move the argmax too.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import expit

from embaug_jax.evaluate.detectors import DETECTORS, OUTPUT_DETECTORS, output_scores
from embaug_jax.evaluate.inputs import check_inputs, sigmoid_logits
from embaug_jax.evaluate.openset import choose_threshold
from embaug_jax.evaluate.roc import mann_whitney_auc, tied_groups

# T is kept in [1 / 100, 100]: beyond, the selection rows are separated perfectly (or not at
# all) by the outputs and the NLL has no finite minimiser.
TEMPERATURE_RANGE = (0.01, 100.0)
# Vector scaling's pull towards the identity map (w = 1, b = 0): (penalty / 2) * ((w - 1)^2 +
# b^2) per class, one row's worth of NLL, so that a class the selection rows separate
# perfectly (or never hold) keeps finite parameters; negligible beside hundreds of rows.
VECTOR_PENALTY = 1.0
_MAX_NEWTON_STEPS = 100
# Newton's method stops (per class, for vector scaling) once the decrease its step promises,
# half the Newton decrement g.H^-1.g, is below this share of the loss: the loss, a sum over
# thousands of rows, cannot resolve less, and halving steps that only chase its rounding noise
# cost full evaluations of the loss (at the paper's scale, most of the fit's time).
_NEWTON_TOLERANCE = 1e-13


class Scaling(NamedTuple):
    """A post-hoc map of the logits, class by class: z_k -> scale_k * z_k + bias_k."""

    scale: np.ndarray  # float64 [C]; 1 / T for every class under temperature scaling
    bias: np.ndarray   # float64 [C]; 0 under temperature scaling

    def logits(self, logits) -> np.ndarray:
        """The scaled logits [N, C] of logits [N, C] (`sigmoid_logits` of the outputs)."""
        return np.asarray(logits, np.float64) * self.scale + self.bias

    @classmethod
    def identity(cls, num_classes: int) -> Scaling:
        return cls(np.ones(num_classes), np.zeros(num_classes))


class PostHoc(NamedTuple):
    """One member's fits on its selection rows, applied unchanged to its report rows."""

    temperature: float  # temperature scaling's T
    vector: Scaling     # vector scaling's per-class scale and bias
    threshold: float    # `openset.choose_threshold`: the best mean of overall and "none" accuracy
    detector: str       # of DETECTORS, the highest "none" AUROC on the selection rows

    @property
    def temperature_scaling(self) -> Scaling:
        c = self.vector.scale.size
        return Scaling(np.full(c, 1.0 / self.temperature), np.zeros(c))


def _targets(labels, seen_mask):
    """(seen-class ids [K], y bool [N, K]): y[n, k] iff row n is of seen class k."""
    seen_ids = np.flatnonzero(np.asarray(seen_mask, bool))
    return seen_ids, np.asarray(labels)[:, None] == seen_ids[None, :]


def fit_temperature(probs, labels, seen_mask) -> float:
    """Temperature scaling's T: the minimiser of the NLL of sigmoid(z / T) over these rows,
    within TEMPERATURE_RANGE (Newton's method on s = 1 / T, where the NLL is convex)."""
    check_inputs(probs, labels, seen_mask, where="fit_temperature")
    seen_ids, y = _targets(labels, seen_mask)
    if seen_ids.size == 0:
        raise ValueError("fit_temperature: seen_mask has no seen class, so nothing to scale.")
    z = sigmoid_logits(probs)[:, seen_ids].ravel()
    y = y.ravel()
    low, high = 1.0 / TEMPERATURE_RANGE[1], 1.0 / TEMPERATURE_RANGE[0]

    def loss(s):
        return np.sum(np.logaddexp(0.0, s * z) - np.where(y, s * z, 0.0))

    s, current = 1.0, loss(1.0)
    for _ in range(_MAX_NEWTON_STEPS):
        p = expit(s * z)
        grad, hess = np.sum((p - y) * z), np.sum(p * (1 - p) * z * z)
        if hess <= 0:  # every logit 0 (or saturated beyond float64): the loss is flat
            break
        if grad * grad / hess / 2 <= _NEWTON_TOLERANCE * max(current, 1.0):
            break
        step = float(np.clip(s - grad / hess, low, high)) - s
        # Halving keeps every step a descent where the quadratic model overshoots.
        for _ in range(40):
            value = loss(s + step)
            if value <= current:
                break
            step /= 2
        else:
            break
        s, current = s + step, value
        if abs(step) <= 1e-12 * max(s, 1.0):
            break
    return float(1.0 / s)


def fit_vector_scaling(probs, labels, seen_mask, *, penalty: float = VECTOR_PENALTY) -> Scaling:
    """Vector scaling: each seen class's (w_k, b_k) minimising the NLL of sigmoid(w_k z_k + b_k)
    over these rows plus (penalty / 2) ((w_k - 1)^2 + b_k^2); Newton's method on every class at
    once. Unseen classes keep the identity map (they are never predicted)."""
    check_inputs(probs, labels, seen_mask, where="fit_vector_scaling")
    seen_ids, y = _targets(labels, seen_mask)
    if seen_ids.size == 0:
        raise ValueError("fit_vector_scaling: seen_mask has no seen class, so nothing to scale.")
    z = sigmoid_logits(probs)[:, seen_ids]  # [N, K]
    yf = y.astype(np.float64)
    k = seen_ids.size
    w, b = np.ones(k), np.zeros(k)

    def loss(w, b):
        a = z * w + b
        return (np.sum(np.logaddexp(0.0, a) - yf * a, axis=0)
                + penalty / 2 * ((w - 1) ** 2 + b ** 2))

    current = loss(w, b)
    for _ in range(_MAX_NEWTON_STEPS):
        p = expit(z * w + b)
        r, h = p - yf, p * (1 - p)
        g_w = np.sum(r * z, axis=0) + penalty * (w - 1)
        g_b = np.sum(r, axis=0) + penalty * b
        h_ww = np.sum(h * z * z, axis=0) + penalty
        h_wb = np.sum(h * z, axis=0)
        h_bb = np.sum(h, axis=0) + penalty
        det = h_ww * h_bb - h_wb ** 2  # > 0: the penalty makes every Hessian positive definite
        d_w = -(h_bb * g_w - h_wb * g_b) / det
        d_b = -(h_ww * g_b - h_wb * g_w) / det
        active = -(g_w * d_w + g_b * d_b) / 2 > _NEWTON_TOLERANCE * np.maximum(current, 1.0)
        if not active.any():
            break
        # A class that has converged takes no step, so its loss stays as it is, bit for bit.
        d_w, d_b = np.where(active, d_w, 0.0), np.where(active, d_b, 0.0)
        scale = np.ones(k)
        value = loss(w + d_w, b + d_b)
        for _ in range(40):
            worse = value > current
            if not worse.any():
                break
            scale = np.where(worse, scale / 2, scale)
            value = np.where(worse, loss(w + scale * d_w, b + scale * d_b), value)
        scale = np.where(value <= current, scale, 0.0)  # no descent found: that class stays
        w, b = w + scale * d_w, b + scale * d_b
        current = np.minimum(value, current)
        if np.max(np.abs(scale * d_w) + np.abs(scale * d_b)) <= 1e-12:
            break
    full = Scaling.identity(np.shape(probs)[1])
    full.scale[seen_ids], full.bias[seen_ids] = w, b
    return full


def best_detector(labels, seen_mask, scores: dict[str, np.ndarray]) -> str:
    """The detector of `scores` ({name: "none" score [N]}) with the highest AUROC on these
    rows; the first in DETECTORS order on ties or where none is defined (no "none" row)."""
    is_none = ~np.asarray(seen_mask, bool)[np.asarray(labels)]
    ones = np.ones((1, is_none.size), np.int32)
    aurocs = {name: float(mann_whitney_auc(tied_groups(is_none, scores[name], ones))[0])
              for name in DETECTORS if name in scores}
    defined = {name: a for name, a in aurocs.items() if np.isfinite(a)}
    pool = defined or aurocs
    return max(pool, key=lambda name: (pool[name], -DETECTORS.index(name)))


def fit_posthoc(probs, labels, seen_mask, *, embedding_scores=None,
                detectors=OUTPUT_DETECTORS) -> PostHoc:
    """Every fit of one member on its selection rows: temperature and vector scaling, the
    threshold, the best "none" detector.

    Args:
      embedding_scores: {name: score [N]} of EMBEDDING_DETECTORS on these rows, if computed.
      detectors: the output detectors that may be chosen (a softmax head has no logits).
    """
    check_inputs(probs, labels, seen_mask, where="fit_posthoc")
    scores = {k: v for k, v in output_scores(probs, seen_mask).items() if k in detectors}
    scores.update(embedding_scores or {})
    return PostHoc(temperature=fit_temperature(probs, labels, seen_mask),
                   vector=fit_vector_scaling(probs, labels, seen_mask),
                   threshold=choose_threshold(probs, labels, seen_mask),
                   detector=best_detector(labels, seen_mask, scores))
