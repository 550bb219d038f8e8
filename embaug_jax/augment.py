"""The paper's embedding augmentations (sections 2.2-2.4) as pure JAX functions.

Two forms of the same mathematics:

* Named functions -- `e_mixup`, `e_stitchup`, `soft_e_mixup`, `soft_e_stitchup`, `control` and
  `soften_labels` -- and `METHODS`, which puts the five methods behind one signature.
* A traced form -- `MethodParams`, `method_params`, `augment_batch` -- in which the method itself,
  alpha and softness are arrays, every method returns the same shapes, and so one compiled program
  (and one `jax.vmap` over sweep members) serves every method and hyperparameter. For the same key
  it returns what the named function returns.

Pairing. A mixing method combines a first parent `a` with a second parent `b`:
  "halve"   (the paper) shuffles the batch and pairs its first half with its second: B/2 outputs,
            every example used exactly once. B must be even.
  "permute" pairs every example (as `a`) with a partner drawn uniformly from the other B - 1
            examples (never itself; a row may be a partner several times): B outputs.
  "flip"    pairs row i with row B - 1 - i (no randomness in the pairing): B outputs. For odd B
            the middle row is paired with itself, so it comes out as it went in (up to rounding
            in mixup) with its own label.

One lambda ~ Beta(alpha, alpha) is drawn per pair; lambda is the weight of parent `a` in the
embedding (mixup: `lam * x_a + (1 - lam) * x_b`; stitchup: each element comes from `x_a` with
probability lam) and in the label (`lam * y_a + (1 - lam) * y_b`). `1 - lam` is computed without
cancellation (see `sample_lambda`), so near-one-sided pairs treat both parents alike.

Segments. `segments=(n1, n2, ...)` treats x as the concatenation of segments of those sizes (e.g.
title | description | image) and draws an independent lambda per segment (stitchup: an independent
mask rate). The label is then mixed by the size-weighted mean of the segment lambdas, i.e. by the
average over coordinates of parent `a`'s per-coordinate weight. That is the expected share of the
vector that comes from `a` (the same quantity "realized" measures exactly in stitchup), and it
reduces to the paper's rule when every segment draws the same lambda.

Labels. `y` is either [B, C] float (one-hot or already soft; its dtype is kept) or [B] integer
class ids with `num_classes=` given (they become float32 one-hot: targets stay float32 even for
bfloat16 embeddings, where e.g. 0.1 is not representable). Embeddings keep their dtype; bfloat16 is
mixed in float32 and rounded once.

Validation. Shapes, ranks and names are checked always. Values (alpha > 0, softness in [0, 1),
labels in [0, num_classes), finite inputs) can only be checked on concrete arrays: under
`jax.jit`/`jax.vmap` tracing they are not, so a traced alpha <= 0 yields NaN, a traced
out-of-range class id an all-zero label row and a traced method index outside {0, 1, 2} acts
as mixup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from embaug_jax.util import is_traced

__all__ = [
    "KINDS",
    "KIND_OF_METHOD",
    "LABEL_WEIGHTS",
    "METHODS",
    "METHOD_NAMES",
    "MIX_CONTROL",
    "MIX_MIXUP",
    "MIX_STITCHUP",
    "MethodParams",
    "PAIRINGS",
    "UnknownMethodError",
    "augment_batch",
    "augment_rows",
    "control",
    "draw_weights",
    "e_mixup",
    "e_stitchup",
    "kind_rows",
    "method_params",
    "num_outputs",
    "sample_lambda",
    "soft_e_mixup",
    "soft_e_stitchup",
    "soften_labels",
]

PAIRINGS = ("halve", "permute", "flip")
LABEL_WEIGHTS = ("lambda", "realized")

# Values of `MethodParams.mix`: the branch index of `lax.switch` in `augment_batch`.
MIX_CONTROL, MIX_MIXUP, MIX_STITCHUP = 0, 1, 2
# Manifold mixup (an ablation baseline) mixes inside the model, so only the training engine
# runs it (`augment_rows(..., kind="manifold")` gives it its pairs); `augment_batch` refuses it.
MIX_MANIFOLD = 3
# Each method as (mix, soft), in the paper's Table-1 order: the one list of the method names.
_MIX_OF_METHOD = {
    "control": (MIX_CONTROL, False),
    "e_mixup": (MIX_MIXUP, False),
    "e_stitchup": (MIX_STITCHUP, False),
    "soft_e_mixup": (MIX_MIXUP, True),
    "soft_e_stitchup": (MIX_STITCHUP, True),
}
METHOD_NAMES = tuple(_MIX_OF_METHOD)
# The ablation baselines likewise (see "Ablation baselines" below): the control's rows with a
# traced transform (soft, smoothing, noise_std, drop_rate; each a no-op at its zero), and
# manifold mixup.
_MIX_OF_BASELINE = {
    "soft_control": (MIX_CONTROL, True),
    "label_smoothing": (MIX_CONTROL, False),
    "gaussian_noise": (MIX_CONTROL, False),
    "feature_dropout": (MIX_CONTROL, False),
    "manifold_mixup": (MIX_MANIFOLD, False),
}

# Stitchup compares 16-bit uniforms with a per-row threshold: one 32-bit random word serves two
# elements, which halves the threefry work that dominates stitchup's run time (see
# benchmarks/README.md, section "augment").
_MASK_BITS = 16
_MASK_SCALE = float(1 << _MASK_BITS)


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _holds(check: Callable[[jax.Array], jax.Array], value: Any) -> bool:
    """Evaluates `check` on a concrete array right away, even while an outer jit traces (where
    `value` is a closed-over constant); True for traced values, which cannot be checked."""
    if is_traced(value):
        return True
    with jax.ensure_compile_time_eval():
        return bool(check(jnp.asarray(value)))


def _check_key(key: Any) -> None:
    """A plain integer seed is not a key: say how to make one instead of JAX's shape error."""
    if isinstance(key, (int, np.integer)) or (
            hasattr(key, "dtype") and np.ndim(key) == 0
            and not jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise TypeError(f"key must be a JAX PRNG key, got the plain integer {key!r}; pass "
                        f"jax.random.key({key!r}) (and split it for each call).")


def _check_name(kind: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(
            f"unknown {kind} {value!r}; use one of {', '.join(repr(a) for a in allowed)}"
        )


def _check_alpha(alpha: Any) -> None:
    if np.ndim(alpha) != 0:
        raise ValueError(
            f"alpha must be a scalar (one Beta(alpha, alpha) for the batch), got shape "
            f"{np.shape(alpha)}; vmap over alphas instead of passing an array"
        )
    if not is_traced(alpha):
        a = float(np.asarray(alpha))
        if not (math.isfinite(a) and a > 0):
            raise ValueError(
                f"alpha must be a finite number > 0 (Beta(alpha, alpha) needs it), got {a}; "
                "the paper uses alpha in (0, 0.5]"
            )


def _check_softness(softness: Any, negative_mass: Any) -> None:
    if np.ndim(softness) != 0:
        raise ValueError(f"softness must be a scalar, got shape {np.shape(softness)}")
    if not is_traced(softness):
        s = float(np.asarray(softness))
        if not (0.0 <= s < 1.0):
            raise ValueError(
                f"softness must lie in [0, 1), got {s}; it is subtracted from every positive "
                "class (the paper uses 0.05)"
            )
    if negative_mass is not None:
        if np.ndim(negative_mass) != 0:
            raise ValueError(f"negative_mass must be a scalar or None, got shape {np.shape(negative_mass)}")
        if not is_traced(negative_mass):
            m = float(np.asarray(negative_mass))
            if not (math.isfinite(m) and m >= 0):
                raise ValueError(
                    f"negative_mass must be a finite number >= 0 or None (mass-conserving), got {m}"
                )


def _check_x(x: Any) -> jax.Array:
    raw, x = x, jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be a [batch, dim] array of embeddings, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"x must be floating point, got {x.dtype}; cast it, e.g. x.astype(jnp.float32)"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must be non-empty, got shape {x.shape}")
    if not _holds(lambda v: jnp.isfinite(v).all(), raw):
        raise ValueError("x contains NaN or Inf; clean or drop those embeddings first")
    return x


def _labels_to_float(y: Any, batch: int, num_classes: int | None) -> jax.Array:
    """Returns [B, C] float labels from [B] integer ids or [B, C] float labels, validating them."""
    raw, y = y, jnp.asarray(y)
    if y.ndim == 0 or y.shape[0] != batch:
        raise ValueError(
            f"x and y disagree on the batch size: x has {batch} rows, y has shape {y.shape}; "
            "pass one label (row) per embedding"
        )
    if jnp.issubdtype(y.dtype, jnp.integer):
        if y.ndim != 1:
            raise ValueError(
                f"integer labels must be [batch] class ids, got shape {y.shape}; pass [B, C] "
                "labels as floats"
            )
        if num_classes is None:
            raise ValueError(
                "integer labels need num_classes=C to build one-hot targets; pass num_classes "
                "or [B, C] float labels"
            )
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not _holds(lambda v: (v >= 0).all() & (v < num_classes).all(), raw):
            with jax.ensure_compile_time_eval():
                lo, hi = int(jnp.min(jnp.asarray(raw))), int(jnp.max(jnp.asarray(raw)))
            raise ValueError(
                f"labels must lie in [0, num_classes={num_classes}), got values in "
                f"[{lo}, {hi}]; fix the labels or raise num_classes"
            )
        return jax.nn.one_hot(y, int(num_classes), dtype=jnp.float32)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise ValueError(f"labels must be integer class ids or float [B, C], got dtype {y.dtype}")
    if y.ndim != 2:
        raise ValueError(
            f"float labels must be [batch, classes], got shape {y.shape}; pass integer class "
            "ids with num_classes= for [batch] labels"
        )
    if num_classes is not None and y.shape[1] != num_classes:
        raise ValueError(
            f"labels have {y.shape[1]} classes but num_classes={num_classes}; make them agree"
        )
    if not _holds(lambda v: jnp.isfinite(v).all(), raw):
        raise ValueError("labels contain NaN or Inf")
    if not _holds(lambda v: (v >= 0).all(), raw):
        raise ValueError("labels must be >= 0 (class probabilities), found negative entries")
    return y


def _check_segments(segments: Sequence[int] | None, dim: int) -> tuple[int, ...] | None:
    if segments is None:
        return None
    try:
        sizes = tuple(int(s) for s in segments)
    except TypeError as err:
        raise ValueError(
            f"segments must be a sequence of segment sizes like (384, 384, 1280), got {segments!r}"
        ) from err
    if not sizes or any(s <= 0 for s in sizes) or any(int(s) != s for s in segments):
        raise ValueError(f"segments must be positive integer sizes, got {segments!r}")
    if sum(sizes) != dim:
        raise ValueError(
            f"segments {sizes} sum to {sum(sizes)} but the embeddings have dim {dim}; the sizes "
            "must add up to the embedding width"
        )
    return sizes


def _check_batch(batch: int, pairing: str) -> None:
    if pairing == "halve" and (batch % 2 or batch < 2):
        raise ValueError(
            f'pairing="halve" pairs the first half of the batch with the second, so the batch '
            f"size must be even, got {batch}; use an even batch size or "
            'pairing="permute"/"flip"'
        )
    if pairing == "permute" and batch < 2:
        raise ValueError('pairing="permute" needs at least 2 examples to pair each with another')


def _check_class_mask(class_mask: Any, num_classes: int) -> jax.Array | None:
    if class_mask is None:
        return None
    class_mask = jnp.asarray(class_mask)
    if class_mask.dtype != jnp.bool_:
        raise ValueError(
            f"class_mask must be a boolean array (True = valid class), got dtype "
            f"{class_mask.dtype}; build it with e.g. jnp.zeros(C, bool).at[valid_ids].set(True)"
        )
    if class_mask.ndim == 0 or class_mask.shape[-1] != num_classes:
        raise ValueError(
            f"class_mask must have {num_classes} classes in its last axis, got shape "
            f"{class_mask.shape}"
        )
    return class_mask


def num_outputs(batch: int, pairing: str = "halve") -> int:
    """Rows a mixing method returns for a batch of `batch` examples (B/2 under "halve", else B)."""
    _check_name("pairing", pairing, PAIRINGS)
    _check_batch(batch, pairing)
    return batch // 2 if pairing == "halve" else batch


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def sample_lambda(key: jax.Array, alpha: Any, shape: Sequence[int] = (), *, complement: bool = False):
    """Draws float32 mixing weights lam ~ Beta(alpha, alpha), as `jax.random.beta` does.

    lam = G_a / (G_a + G_b) from two Gamma(alpha) variates taken in log space, so small alphas
    (0.1, 0.2: U-shaped, most mass near 0 and 1) are sampled accurately. Near 1, though, float32
    cannot hold lam precisely (at alpha = 0.1 about 10% of draws lie within 6e-8 of 1 and round
    to 1.0), and `1 - lam` would then be exactly 0 where it should be tiny; so with
    `complement=True` this also returns 1 - lam computed as G_b / (G_a + G_b), accurate at both
    ends. The mixing methods weight the second parent by it, which keeps them symmetric in a/b.

    A concrete `alpha` must be > 0; a traced one is not checked.

    Returns:
      lam [shape] float32, or (lam, 1 - lam) if `complement`.
    """
    _check_key(key)
    if not is_traced(alpha):
        a = np.asarray(alpha, dtype=np.float64)
        if not (np.isfinite(a).all() and (a > 0).all()):
            raise ValueError(f"alpha must be finite and > 0 for Beta(alpha, alpha), got {alpha}")
    shape = tuple(shape)
    alpha = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), shape)
    key_a, key_b = jax.random.split(key)
    log_gamma_a = jax.random.loggamma(key_a, alpha, shape, jnp.float32)
    log_gamma_b = jax.random.loggamma(key_b, alpha, shape, jnp.float32)
    log_max = jnp.maximum(log_gamma_a, log_gamma_b)
    gamma_a = jnp.exp(log_gamma_a - log_max)
    gamma_b = jnp.exp(log_gamma_b - log_max)
    lam = gamma_a / (gamma_a + gamma_b)
    if complement:
        return lam, gamma_b / (gamma_a + gamma_b)
    return lam


def _parents(key: jax.Array, take: Callable, batch: int, pairing: str):
    """Returns ((x_a, y_a), (x_b, y_b)): the parents of every output row.

    `take(rows)` returns (x[rows], y[rows]) for an index array or a slice, so a caller can gather
    the parents straight from a larger array (the training engine composes its batch indices
    with the pairing and gathers once instead of twice).
    """
    if pairing == "halve":
        perm = jax.random.permutation(key, batch)
        half = batch // 2
        return take(perm[:half]), take(perm[half:])
    if pairing == "permute":
        # A uniform offset in [1, B) makes the partner uniform over the other B - 1 rows.
        offset = jax.random.randint(key, (batch,), 1, batch)
        return take(slice(None)), take((jnp.arange(batch) + offset) % batch)
    return take(slice(None)), take(slice(None, None, -1))


def _take_from(x: jax.Array, y: jax.Array) -> Callable:
    return lambda rows: (x[rows], y[rows])


def _per_coordinate(values: jax.Array, sizes: tuple[int, ...] | None, dim: int) -> jax.Array:
    """Broadcasts per-segment values [P, S] to per-coordinate [P, D] (or [P, 1] without segments)."""
    if sizes is None:
        return values
    return jnp.repeat(values, np.asarray(sizes), axis=1, total_repeat_length=dim)


def _segment_mean(values: jax.Array, sizes: tuple[int, ...] | None) -> jax.Array:
    """Size-weighted mean over segments: [P, S] -> [P] (exactly values[:, 0] without segments)."""
    if sizes is None:
        return values[:, 0]
    weights = jnp.asarray(sizes, jnp.float32) / sum(sizes)
    # A sum, not `values @ weights`: matmuls may run at reduced precision on accelerators.
    return jnp.sum(values * weights, axis=1)


def _stitch_mask(key: jax.Array, lam: jax.Array, dim: int, sizes: tuple[int, ...] | None) -> jax.Array:
    """[P, D] bool, True where the element comes from parent `a`: P(True) = lam of its segment.

    A 16-bit uniform u per element is compared with t = floor(2^16 lam + U), U ~ U[0, 1) per row
    and segment. That stochastic rounding makes E[t] = 2^16 lam, so P(u < t) = lam exactly (not
    just to 2^-16), and t = 2^16 at lam = 1 takes every element from `a`.
    """
    pairs = lam.shape[0]
    k_bits, k_round = jax.random.split(key)
    threshold = jnp.floor(lam * _MASK_SCALE + jax.random.uniform(k_round, lam.shape))
    threshold = _per_coordinate(threshold.astype(jnp.uint32), sizes, dim)
    words = jax.random.bits(k_bits, (pairs, (dim + 1) // 2), jnp.uint32)
    uniform16 = jnp.concatenate([words & 0xFFFF, words >> 16], axis=1)[:, :dim]
    return uniform16 < threshold


def _mix(key, x, y, alpha, *, mode: str, pairing: str, label_weight: str, sizes):
    """Pairs, draws lambdas and mixes: the shared core of every mixing method (no checks)."""
    k_pair, k_lam, k_mask = jax.random.split(key, 3)
    pairs = x.shape[0] // 2 if pairing == "halve" else x.shape[0]
    shape = (pairs, 1 if sizes is None else len(sizes))
    lam_a, lam_b = _sample_weights(k_lam, jnp.asarray(alpha, jnp.float32), shape)
    return _mix_with(k_pair, k_mask, x, y, lam_a, lam_b, mode=mode, pairing=pairing,
                     label_weight=label_weight, sizes=sizes)


# Two compiled pieces rather than one: the Gamma sampler's rejection loops are slow to compile,
# and split off they compile once per shape instead of once per method and pairing. Under an
# outer jit both are inlined into one program.
@partial(jax.jit, static_argnames="shape")
def _sample_weights(key, alpha, shape):
    return sample_lambda(key, alpha, shape, complement=True)


@partial(jax.jit, static_argnames=("mode", "pairing", "label_weight", "sizes"))
def _mix_with(k_pair, k_mask, x, y, lam_a, lam_b, *, mode, pairing, label_weight, sizes):
    (x_a, y_a), (x_b, y_b) = _parents(k_pair, _take_from(x, y), x.shape[0], pairing)
    from_a = _stitch_mask(k_mask, lam_a, x.shape[1], sizes) if mode == "stitchup" else None
    return _combine(mode == "stitchup", x_a, x_b, y_a, y_b, lam_a, lam_b, from_a,
                    label_weight=label_weight, sizes=sizes)


def _combine(stitch, x_a, x_b, y_a, y_b, lam_a, lam_b, from_a, *, label_weight, sizes):
    """Mixes parents into (x_mix, y_mix): mixup where `stitch` is False, stitchup where True.

    `stitch` is a Python bool (one method: only its code is traced) or a traced bool scalar (the
    traced form: both expressions are computed in one fused elementwise pass and selected; the
    expensive random draws are not, see `_draws`). `from_a` is the stitchup mask (None: mixup).
    """
    dim = x_a.shape[1]
    compute = jnp.promote_types(x_a.dtype, jnp.float32)
    out = []
    if stitch is not True:
        coord_a = _per_coordinate(lam_a, sizes, dim).astype(compute)
        coord_b = _per_coordinate(lam_b, sizes, dim).astype(compute)
        x_mixup = (coord_a * x_a.astype(compute) + coord_b * x_b.astype(compute)).astype(x_a.dtype)
        out.append(x_mixup)
    if stitch is not False:
        out.append(jnp.where(from_a, x_a, x_b))
    x_mix = out[0] if len(out) == 1 else jnp.where(stitch, out[1], out[0])
    w_a, w_b = _segment_mean(lam_a, sizes), _segment_mean(lam_b, sizes)
    if label_weight == "realized" and stitch is not False:
        count_a = jnp.sum(from_a, axis=1, dtype=jnp.int32)
        w_a = jnp.where(stitch, count_a / dim, w_a)
        w_b = jnp.where(stitch, (dim - count_a) / dim, w_b)
    label_compute = jnp.promote_types(y_a.dtype, jnp.float32)
    w_a = w_a[:, None].astype(label_compute)
    w_b = w_b[:, None].astype(label_compute)
    y_mix = w_a * y_a.astype(label_compute) + w_b * y_b.astype(label_compute)
    return x_mix, y_mix.astype(y_a.dtype)


def _prepare(x, y, *, num_classes=None, pairing="halve", label_weight="lambda", segments=None):
    _check_name("pairing", pairing, PAIRINGS)
    _check_name("label_weight", label_weight, LABEL_WEIGHTS)
    x = _check_x(x)
    y = _labels_to_float(y, x.shape[0], num_classes)
    _check_batch(x.shape[0], pairing)
    sizes = _check_segments(segments, x.shape[1])
    return x, y, sizes


# --------------------------------------------------------------------------------------------
# The named augmentations
# --------------------------------------------------------------------------------------------


def soften_labels(y: Any, softness: Any = 0.05, negative_mass: Any = 1.0, *, class_mask: Any = None) -> jax.Array:
    """The paper's label softening (section 2.4).

    Subtracts `softness` from every positive class (clamped at 0) and spreads `negative_mass`
    evenly over the classes that were exactly 0. `negative_mass=None` conserves mass: the zero
    classes share exactly what was removed, so a distribution stays one. A row with no zero class
    has nowhere to put the mass and loses it.

    Args:
      y: [..., C] float labels (one-hot or mixed); dtype kept.
      softness: scalar in [0, 1), may be traced. The paper adds the negative mass even at 0.
      negative_mass: total mass for the zero classes (the paper: 1.0, the binomial output lets
        the target sum exceed one), or None for the mass-conserving variant.
      class_mask: optional bool [C] (or broadcastable [..., C]); negative mass goes only to valid
        zero classes, so invalid classes (e.g. unseen in this split) stay exactly 0.
    """
    y = jnp.asarray(y)
    if y.ndim < 1 or not jnp.issubdtype(y.dtype, jnp.floating):
        raise ValueError(
            f"soften_labels needs float labels [..., C], got {y.dtype} of shape {y.shape}; "
            "one-hot integer ids first (jax.nn.one_hot)"
        )
    _check_softness(softness, negative_mass)
    class_mask = _check_class_mask(class_mask, y.shape[-1])
    compute = jnp.promote_types(y.dtype, jnp.float32)
    yc = y.astype(compute)
    softness = jnp.asarray(softness, compute)
    positive = yc > 0
    softened = jnp.where(positive, jnp.maximum(yc - softness, 0), yc)
    receives = ~positive if class_mask is None else (~positive) & class_mask
    n_receive = jnp.sum(receives, axis=-1, keepdims=True, dtype=compute)
    if negative_mass is None:
        mass = jnp.sum(yc - softened, axis=-1, keepdims=True)
    else:
        mass = jnp.asarray(negative_mass, compute)
    share = mass / jnp.maximum(n_receive, 1)
    return jnp.where(receives, softened + share, softened).astype(y.dtype)


def e_mixup(key, x, y, alpha, *, pairing="halve", num_classes=None, segments=None):
    """E-Mixup (section 2.2): `x_mix = lam * x_a + (1 - lam) * x_b`, labels alike.

    Args:
      key: PRNG key.
      x: [B, D] float embeddings.
      y: [B, C] float labels, or [B] integer ids with `num_classes`.
      alpha: Beta(alpha, alpha) parameter, > 0 (may be traced).
      pairing: "halve" (B/2 outputs), "permute" or "flip" (B outputs); see the module docstring.
      segments: optional segment sizes summing to D: an independent lambda per segment.
    Returns:
      (x_mix [P, D] in x's dtype, y_mix [P, C] float).
    """
    _check_key(key)
    _check_alpha(alpha)
    x, y, sizes = _prepare(x, y, num_classes=num_classes, pairing=pairing, segments=segments)
    return _mix(key, x, y, alpha, mode="mixup", pairing=pairing, label_weight="lambda", sizes=sizes)


def e_stitchup(key, x, y, alpha, *, pairing="halve", label_weight="lambda", num_classes=None, segments=None):
    """E-Stitchup (section 2.3): each element from `x_a` with probability lam, else from `x_b`.

    Labels are mixed by lam (`label_weight="lambda"`, the paper) or by the fraction of elements
    actually taken from `x_a` (`"realized"`). Arguments as in `e_mixup`; with `segments` each
    segment has its own mask rate.
    """
    _check_key(key)
    _check_alpha(alpha)
    x, y, sizes = _prepare(
        x, y, num_classes=num_classes, pairing=pairing, label_weight=label_weight, segments=segments
    )
    return _mix(key, x, y, alpha, mode="stitchup", pairing=pairing, label_weight=label_weight, sizes=sizes)


def soft_e_mixup(key, x, y, alpha, *, softness=0.05, negative_mass=1.0, class_mask=None,
                 pairing="halve", num_classes=None, segments=None):
    """Soft E-Mixup (section 2.4): `e_mixup` followed by `soften_labels`."""
    _check_softness(softness, negative_mass)
    x_mix, y_mix = e_mixup(key, x, y, alpha, pairing=pairing, num_classes=num_classes, segments=segments)
    return x_mix, soften_labels(y_mix, softness, negative_mass, class_mask=class_mask)


def soft_e_stitchup(key, x, y, alpha, *, softness=0.05, negative_mass=1.0, class_mask=None,
                    pairing="halve", label_weight="lambda", num_classes=None, segments=None):
    """Soft E-Stitchup (section 2.4): `e_stitchup` followed by `soften_labels`."""
    _check_softness(softness, negative_mass)
    x_mix, y_mix = e_stitchup(
        key, x, y, alpha, pairing=pairing, label_weight=label_weight, num_classes=num_classes,
        segments=segments,
    )
    return x_mix, soften_labels(y_mix, softness, negative_mass, class_mask=class_mask)


def control(key, x, y, alpha=None, *, num_classes=None, **ignored):
    """The paper's control: no augmentation. Returns (x, y as float labels); key/alpha unused."""
    del key, alpha, ignored
    x = _check_x(x)
    return x, _labels_to_float(y, x.shape[0], num_classes)


def _named(name: str) -> Callable:
    def method(key, x, y, alpha, *, softness=0.05, negative_mass=1.0, class_mask=None,
               pairing="halve", label_weight="lambda", num_classes=None, segments=None):
        common = dict(pairing=pairing, num_classes=num_classes, segments=segments)
        soft = dict(softness=softness, negative_mass=negative_mass, class_mask=class_mask)
        if name == "control":
            return control(key, x, y, alpha, num_classes=num_classes)
        if name == "e_mixup":
            return e_mixup(key, x, y, alpha, **common)
        if name == "e_stitchup":
            return e_stitchup(key, x, y, alpha, label_weight=label_weight, **common)
        if name == "soft_e_mixup":
            return soft_e_mixup(key, x, y, alpha, **soft, **common)
        return soft_e_stitchup(key, x, y, alpha, label_weight=label_weight, **soft, **common)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = (
        f"`{name}` behind the common signature of `METHODS` (arguments it does not use are ignored)."
    )
    return method


class UnknownMethodError(KeyError, ValueError):
    """An unknown method name: a KeyError for `METHODS[...]` that is also a ValueError."""

    def __str__(self) -> str:
        return str(self.args[0])


class _MethodTable(dict):
    def __missing__(self, name):
        raise UnknownMethodError(
            f"unknown method {name!r}; use one of {', '.join(repr(m) for m in METHOD_NAMES)}"
        )


METHODS: dict[str, Callable] = _MethodTable((name, _named(name)) for name in METHOD_NAMES)


# --------------------------------------------------------------------------------------------
# The traced form
# --------------------------------------------------------------------------------------------


class MethodParams(NamedTuple):
    """An augmentation method as arrays, so sweeps vmap over methods without recompiling.

    Every field is a (possibly traced) scalar array; stack them along a leading axis to vmap.
    """

    mix: jax.Array  # int32: MIX_CONTROL (0), MIX_MIXUP (1), MIX_STITCHUP (2) or MIX_MANIFOLD (3)
    soft: jax.Array  # bool: apply soften_labels after mixing (its own switch: softness 0 still adds mass)
    alpha: jax.Array  # float32 > 0
    softness: jax.Array  # float32 in [0, 1)
    # The ablation baselines' transforms of the control's rows, each a no-op at 0
    # (`control_transforms`): label smoothing, Gaussian noise, feature dropout.
    smoothing: Any = 0.0  # float32 in [0, 1)
    noise_std: Any = 0.0  # float32 >= 0, relative to each row's RMS
    drop_rate: Any = 0.0  # float32 in [0, 1)


def method_params(name: str, alpha: float = 0.2, softness: float = 0.05, *,
                  smoothing: float = 0.0, noise_std: float = 0.0,
                  drop_rate: float = 0.0) -> MethodParams:
    """The `MethodParams` of a named method (the paper's five or a baseline), validated.

    Each method reads only its own hyperparameters (`METHOD_HPARAMS`); the others are zeroed, so
    e.g. a control never smooths whatever `smoothing` says.
    """
    mix_of = {**_MIX_OF_METHOD, **_MIX_OF_BASELINE}
    if name not in mix_of:
        raise UnknownMethodError(f"unknown method {name!r}; use one of "
                                 f"{', '.join(repr(m) for m in ALL_METHOD_NAMES)}")
    _check_alpha(alpha)
    _check_softness(softness, None)
    _check_rate("smoothing", smoothing, upper_open=True)
    _check_rate("noise_std", noise_std, upper_open=False)
    _check_rate("drop_rate", drop_rate, upper_open=True)
    mix, soft = mix_of[name]
    used = METHOD_HPARAMS[name]
    return MethodParams(
        mix=jnp.asarray(mix, jnp.int32),
        soft=jnp.asarray(soft, jnp.bool_),
        alpha=jnp.asarray(alpha, jnp.float32),
        softness=jnp.asarray(softness, jnp.float32),
        smoothing=jnp.asarray(smoothing if "smoothing" in used else 0.0, jnp.float32),
        noise_std=jnp.asarray(noise_std if "noise_std" in used else 0.0, jnp.float32),
        drop_rate=jnp.asarray(drop_rate if "drop_rate" in used else 0.0, jnp.float32),
    )


def augment_batch(key, x, y, params: MethodParams, *, class_mask=None, pairing="halve",
                  negative_mass=1.0, label_weight="lambda", segments=None, num_classes=None):
    """Applies the method `params` describes, with the same output shapes for every method.

    The method and softening are selected by `jnp.where` on `params`, so changing params never
    retraces, and under `jax.vmap` over params every member runs in one program that costs per
    member what one member costs alone: the random draws (Beta variates, stitchup's mask) run
    only for the methods some member uses (see `_draws`). For the same key the rows equal the
    named function's output. A caller that knows the method statically and wants no padding
    rows uses `augment_rows`.

    Returns:
      (x_out [B, D], y_out [B, C] float, weight [B] float32). Under "halve" a mixing method puts
      its B/2 mixed rows first with weight 1 and B/2 zero rows with weight 0; control returns the
      B original rows (the paper's control trains on the full batch), all weight 1. Under
      "permute"/"flip" every row has weight 1. Use the weight in the loss (weighted mean).
    """
    _check_key(key)
    if not isinstance(params, MethodParams):
        raise ValueError(
            f"params must be a MethodParams (build one with method_params(name, alpha, "
            f"softness)), got {type(params).__name__}"
        )
    for field in MethodParams._fields:
        if np.ndim(getattr(params, field)) != 0:
            raise ValueError(
                f"params.{field} must be a scalar, got shape {np.shape(getattr(params, field))}; "
                "vmap over stacked params instead of passing arrays"
            )
    x, y, sizes = _prepare(
        x, y, num_classes=num_classes, pairing=pairing, label_weight=label_weight, segments=segments
    )
    _check_softness(params.softness, negative_mass)
    mix_idx = jnp.asarray(params.mix, jnp.int32)
    if not is_traced(mix_idx) and int(mix_idx) not in (MIX_CONTROL, MIX_MIXUP, MIX_STITCHUP):
        raise ValueError(
            f"params.mix must be 0 (control), 1 (mixup) or 2 (stitchup), got {int(mix_idx)}"
            + ("; manifold mixup (3) mixes inside the model: train it with the sweep engine"
               if int(mix_idx) == MIX_MANIFOLD else "")
        )
    if not is_traced(mix_idx) and int(mix_idx) != MIX_CONTROL:
        _check_alpha(params.alpha)
    params = MethodParams(
        mix=mix_idx,
        soft=jnp.asarray(params.soft, jnp.bool_),
        alpha=jnp.asarray(params.alpha, jnp.float32),
        softness=jnp.asarray(params.softness, jnp.float32),
        smoothing=jnp.asarray(params.smoothing, jnp.float32),
        noise_std=jnp.asarray(params.noise_std, jnp.float32),
        drop_rate=jnp.asarray(params.drop_rate, jnp.float32),
    )
    class_mask = _check_class_mask(class_mask, y.shape[1])
    if negative_mass is not None:
        negative_mass = jnp.asarray(negative_mass, jnp.float32)
    return _augment_batch(key, x, y, params, class_mask, negative_mass, pairing=pairing,
                          label_weight=label_weight, sizes=sizes)


# Jitted so that eager calls compile once per shape and configuration; inside a caller's jit it
# is simply inlined.
@partial(jax.jit, static_argnames=("pairing", "label_weight", "sizes"))
def _augment_batch(key, x, y, params, class_mask, negative_mass, *, pairing, label_weight, sizes):
    batch, dim = x.shape
    # The same key split as `_mix`, so every method reproduces its named function.
    k_pair, k_lam, k_mask = jax.random.split(key, 3)
    pairs = batch // 2 if pairing == "halve" else batch
    is_control = params.mix == MIX_CONTROL
    lam_a, lam_b, from_a = _draws(k_lam, k_mask, params.mix, params.alpha,
                                  shape=(pairs, 1 if sizes is None else len(sizes)), dim=dim,
                                  sizes=sizes)
    # No lax.switch on the method: under vmap a batched switch becomes a select that runs every
    # branch for every member. The data path is one fused elementwise pass for all methods; the
    # costly random draws are skipped by `_draws` for the methods no member uses.
    (x_a, y_a), (x_b, y_b) = _parents(k_pair, _take_from(x, y), batch, pairing)
    x_mix, y_mix = _combine(params.mix == MIX_STITCHUP, x_a, x_b, y_a, y_b, lam_a, lam_b, from_a,
                            label_weight=label_weight, sizes=sizes)
    weight = jnp.ones(pairs, jnp.float32)
    if pairs < batch:
        pad = batch - pairs
        x_mix = jnp.concatenate([x_mix, jnp.zeros((pad,) + x_mix.shape[1:], x_mix.dtype)])
        y_mix = jnp.concatenate([y_mix, jnp.zeros((pad,) + y_mix.shape[1:], y_mix.dtype)])
        weight = jnp.concatenate([weight, jnp.zeros(pad, jnp.float32)])
    # The control's rows, with the control-kind baselines' transforms (no-ops for the control).
    x_ctrl, y_ctrl = control_transforms(k_mask, x, y, params, class_mask=class_mask)
    x_out = jnp.where(is_control, x_ctrl, x_mix)
    y_out = jnp.where(is_control, y_ctrl, y_mix)
    weight = jnp.where(is_control, 1.0, weight)
    y_soft = soften_labels(y_out, params.softness, negative_mass, class_mask=class_mask)
    # Padding rows stay zero (and weight 0) whether or not labels are softened.
    y_out = jnp.where(params.soft & (weight[:, None] > 0), y_soft, y_out)
    return x_out, y_out, weight


def _draws(k_lam, k_mask, mix, alpha, *, shape, dim, sizes):
    """The random draws of the traced form: (lam_a, lam_b, from_a) for method index `mix`.

    Control gets lam_a = 1, lam_b = 0 without sampling, and only stitchup draws its [P, D] mask
    (all False otherwise). Each draw sits behind a `lax.cond` on `_any_member`, so it is skipped
    when no member needs it, alone or under `jax.vmap` (where a batched predicate would run
    both sides for every member): vmapped over members of one method, a member costs what it
    costs alone.
    """
    is_control = mix == MIX_CONTROL
    # A control member's alpha is never used; a safe value keeps NaN out of a vmapped batch.
    alpha = jnp.where(is_control, 1.0, jnp.asarray(alpha, jnp.float32))
    lam_a, lam_b = lax.cond(
        _any_member(~is_control), lambda: _sample_weights(k_lam, alpha, shape),
        lambda: (jnp.ones(shape, jnp.float32), jnp.zeros(shape, jnp.float32)))
    lam_a = jnp.where(is_control, 1.0, lam_a)
    lam_b = jnp.where(is_control, 0.0, lam_b)
    is_stitch = mix == MIX_STITCHUP
    from_a = lax.cond(_any_member(is_stitch), lambda: _stitch_mask(k_mask, lam_a, dim, sizes),
                      lambda: jnp.zeros((shape[0], dim), jnp.bool_))
    return lam_a, lam_b, from_a & is_stitch


# --------------------------------------------------------------------------------------------
# Kinds: the static form the training engine groups members by
# --------------------------------------------------------------------------------------------

# Members whose methods share a kind share shapes and code: the engine compiles one vmapped
# program per kind present in a sweep, and each member computes only the rows it trains on
# (B/2 under "halve" for the mixing kinds, B for control; no padding rows, no select between
# methods). Within a kind, what varies (alpha, softness, the soft switch) stays a traced array.
#
# Adding a method: if it is an existing kind with another traced setting (e.g. a soft control
# = control with soft=True, or label smoothing as a traced label transform applied where
# `params.soft` is now), give `MethodParams` the field and map the name in `KIND_OF_METHOD`.
# If it computes something else (Gaussian noise, feature dropout: B rows transformed one by
# one; manifold mixup: pairs mixed after the first hidden layer), add a kind: its name to
# `KINDS`, its row count to `kind_rows`, and its branch to `augment_rows` (or, for a method
# that acts inside the model, to the engine's loss for that kind).
#
# The ablation baselines follow that rule: soft control, label smoothing, Gaussian noise and
# feature dropout are the control kind with a traced transform (`control_transforms`, a no-op
# at zero), and manifold mixup is its own kind, whose pairs the engine mixes in the model.
KINDS = ("control", "mixup", "stitchup", "manifold")
KIND_OF_METHOD = {"control": "control", "e_mixup": "mixup", "soft_e_mixup": "mixup",
                  "e_stitchup": "stitchup", "soft_e_stitchup": "stitchup",
                  "soft_control": "control", "label_smoothing": "control",
                  "gaussian_noise": "control", "feature_dropout": "control",
                  "manifold_mixup": "manifold"}


def kind_rows(kind: str, batch: int, pairing: str = "halve") -> int:
    """Rows a member of `kind` trains on per step of `batch` examples (for "manifold": pairs,
    each of two parent rows)."""
    _check_name("kind", kind, KINDS)
    return batch if kind == "control" else num_outputs(batch, pairing)


def draw_weights(key, params: MethodParams, batch: int, *, pairing="halve", segments=None):
    """The (lam_a, lam_b) [P, S] that `augment_rows(key, ...)` of a mixing kind draws.

    Drawing them ahead (e.g. `jax.vmap` over an epoch's step keys) and passing them as
    `augment_rows(..., weights=)` gives the same rows; it runs the Gamma sampler's rejection
    loop once for many steps instead of once per step.
    """
    k_lam = jax.random.split(key, 3)[1]
    pairs = num_outputs(batch, pairing)
    sizes = None if segments is None else tuple(int(v) for v in segments)
    return _sample_weights(k_lam, jnp.asarray(params.alpha, jnp.float32),
                           (pairs, 1 if sizes is None else len(sizes)))


def augment_rows(key, take: Callable, batch: int, params: MethodParams, *, kind: str,
                 class_mask=None, pairing="halve", negative_mass=1.0, label_weight="lambda",
                 segments=None, weights=None):
    """The rows one member of a static `kind` trains on: no padding, no branch on the method.

    For the same key the rows equal `augment_batch`'s weight-1 rows (and the named function's
    output). Traceable, vmappable over params and keys; nothing is checked beyond names, so
    call it inside a program whose inputs were validated.

    Args:
      take: `take(rows) -> (x[rows], y[rows] float)` for an index array or a slice of the
        batch's `batch` rows, so the caller gathers the parents from wherever its data lives.
      kind: one of `KINDS` (`KIND_OF_METHOD[name]`); params.mix is ignored.
      weights: optional (lam_a, lam_b) from `draw_weights` with the same key (for "manifold",
        drawn without segments: it mixes hidden units, not embedding segments).
    Returns:
      (x [R, D], y [R, C]) with R = `kind_rows(kind, batch, pairing)`; for "manifold", x is
      (x_a, x_b, lam_a, lam_b), the pairs `manifold_mixup` returns, for
      `MLP(..., mix_with=x_b, mix_weights=(lam_a, lam_b))`.
    """
    _check_name("kind", kind, KINDS)
    sizes = None if segments is None else tuple(int(v) for v in segments)
    k_pair, k_lam, k_mask = jax.random.split(key, 3)
    if kind == "control":
        x, y = take(slice(None))
        x, y = control_transforms(k_mask, x, y, params, class_mask=class_mask)
    elif kind == "manifold":
        if weights is None:
            weights = draw_weights(key, params, batch, pairing=pairing)
        lam_a, lam_b = weights
        (x_a, y_a), (x_b, y_b) = _parents(k_pair, take, batch, pairing)
        compute = jnp.promote_types(y_a.dtype, jnp.float32)
        y = (lam_a.astype(compute) * y_a.astype(compute)
             + lam_b.astype(compute) * y_b.astype(compute)).astype(y_a.dtype)
        x = (x_a, x_b, lam_a, lam_b)
    else:
        if weights is None:
            weights = draw_weights(key, params, batch, pairing=pairing, segments=sizes)
        lam_a, lam_b = weights
        (x_a, y_a), (x_b, y_b) = _parents(k_pair, take, batch, pairing)
        from_a = (_stitch_mask(k_mask, lam_a, x_a.shape[1], sizes) if kind == "stitchup"
                  else None)
        x, y = _combine(kind == "stitchup", x_a, x_b, y_a, y_b, lam_a, lam_b, from_a,
                        label_weight=label_weight, sizes=sizes)
    softness = jnp.asarray(params.softness, jnp.float32)
    if negative_mass is not None:
        negative_mass = jnp.asarray(negative_mass, jnp.float32)
    y_soft = soften_labels(y, softness, negative_mass, class_mask=class_mask)
    return x, jnp.where(params.soft, y_soft, y)


# --------------------------------------------------------------------------------------------
# Ablation baselines: "is it the mixing or the soft labels?"
# --------------------------------------------------------------------------------------------
#
# Not in the paper: each isolates one ingredient of its methods, or is the standard alternative
# to it. Same signature convention as the named methods (key first, x [B, D], y [B, C] float or
# [B] ids with num_classes); all but manifold mixup return B rows, like the control.

BASELINE_NAMES = tuple(_MIX_OF_BASELINE)


def _check_rate(name: str, value: Any, *, upper_open: bool) -> None:
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
    if not is_traced(value):
        v = float(np.asarray(value))
        ok = math.isfinite(v) and v >= 0 and (v < 1 if upper_open else True)
        if not ok:
            bound = "[0, 1)" if upper_open else ">= 0"
            raise ValueError(f"{name} must be a finite number {bound}, got {v}")


def soft_control(key, x, y, *, softness=0.05, negative_mass=1.0, class_mask=None,
                 num_classes=None):
    """The paper's label softening without mixing: the control's rows, `soften_labels`'d.

    Separates what Soft E-Mixup / Soft E-Stitchup owe to the softening from what they owe to
    the mixing. `key` is unused.
    """
    del key
    _check_softness(softness, negative_mass)
    x = _check_x(x)
    y = _labels_to_float(y, x.shape[0], num_classes)
    return x, soften_labels(y, softness, negative_mass, class_mask=class_mask)


def smooth_labels(y: Any, smoothing: Any = 0.1, *, class_mask: Any = None) -> jax.Array:
    """Standard label smoothing (Szegedy et al., 2016): (1 - eps) y + eps / K.

    K is the number of classes, or of valid classes when `class_mask` is given (invalid classes,
    e.g. unseen in this split, stay exactly 0). Unlike the paper's softening it keeps a
    distribution a distribution and treats positive and negative classes alike.
    """
    y = jnp.asarray(y)
    if y.ndim < 1 or not jnp.issubdtype(y.dtype, jnp.floating):
        raise ValueError(f"smooth_labels needs float labels [..., C], got {y.dtype} of shape "
                         f"{y.shape}; one-hot integer ids first (jax.nn.one_hot)")
    _check_rate("smoothing", smoothing, upper_open=True)
    class_mask = _check_class_mask(class_mask, y.shape[-1])
    compute = jnp.promote_types(y.dtype, jnp.float32)
    eps = jnp.asarray(smoothing, compute)
    valid = jnp.ones(y.shape[-1], bool) if class_mask is None else class_mask
    k = jnp.maximum(jnp.sum(valid, axis=-1, keepdims=True, dtype=compute), 1)
    smoothed = (1 - eps) * y.astype(compute) + eps / k
    return jnp.where(valid, smoothed, 0).astype(y.dtype)


def label_smoothing(key, x, y, smoothing=0.1, *, class_mask=None, num_classes=None):
    """The control's rows with `smooth_labels`: the standard way to soften targets. `key` unused."""
    del key
    x = _check_x(x)
    y = _labels_to_float(y, x.shape[0], num_classes)
    return x, smooth_labels(y, smoothing, class_mask=class_mask)


def _row_rms(x: jax.Array) -> jax.Array:
    xc = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return jnp.sqrt(jnp.mean(xc * xc, axis=1, keepdims=True))


def gaussian_noise(key, x, y, noise_std=0.1, *, num_classes=None):
    """x + noise_std * rms(x_row) * N(0, I): isotropic noise scaled to each embedding's size.

    Scaling by the row's root mean square makes `noise_std` a noise-to-signal ratio, comparable
    across embedders (MiniLM rows have RMS ~0.05, EfficientNet pools ~0.5). Labels unchanged.
    """
    _check_rate("noise_std", noise_std, upper_open=False)
    x = _check_x(x)
    y = _labels_to_float(y, x.shape[0], num_classes)
    return _add_noise(key, x, jnp.asarray(noise_std, jnp.float32)), y


def _add_noise(key, x, noise_std):
    compute = jnp.promote_types(x.dtype, jnp.float32)
    noise = jax.random.normal(key, x.shape, compute)
    return (x.astype(compute) + noise_std * _row_rms(x) * noise).astype(x.dtype)


def feature_dropout(key, x, y, rate=0.1, *, num_classes=None):
    """Each embedding element zeroed with probability `rate`, the rest scaled by 1 / (1 - rate)
    (inverted dropout on the input, so the expected input is unchanged). Labels unchanged."""
    _check_rate("rate", rate, upper_open=True)
    x = _check_x(x)
    y = _labels_to_float(y, x.shape[0], num_classes)
    return _drop_features(key, x, jnp.asarray(rate, jnp.float32)), y


def _drop_features(key, x, rate):
    compute = jnp.promote_types(x.dtype, jnp.float32)
    keep = jax.random.uniform(key, x.shape) >= rate
    return jnp.where(keep, x.astype(compute) / (1 - rate), 0).astype(x.dtype)


@jax.custom_batching.custom_vmap
def _any_member(flag):
    """`flag` (a bool scalar); under `jax.vmap`, one unbatched `any` over the members.

    A `lax.cond` on it stays a real branch under vmap (a batched predicate would turn it into a
    select that runs both sides for every member): the branch runs when some member needs it,
    and each member's own parameters then make it a no-op for the others.
    """
    return flag


@_any_member.def_vmap
def _any_member_batched(axis_size, in_batched, flag):
    del axis_size
    return (jnp.any(flag) if in_batched[0] else flag), False


def control_transforms(key, x, y, params: MethodParams, *, class_mask=None):
    """The control-kind baselines' traced transforms of B rows: Gaussian noise, feature dropout
    and label smoothing at `params`' noise_std, drop_rate and smoothing (0: unchanged).

    For the same key each equals its named function (`gaussian_noise(k_noise, ...)`,
    `feature_dropout(k_drop, ...)` with k_noise, k_drop = split(key)). The O(B x D) draws run
    only if some member uses them, alone or under `jax.vmap` (`_any_member`): a plain control,
    or a group of controls, pays nothing for them. A member with noise_std = 0 or drop_rate = 0
    gets its rows unchanged (x + 0, x / 1) when another member's transform runs.
    """
    k_noise, k_drop = jax.random.split(key)
    noise_std = jnp.asarray(params.noise_std, jnp.float32)
    drop_rate = jnp.asarray(params.drop_rate, jnp.float32)
    x = lax.cond(_any_member(noise_std > 0), lambda: _add_noise(k_noise, x, noise_std),
                 lambda: x)
    x = lax.cond(_any_member(drop_rate > 0), lambda: _drop_features(k_drop, x, drop_rate),
                 lambda: x)
    smoothing = jnp.asarray(params.smoothing, jnp.float32)
    y = jnp.where(smoothing > 0, smooth_labels(y, smoothing, class_mask=class_mask), y)
    return x, y


class ManifoldPairs(NamedTuple):
    """Manifold mixup's pairs: the model mixes its first hidden layer, h = lam_a h(x_a) +
    lam_b h(x_b), and trains on y (mixed with the same weights)."""

    x_a: jax.Array    # [P, D]
    x_b: jax.Array    # [P, D]
    lam_a: jax.Array  # [P, 1] float32
    lam_b: jax.Array  # [P, 1] float32 (1 - lam_a, computed without cancellation)
    y: jax.Array      # [P, C]


def manifold_rows(key, x, y, alpha, *, pairing="halve"):
    """`manifold_mixup`'s pairs in the traced form's fixed shape: B rows, weight 0 on padding.

    No checks (call it inside a program whose inputs were validated); `alpha` may be traced.
    Returns (ManifoldPairs with [B, ...] fields, weight [B] float32); under "halve" the B/2 pairs
    come first and the padding rows are zeros with lam_a = 1, lam_b = 0.
    """
    batch = x.shape[0]
    k_pair, k_lam, _ = jax.random.split(key, 3)
    pairs = batch // 2 if pairing == "halve" else batch
    lam_a, lam_b = _sample_weights(k_lam, jnp.asarray(alpha, jnp.float32), (pairs, 1))
    (x_a, y_a), (x_b, y_b) = _parents(k_pair, _take_from(x, y), batch, pairing)
    compute = jnp.promote_types(y.dtype, jnp.float32)
    y_mix = (lam_a.astype(compute) * y_a.astype(compute)
             + lam_b.astype(compute) * y_b.astype(compute)).astype(y.dtype)
    weight = jnp.ones(pairs, jnp.float32)
    pad = batch - pairs
    if pad:
        def grow(v, fill=0.0):
            return jnp.concatenate([v, jnp.full((pad,) + v.shape[1:], fill, v.dtype)])

        x_a, x_b, y_mix, weight = grow(x_a), grow(x_b), grow(y_mix), grow(weight)
        lam_a, lam_b = grow(lam_a, 1.0), grow(lam_b)
    return ManifoldPairs(x_a, x_b, lam_a, lam_b, y_mix), weight


def manifold_mixup(key, x, y, alpha, *, pairing="halve", num_classes=None) -> ManifoldPairs:
    """Manifold mixup (Verma et al., 2019) at the first hidden layer, fixed there.

    The same pairs and lambdas as `e_mixup(key, ...)`: the only difference from E-Mixup is where
    the convex combination is taken (after the first Dense -> Dropout -> ReLU instead of on the
    embedding), which the model applies (`embaug_jax.train.mlp.MLP(..., mix=)`).
    """
    _check_alpha(alpha)
    x, y, _ = _prepare(x, y, num_classes=num_classes, pairing=pairing)
    k_pair, k_lam, _ = jax.random.split(key, 3)
    pairs = x.shape[0] // 2 if pairing == "halve" else x.shape[0]
    lam_a, lam_b = _sample_weights(k_lam, jnp.asarray(alpha, jnp.float32), (pairs, 1))
    (x_a, y_a), (x_b, y_b) = _parents(k_pair, _take_from(x, y), x.shape[0], pairing)
    compute = jnp.promote_types(y.dtype, jnp.float32)
    y_mix = lam_a.astype(compute) * y_a.astype(compute) + lam_b.astype(compute) * y_b.astype(
        compute)
    return ManifoldPairs(x_a, x_b, lam_a, lam_b, y_mix.astype(y.dtype))

# Every method a sweep can run, and the hyperparameters each one reads (the sweep config holds a
# grid for each: config.sweep.alphas, .softness, .smoothing, .noise_std, .drop_rate).
ALL_METHOD_NAMES = METHOD_NAMES + BASELINE_NAMES
HPARAM_NAMES = ("alpha", "softness", "smoothing", "noise_std", "drop_rate")
METHOD_HPARAMS = {
    "control": (),
    "e_mixup": ("alpha",),
    "e_stitchup": ("alpha",),
    "soft_e_mixup": ("alpha", "softness"),
    "soft_e_stitchup": ("alpha", "softness"),
    "soft_control": ("softness",),
    "label_smoothing": ("smoothing",),
    "gaussian_noise": ("noise_std",),
    "feature_dropout": ("drop_rate",),
    "manifold_mixup": ("alpha",),
}
