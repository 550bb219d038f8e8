"""Input checks of the augmentations: shapes, ranks and names always; values where concrete.

Values (alpha > 0, softness in [0, 1), labels in [0, num_classes), finite inputs) can only be
checked on concrete arrays: under `jax.jit`/`jax.vmap` tracing they are not (see the package
docstring for what a traced bad value then gives).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embaug_jax.registry import Setting
from embaug_jax.util import is_traced

PAIRINGS = ("halve", "permute", "flip")
LABEL_WEIGHTS = ("lambda", "realized")


def _holds(check: Callable[[jax.Array], jax.Array], value: Any) -> bool:
    """Evaluates `check` on a concrete array right away, even while an outer jit traces (where
    `value` is a closed-over constant); True for traced values, which cannot be checked."""
    if is_traced(value):
        return True
    with jax.ensure_compile_time_eval():
        return bool(check(jnp.asarray(value)))


def check_key(key: Any) -> None:
    """A plain integer seed is not a key: say how to make one instead of JAX's shape error."""
    if isinstance(key, (int, np.integer)) or (
            hasattr(key, "dtype") and np.ndim(key) == 0
            and not jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise TypeError(f"key must be a JAX PRNG key, got the plain integer {key!r}; pass "
                        f"jax.random.key({key!r}) (and split it for each call).")


def check_name(kind: str, value: Any, allowed: Sequence[str]) -> None:
    """`value` is one of `allowed` (a pairing, label weight or kind)."""
    if value not in allowed:
        raise ValueError(
            f"unknown {kind} {value!r}; use one of {', '.join(repr(a) for a in allowed)}"
        )


def check_alpha(alpha: Any) -> None:
    """alpha is a scalar, finite and > 0 when concrete."""
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


def check_softness(softness: Any, negative_mass: Any) -> None:
    """softness is a scalar in [0, 1) and negative_mass a scalar >= 0 or None, when concrete."""
    if np.ndim(softness) != 0:
        raise ValueError(f"softness must be a scalar, got shape {np.shape(softness)}")
    if not is_traced(softness):
        s = float(np.asarray(softness))
        if not (0.0 <= s < 1.0):
            raise ValueError(
                f"softness must lie in [0, 1), got {s}; it is subtracted from every positive "
                "class (the paper uses 0.05)"
            )
    _check_negative_mass(negative_mass)


def _check_negative_mass(negative_mass: Any) -> None:
    if negative_mass is not None:
        if np.ndim(negative_mass) != 0:
            raise ValueError(f"negative_mass must be a scalar or None, got shape {np.shape(negative_mass)}")
        if not is_traced(negative_mass):
            m = float(np.asarray(negative_mass))
            if not (math.isfinite(m) and m >= 0):
                raise ValueError(
                    f"negative_mass must be a finite number >= 0 or None (mass-conserving), got {m}"
                )


def check_options(*, pairing: str = "halve", label_weight: str = "lambda",
                  negative_mass: Any = 1.0) -> None:
    """The options every method takes besides its settings: a known pairing and label weight,
    and a negative_mass >= 0 or None. The named functions, the traced form and a training
    config (`config.augment`) are all checked here."""
    check_name("pairing", pairing, PAIRINGS)
    check_name("label_weight", label_weight, LABEL_WEIGHTS)
    _check_negative_mass(negative_mass)


def check_x(x: Any) -> jax.Array:
    """x as a non-empty, finite, floating [batch, dim] array."""
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


def labels_to_float(y: Any, batch: int, num_classes: int | None) -> jax.Array:
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
    """Segment sizes as a tuple of positive ints that sum to `dim` (None stays None)."""
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


def check_batch(batch: int, pairing: str) -> None:
    """A batch size the pairing can pair."""
    if pairing == "halve" and (batch % 2 or batch < 2):
        raise ValueError(
            f'pairing="halve" pairs the first half of the batch with the second, so the batch '
            f"size must be even, got {batch}; use an even batch size or "
            'pairing="permute"/"flip"'
        )
    if pairing == "permute" and batch < 2:
        raise ValueError('pairing="permute" needs at least 2 examples to pair each with another')


def check_class_mask(class_mask: Any, num_classes: int) -> jax.Array | None:
    """A boolean mask over the `num_classes` classes, or None."""
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



def check_rate(name: str, value: Any, *, upper_open: bool) -> None:
    """A scalar >= 0, and < 1 if `upper_open`, when concrete."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
    if not is_traced(value):
        v = float(np.asarray(value))
        ok = math.isfinite(v) and v >= 0 and (v < 1 if upper_open else True)
        if not ok:
            bound = "[0, 1)" if upper_open else ">= 0"
            raise ValueError(f"{name} must be a finite number {bound}, got {v}")



def prepare_inputs(x, y, *, num_classes=None, pairing="halve", label_weight="lambda", segments=None):
    """Every input check of a named method: (x, y as [B, C] float labels, segment sizes)."""
    check_options(pairing=pairing, label_weight=label_weight)
    x = check_x(x)
    y = labels_to_float(y, x.shape[0], num_classes)
    check_batch(x.shape[0], pairing)
    sizes = _check_segments(segments, x.shape[1])
    return x, y, sizes


def check_setting(setting: Setting, value: Any) -> None:
    """A registered setting's value: a scalar, and within the setting's range when concrete."""
    if np.ndim(value) != 0:
        raise ValueError(f"{setting.name} must be a scalar, got shape {np.shape(value)}; vmap "
                         "over stacked params instead of passing an array")
    if not is_traced(value) and float(np.asarray(value)) not in setting.range:
        raise ValueError(f"{setting.name}={float(np.asarray(value)):g} must be {setting.text}")
