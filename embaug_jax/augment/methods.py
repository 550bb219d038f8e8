"""The paper's augmentations (sections 2.2-2.4): E-Mixup, E-Stitchup, their soft variants, the
control and `soften_labels`, as pure JAX functions, key first; and the pairing, lambda and mask
draws they share with the traced form.

Importing this module registers the paper's five methods (tag "paper", in Table 1's order) and
the two settings they read, alpha and softness (`embaug_jax.registry`). `METHODS` puts the five
behind one signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embaug_jax import registry
from embaug_jax.augment.checks import (
    PAIRINGS,
    check_alpha,
    check_batch,
    check_class_mask,
    check_key,
    check_name,
    check_softness,
    check_x,
    labels_to_float,
    prepare_inputs,
)
from embaug_jax.registry import Range, Setting
from embaug_jax.util import is_traced

_PAPER = ("paper",)
# What `embaug_jax.testing.check_augmentation` checks of a method's rows (`Method.properties`,
# names from `embaug_jax.testing.PROPERTIES`): every built-in is a pure JAX function of its key,
# and a mixing method blends or stitches two parents at a lambda ~ Beta(alpha, alpha).
PURE_PROPERTIES = ("deterministic", "jit", "vmap", "finite", "differentiable")
_ROWWISE = ("rows=all", *PURE_PROPERTIES)
_PAIRS = ("rows=half", *PURE_PROPERTIES, "keyed", "beta_lambda")

registry.register(Setting(
    name="alpha", grid="alphas", range=Range(low=0, low_closed=False), default=(0.2,),
    note="the Beta(alpha, alpha) parameter; the paper searched (0, 0.5]", column=True))
registry.register(Setting(
    name="softness", grid="softness", range=Range(low=0, high=1, high_closed=False),
    default=(0.05,), note="the paper's default is 0.05", column=True))

# Stitchup compares 16-bit uniforms with a per-row threshold: one 32-bit random word serves two
# elements, which halves the threefry work that dominates stitchup's run time (see
# benchmarks/README.md, section "augment").
_MASK_BITS = 16
_MASK_SCALE = float(1 << _MASK_BITS)


def num_outputs(batch: int, pairing: str = "halve") -> int:
    """Rows a mixing method returns for a batch of `batch` examples (B/2 under "halve", else B)."""
    check_name("pairing", pairing, PAIRINGS)
    check_batch(batch, pairing)
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
    check_key(key)
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


def parents(key: jax.Array, take: Callable, batch: int, pairing: str):
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


def take_from(x: jax.Array, y: jax.Array) -> Callable:
    """The `take` of `parents` for rows that are all in x and y."""
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


def stitch_mask(key: jax.Array, lam: jax.Array, dim: int, sizes: tuple[int, ...] | None) -> jax.Array:
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
    lam_a, lam_b = sample_weights(k_lam, jnp.asarray(alpha, jnp.float32), shape)
    return _mix_with(k_pair, k_mask, x, y, lam_a, lam_b, mode=mode, pairing=pairing,
                     label_weight=label_weight, sizes=sizes)


# Two compiled pieces rather than one: the Gamma sampler's rejection loops are slow to compile,
# and split off they compile once per shape instead of once per method and pairing. Under an
# outer jit both are inlined into one program.
@partial(jax.jit, static_argnames="shape")
def sample_weights(key, alpha, shape):
    """(lam, 1 - lam) [shape] for every pair: `sample_lambda(..., complement=True)`, jitted."""
    return sample_lambda(key, alpha, shape, complement=True)


@partial(jax.jit, static_argnames=("mode", "pairing", "label_weight", "sizes"))
def _mix_with(k_pair, k_mask, x, y, lam_a, lam_b, *, mode, pairing, label_weight, sizes):
    (x_a, y_a), (x_b, y_b) = parents(k_pair, take_from(x, y), x.shape[0], pairing)
    from_a = stitch_mask(k_mask, lam_a, x.shape[1], sizes) if mode == "stitchup" else None
    return combine(mode == "stitchup", x_a, x_b, y_a, y_b, lam_a, lam_b, from_a,
                    label_weight=label_weight, sizes=sizes)


def combine(stitch, x_a, x_b, y_a, y_b, lam_a, lam_b, from_a, *, label_weight, sizes):
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
    check_softness(softness, negative_mass)
    class_mask = check_class_mask(class_mask, y.shape[-1])
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


@registry.register_method(display="Control", kind="control", tags=_PAPER,
                          reference="sec. 3: the paper's control, no augmentation",
                          properties=(*_ROWWISE, "label_mass=1"))
def control(key, x, y, alpha=None, *, num_classes=None, **ignored):
    """The paper's control: no augmentation. Returns (x, y as float labels); key/alpha unused."""
    del key, alpha, ignored
    x = check_x(x)
    return x, labels_to_float(y, x.shape[0], num_classes)


@registry.register_method(display="E-Mixup", kind="mixup", reads=("alpha",), tags=_PAPER,
                          reference="sec. 2.2",
                          properties=(*_PAIRS, "label_mass=1", "convex_mix"))
def e_mixup(key, x, y, alpha, *, pairing="halve", num_classes=None, segments=None):
    """E-Mixup (section 2.2): `x_mix = lam * x_a + (1 - lam) * x_b`, labels alike.

    Args:
      key: PRNG key.
      x: [B, D] float embeddings.
      y: [B, C] float labels, or [B] integer ids with `num_classes`.
      alpha: Beta(alpha, alpha) parameter, > 0 (may be traced).
      pairing: "halve" (B/2 outputs), "permute" or "flip" (B outputs); see `embaug_jax.augment`.
      segments: optional segment sizes summing to D: an independent lambda per segment.
    Returns:
      (x_mix [P, D] in x's dtype, y_mix [P, C] float).
    """
    check_key(key)
    check_alpha(alpha)
    x, y, sizes = prepare_inputs(x, y, num_classes=num_classes, pairing=pairing, segments=segments)
    return _mix(key, x, y, alpha, mode="mixup", pairing=pairing, label_weight="lambda", sizes=sizes)


@registry.register_method(display="E-Stitchup", kind="stitchup", reads=("alpha",),
                          tags=_PAPER, reference="sec. 2.3",
                          properties=(*_PAIRS, "label_mass=1", "coordinate_stitch"))
def e_stitchup(key, x, y, alpha, *, pairing="halve", label_weight="lambda", num_classes=None, segments=None):
    """E-Stitchup (section 2.3): each element from `x_a` with probability lam, else from `x_b`.

    Labels are mixed by lam (`label_weight="lambda"`, the paper) or by the fraction of elements
    actually taken from `x_a` (`"realized"`). Arguments as in `e_mixup`; with `segments` each
    segment has its own mask rate.
    """
    check_key(key)
    check_alpha(alpha)
    x, y, sizes = prepare_inputs(
        x, y, num_classes=num_classes, pairing=pairing, label_weight=label_weight, segments=segments
    )
    return _mix(key, x, y, alpha, mode="stitchup", pairing=pairing, label_weight=label_weight, sizes=sizes)


@registry.register_method(display="Soft E-Mixup", kind="mixup", reads=("alpha", "softness"),
                          soft=True, tags=_PAPER, reference="sec. 2.4",
                          properties=(*_PAIRS, "label_mass=soft", "convex_mix"))
def soft_e_mixup(key, x, y, alpha, *, softness=0.05, negative_mass=1.0, class_mask=None,
                 pairing="halve", num_classes=None, segments=None):
    """Soft E-Mixup (section 2.4): `e_mixup` followed by `soften_labels`."""
    check_softness(softness, negative_mass)
    x_mix, y_mix = e_mixup(key, x, y, alpha, pairing=pairing, num_classes=num_classes, segments=segments)
    return x_mix, soften_labels(y_mix, softness, negative_mass, class_mask=class_mask)


@registry.register_method(display="Soft E-Stitchup", kind="stitchup",
                          reads=("alpha", "softness"), soft=True, tags=_PAPER,
                          reference="sec. 2.4",
                          properties=(*_PAIRS, "label_mass=soft", "coordinate_stitch"))
def soft_e_stitchup(key, x, y, alpha, *, softness=0.05, negative_mass=1.0, class_mask=None,
                    pairing="halve", label_weight="lambda", num_classes=None, segments=None):
    """Soft E-Stitchup (section 2.4): `e_stitchup` followed by `soften_labels`."""
    check_softness(softness, negative_mass)
    x_mix, y_mix = e_stitchup(
        key, x, y, alpha, pairing=pairing, label_weight=label_weight, num_classes=num_classes,
        segments=segments,
    )
    return x_mix, soften_labels(y_mix, softness, negative_mass, class_mask=class_mask)


# The paper's five methods, in Table 1's order.
METHOD_NAMES = registry.method_names(tag="paper")
UnknownMethodError = registry.UnknownNameError


def _common_signature(row: registry.Method) -> Callable:
    """`row.function` behind the signature every method of `METHODS` shares."""
    accepts = inspect.signature(row.function).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepts.values())

    def method(key, x, y, alpha, *, softness=0.05, negative_mass=1.0, class_mask=None,
               pairing="halve", label_weight="lambda", num_classes=None, segments=None):
        options = dict(softness=softness, negative_mass=negative_mass, class_mask=class_mask,
                       pairing=pairing, label_weight=label_weight, num_classes=num_classes,
                       segments=segments)
        return row.function(key, x, y, alpha, **{k: v for k, v in options.items()
                                                  if takes_any or k in accepts})

    method.__name__ = method.__qualname__ = row.name
    method.__doc__ = (f"`{row.name}` behind the common signature of `METHODS` (arguments it "
                      "does not use are ignored).")
    return method


class _MethodTable(dict):
    def __missing__(self, name):
        raise registry.UnknownNameError.naming("method", name, self)


METHODS: dict[str, Callable] = _MethodTable(
    (row.name, _common_signature(row)) for row in registry.methods(tag="paper"))
