""""None" detectors: scores that rise on rows of classes the model never trained on, and
`detection_metrics`, their AUROC, AUPR and FPR at 95% TPR under per-row weights.

From a member's outputs (logits by `sigmoid_logits`), the usual baselines of the open-set
literature (as in OpenOOD and pytorch-ood):
- "msp": 1 - the highest seen-class probability (Hendrycks & Gimpel, 2017); the "none" column of
  Table 1's one-vs-rest problem and the confidence the threshold rule reads.
- "max_logit": minus the highest seen-class logit (Hendrycks et al., 2022).
- "energy": minus the joint energy of the seen classes' sigmoids, -sum_k softplus(z_k), the
  energy score of sigmoid (multi-label) outputs (Wang et al., 2021).
From the embeddings, the same for every member of a trial (they read the inputs, not a model):
- "mahalanobis": the smallest squared Mahalanobis distance to a seen class's mean of the training
  rows, under their pooled within-class covariance (Lee et al., 2018), shrunk towards a multiple
  of the identity by the Ledoit-Wolf rule, as the training rows are often fewer than dimensions.
- "knn": the Euclidean distance from the L2-normalised embedding to its KNN_K-th nearest
  L2-normalised training row (Sun et al., 2022).
"""

from __future__ import annotations

import numpy as np

from embaug_jax.evaluate.inputs import sigmoid_logits
from embaug_jax.evaluate.roc import (average_precision, fpr_at_tpr, mann_whitney_auc,
                                     none_score, swap_classes, tied_groups)

OUTPUT_DETECTORS = ("msp", "max_logit", "energy")
EMBEDDING_DETECTORS = ("mahalanobis", "knn")
DETECTORS = OUTPUT_DETECTORS + EMBEDDING_DETECTORS
KNN_K = 5  # fixed, not tuned on validation rows: ~20 training rows per class in the demo
_BLOCK_ROWS = 4096  # query rows per distance block: bounds the [rows, training rows] matrix


class NoWithinClassSpread(ValueError):
    """The training rows do not vary within any class: no covariance for a Mahalanobis
    distance."""


def detector_keys(name: str) -> dict[str, str]:
    """The scalar metric names of detector `name`: {"auroc": ..., "aupr": ...,
    "fpr_at_95_tpr": ...}; "msp" keeps the report's "none" names (none_auroc, ...)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose from {DETECTORS}.")
    prefix = "none" if name == "msp" else name
    return {m: f"{prefix}_{m}" for m in ("auroc", "aupr", "fpr_at_95_tpr")}


def output_scores(probs, seen_mask, logits=None) -> dict[str, np.ndarray]:
    """The output detectors' "none" scores [N] of one member, by name (OUTPUT_DETECTORS).

    Args:
      logits: `sigmoid_logits(probs)` when the caller has it already.
    """
    seen_mask = np.asarray(seen_mask, bool)
    if not seen_mask.any():
        raise ValueError("output_scores: seen_mask has no seen class, so nothing is detected.")
    z = (sigmoid_logits(probs) if logits is None else np.asarray(logits))[:, seen_mask]
    return dict(msp=none_score(np.asarray(probs), seen_mask), max_logit=-z.max(axis=1),
                energy=-np.logaddexp(0.0, z).sum(axis=1))


def detection_metrics(is_none, score, weights, *, target_tpr: float = 0.95,
                      seen_aupr: bool = False) -> dict[str, np.ndarray]:
    """How well `score` separates "none" rows (positives) from seen rows, per weighting.

    Returns:
      {"auroc", "aupr" ("none" positive), "fpr_at_95_tpr"} and, with `seen_aupr`, "aupr_seen"
      (seen rows positive, the score negated): float64 [B] each, NaN where a weighting lacks
      "none" or seen rows.
    """
    groups = tied_groups(is_none, score, weights)
    out = dict(auroc=mann_whitney_auc(groups), aupr=average_precision(groups),
               fpr_at_95_tpr=fpr_at_tpr(groups, target_tpr))
    if seen_aupr:
        out["aupr_seen"] = average_precision(swap_classes(groups))
    return out


# --------------------------------------------------------------------------------------------
# Distances to the training rows' embeddings
# --------------------------------------------------------------------------------------------


def _check_rows(train_x, train_labels, x, where: str):
    train_x, x = np.asarray(train_x), np.asarray(x)
    if train_x.ndim != 2 or x.ndim != 2 or train_x.shape[1] != x.shape[1]:
        raise ValueError(f"{where}: need training rows [n, D] and query rows [N, D] of one D, "
                         f"got {train_x.shape} and {x.shape}.")
    if train_labels is not None and np.shape(train_labels) != (train_x.shape[0],):
        raise ValueError(f"{where}: {np.shape(train_labels)} labels for {train_x.shape[0]} "
                         "training rows.")
    for name, rows in (("training", train_x), ("query", x)):
        if rows.shape[0] == 0:
            raise ValueError(f"{where}: no {name} rows.")
        if not np.isfinite(rows).all():
            raise ValueError(f"{where}: the {name} embeddings hold NaN or Inf.")
    return train_x, x


def ledoit_wolf(centred) -> tuple[float, float]:
    """The Ledoit-Wolf shrinkage of rows already centred: (rho, mu), the covariance estimate
    being (1 - rho) S + rho mu I with S = centred^T centred / n and mu = trace(S) / D.

    rho = min(1, b^2 / d^2): d^2 = ||S - mu I||_F^2 and b^2 = sum_k ||x_k x_k^T - S||_F^2 / n^2,
    both through the smaller of the [n, n] and [D, D] Gram matrices.
    """
    centred = np.asarray(centred, np.float64)
    n, dim = centred.shape
    sq_norms = np.einsum("nd,nd->n", centred, centred)
    mu = sq_norms.sum() / (n * dim)
    gram = centred @ centred.T if n <= dim else centred.T @ centred
    s_frob2 = np.sum(gram ** 2) / n ** 2  # ||S||_F^2: both Gram matrices share it
    d2 = s_frob2 - dim * mu ** 2
    b2 = min((np.sum(sq_norms ** 2) - n * s_frob2) / n ** 2, d2)
    return (float(max(b2, 0.0) / d2) if d2 > 0 else 1.0), float(mu)


def mahalanobis_scores(train_x, train_labels, x) -> np.ndarray:
    """Each query row's smallest squared Mahalanobis distance to a training class mean [N].

    The covariance is the training rows' pooled within-class one, Ledoit-Wolf shrunk
    (`ledoit_wolf`): its eigenvectors are those of the within-class deviations (from the
    smaller Gram matrix), with variance (1 - rho) s_j^2 / n + rho mu along each and rho mu off
    their span (its least in-span variance if rho is 0). float64; every class present in
    `train_labels` has a mean.
    """
    train_x, x = _check_rows(train_x, train_labels, x, "mahalanobis_scores")
    train_x = np.asarray(train_x, np.float64)
    origin = train_x.mean(axis=0)
    train_x = train_x - origin
    classes, inverse = np.unique(np.asarray(train_labels), return_inverse=True)
    means = np.zeros((classes.size, train_x.shape[1]))
    np.add.at(means, inverse, train_x)
    means /= np.bincount(inverse)[:, None]
    centred = train_x - means[inverse]
    n, dim = centred.shape
    rho, mu = ledoit_wolf(centred)
    if mu == 0:
        raise NoWithinClassSpread("mahalanobis_scores: the training rows do not vary within "
                                  "any class, so no covariance can be estimated.")
    if n <= dim:
        eigval, u = np.linalg.eigh(centred @ centred.T)
        keep = eigval > eigval.max() * 1e-12
        basis = (u[:, keep].T @ centred) / np.sqrt(eigval[keep])[:, None]  # [r, D] orthonormal
    else:
        eigval, v = np.linalg.eigh(centred.T @ centred)
        keep = eigval > eigval.max() * 1e-12
        basis = v[:, keep].T
    variance = (1 - rho) * eigval[keep] / n + rho * mu
    # Off the span of the deviations the shrunk covariance is rho * mu. Unshrunk (rho = 0),
    # nothing lies off a full-rank span, and a rank-deficient one is given its least variance.
    off_span = rho * mu if rho > 0 else variance.min()
    m_proj = means @ basis.T
    m_sq = np.einsum("kd,kd->k", means, means)
    scores = []
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        q = np.asarray(x[start:start + _BLOCK_ROWS], np.float64) - origin
        q_proj = q @ basis.T
        # ||P(q - m)||^2 / variance plus ||(1 - P)(q - m)||^2 / off_span, expanded so the
        # [rows, classes] terms are matrix products.
        in_span = (np.einsum("nr,nr->n", q_proj / variance, q_proj)[:, None]
                   - 2 * (q_proj / variance) @ m_proj.T
                   + np.einsum("kr,kr->k", m_proj / variance, m_proj)[None, :])
        full = (np.einsum("nd,nd->n", q, q)[:, None] - 2 * q @ means.T + m_sq[None, :])
        proj = (np.einsum("nr,nr->n", q_proj, q_proj)[:, None] - 2 * q_proj @ m_proj.T
                + np.einsum("kr,kr->k", m_proj, m_proj)[None, :])
        distance = in_span + np.maximum(full - proj, 0.0) / off_span
        scores.append(distance.min(axis=1))
    return np.maximum(np.concatenate(scores), 0.0)


def knn_scores(train_x, x, *, k: int = KNN_K) -> np.ndarray:
    """Each query row's Euclidean distance to its k-th nearest training row, both L2-normalised
    (float64 [N]; the similarities are float32 matrix products)."""
    train_x, x = _check_rows(train_x, None, x, "knn_scores")
    if not 1 <= int(k) <= train_x.shape[0]:
        raise ValueError(f"knn_scores: k={k} needs 1 <= k <= the {train_x.shape[0]} training "
                         "rows.")
    k = int(k)

    def unit(rows):
        rows = np.asarray(rows, np.float32)
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)

    train_unit = unit(train_x)
    scores = []
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        similarity = unit(x[start:start + _BLOCK_ROWS]) @ train_unit.T
        kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]
        scores.append(np.sqrt(np.maximum(2.0 - 2.0 * kth.astype(np.float64), 0.0)))
    return np.concatenate(scores)
