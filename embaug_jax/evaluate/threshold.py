"""Accuracy against a confidence threshold (paper sec. 3.5; Figures 3 and 5), defined once.

`threshold_counts` applies the paper's rule to every row and sums its outcomes under per-row
weights; `accuracies` divides those sums. The pair serves every caller: the training program on
device (jnp inside jit/vmap, a traced threshold, a padded block's validity mask as the weights),
the report's plain evaluation (`threshold_accuracy`, `threshold_sweep`: weights 1) and the
bootstrap (numpy, row counts [B, N] as the weights).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from embaug_jax.evaluate.inputs import array_namespace, check_inputs, top_seen_prediction

# Figure 3's thresholds: np.arange(0.05, 0.951, 0.05) rounded, so 0.15 prints as 0.15 and not
# 0.15000000000000002.
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
# What `threshold_counts` sums, in order.
COUNT_NAMES = ("correct", "correct_none", "none", "correct_seen", "seen")


def check_threshold(threshold, name: str = "threshold") -> float:
    """`threshold` as a float; ValueError unless 0 < threshold < 1 (the one check of the value,
    for the config and the Python API alike)."""
    value = float(threshold)
    if not 0 < value < 1:  # NaN fails too
        raise ValueError(f"{name}={threshold} must lie in (0, 1): a prediction stands when its "
                         "probability is higher, otherwise it is \"none\" (sec. 3.5; the paper "
                         "uses 0.6).")
    return value


def threshold_counts(probs, labels, seen_mask, threshold, weights):
    """The paper's rule on every row, its outcomes summed under per-row `weights`.

    The predicted class is the argmax over the seen classes (a tie goes to the lowest class id,
    as `argmax`); its probability must be strictly *higher than* `threshold` (the paper's
    words), otherwise the prediction is "none": a probability exactly equal to the threshold
    predicts "none". An example is correct iff its class is seen and predicted, or its class is
    unseen and "none" is predicted.

    jnp or numpy, following the inputs. Under jnp (jit- and vmap-able, `threshold` may be
    traced) the sums are int32, so `weights` [N] may be a padded block's bool validity mask;
    under numpy they are int64 over integer `weights` [N] or [B, N].

    Returns:
      int [..., 5]: the weighted numbers of COUNT_NAMES (correct rows, correct "none" rows,
      "none" rows, correct seen rows, seen rows); the leading axes are those of `weights`.
    """
    xp = array_namespace(probs, labels, seen_mask, threshold, weights)
    seen_mask = xp.asarray(seen_mask, bool)
    predicted, confidence = top_seen_prediction(probs, seen_mask)
    predicted_none = ~(confidence > xp.asarray(threshold, confidence.dtype))
    truth_seen = seen_mask[labels]
    correct_none = ~truth_seen & predicted_none
    correct_seen = truth_seen & ~predicted_none & (predicted == labels)
    outcomes = xp.stack([correct_none | correct_seen, correct_none, ~truth_seen, correct_seen,
                         truth_seen], axis=-1)
    if xp is np:
        # A matrix product: broadcasting would hold [B, N, 5] in memory at once.
        return np.asarray(weights, np.int64) @ outcomes.astype(np.int64)
    return jnp.sum(jnp.asarray(weights, jnp.int32)[..., None] * outcomes, axis=-2,
                   dtype=jnp.int32)


def accuracies(counts) -> dict:
    """Overall, "none" and seen accuracy from `threshold_counts` sums [..., 5].

    Returns:
      dict(overall=, none=, seen=), each NaN where it has no rows: `none` is the accuracy over
      the "none" examples (the fraction of unseen-class examples predicted "none") and is NaN
      when there is no unseen-class example; `seen` is the accuracy over the other examples.
      float32 under jnp (the device's learning curves), float64 under numpy: an integer ratio
      either way, so the float32 value is the float64 one rounded.
    """
    xp = array_namespace(counts)
    correct, correct_none, none, correct_seen, seen = (counts[..., i] for i in range(5))

    def ratio(hits, rows):
        return xp.where(rows > 0, hits / xp.maximum(rows, 1), xp.nan)

    return dict(overall=ratio(correct, none + seen), none=ratio(correct_none, none),
                seen=ratio(correct_seen, seen))


def threshold_accuracy(probs, labels, seen_mask, threshold):
    """Overall, "none" and seen accuracy at a confidence threshold (sec. 3.5), every row once.

    `accuracies(threshold_counts(..., weights=1))` in jnp: jit- and vmap-able over members and
    thresholds alike (`threshold` may be a traced scalar).

    Returns:
      dict(overall=, none=, seen=) float32 scalars, as `accuracies`.
    """
    check_inputs(probs, labels, seen_mask, where="threshold_accuracy")
    return _threshold_accuracy(jnp.asarray(probs), jnp.asarray(labels),
                               jnp.asarray(seen_mask, bool), jnp.asarray(threshold))


@jax.jit
def _threshold_accuracy(probs, labels, seen_mask, threshold):
    weights = jnp.ones(labels.shape, jnp.int32)
    return accuracies(threshold_counts(probs, labels, seen_mask, threshold, weights))


def threshold_sweep(probs, labels, seen_mask, thresholds=THRESHOLDS):
    """`threshold_accuracy` at every threshold (Figure 3).

    Returns:
      dict(thresholds=[T], overall=[T], none=[T], seen=[T]).
    """
    thresholds = jnp.asarray(thresholds)
    if thresholds.ndim != 1 or thresholds.shape[0] == 0:
        raise ValueError(f"threshold_sweep: thresholds must be a non-empty 1-D array, got shape "
                         f"{thresholds.shape}.")
    check_inputs(probs, labels, seen_mask, where="threshold_sweep")
    out = _threshold_sweep(jnp.asarray(probs), jnp.asarray(labels),
                           jnp.asarray(seen_mask, bool), thresholds)
    return dict(thresholds=thresholds, **out)


@jax.jit
def _threshold_sweep(probs, labels, seen_mask, thresholds):
    # The argmax does not depend on the threshold, so vmap leaves it unbatched: computed once.
    return jax.vmap(_threshold_accuracy, in_axes=(None, None, None, 0))(
        probs, labels, seen_mask, thresholds)
