"""What every metric takes, checked once: a member's outputs, its labels, and per-row weights.

- `probs` float [N, C]: sigmoid outputs over ALL classes of the dataset.
- `labels` int [N]: true class ids in [0, C).
- `seen_mask` bool [C]: the classes present in the training split. An example whose class is
  unseen is a "none" example; predictions ignore unseen classes (their columns are masked out
  before any max / argmax), exactly as if the classifier had never had those outputs.
- `weights` int [B, N]: how often each row counts, in each of B weightings. Every metric is a
  sum over rows, so one definition serves plain evaluation (weights 1, B = 1), bootstrap
  resamples (row counts) and, on device, a padded block (its bool validity mask [N]).

The sweep stores probabilities, not logits: `sigmoid_logits` inverts the sigmoid for the metrics
that need logits (max-logit and energy detectors, post-hoc scaling, the NLL).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from embaug_jax.util import is_traced, list_first


def array_namespace(*arrays):
    """`jnp` when any argument is a JAX array or tracer (the device path), else `numpy`."""
    return jnp if any(isinstance(a, jax.Array) or is_traced(a) for a in arrays) else np


def check_inputs(probs, labels, seen_mask, *, where: str) -> None:
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


def check_weights(weights, num_rows: int, *, where: str) -> np.ndarray:
    """`weights` as a numpy integer array [B, num_rows]; ValueError unless it is one."""
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] != num_rows:
        raise ValueError(f"{where}: counts must be [B, N] = [B, {num_rows}], got shape "
                         f"{weights.shape}.")
    if not np.issubdtype(weights.dtype, np.integer) or (weights < 0).any():
        raise ValueError(f"{where}: counts must be non-negative integers (how often each row "
                         "is drawn); build them with bootstrap_counts.")
    return weights


def unit_weights(num_rows: int) -> np.ndarray:
    """The weights of plain evaluation: every row once, one weighting ([1, num_rows])."""
    return np.ones((1, int(num_rows)), np.int32)


def top_seen_prediction(probs, seen_mask):
    """Returns (predicted class [N], its probability [N]) over the seen classes only.

    jnp or numpy, following the inputs. With no seen class at all the confidence is -inf, so
    every example is predicted "none".
    """
    xp = array_namespace(probs, seen_mask)
    masked = xp.where(xp.asarray(seen_mask, bool)[None, :], probs, -xp.inf)
    return xp.argmax(masked, axis=-1), xp.max(masked, axis=-1)


def sigmoid_logits(probs) -> np.ndarray:
    """The logits behind sigmoid outputs, log p - log(1 - p), as float64 numpy [N, C].

    Stored outputs saturate in their dtype: float32 rounds every logit above ~16.64 to p = 1.0,
    which has no finite logit, and underflows below ~-87.3 (p subnormal or 0). So each
    probability is first clipped to [the smallest normal number, the largest number below 1]
    of its dtype: a saturated output reads as the most extreme logit that dtype tells apart
    (+16.64 and -87.34 for float32; float32 resolves logits above ~10 only coarsely, its steps
    below 1 being 2^-24). The true logit of a saturated output lies beyond that value, and all
    saturated outputs tie, as their probabilities already do.
    """
    probs = np.asarray(probs)
    dtype = probs.dtype if np.issubdtype(probs.dtype, np.floating) else np.dtype(np.float64)
    top = np.nextafter(dtype.type(1), dtype.type(0))
    p = np.clip(probs.astype(np.float64), float(np.finfo(dtype).tiny), float(top))
    return np.log(p) - np.log1p(-p)
