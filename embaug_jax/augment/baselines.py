"""Ablation baselines: "is it the mixing or the soft labels?"

Not in the paper: each isolates one ingredient of its methods, or is the standard alternative to
it. Same signature convention as the paper's methods (key first, x [B, D], y [B, C] float or [B]
ids with num_classes); all but manifold mixup return B rows, like the control.

Importing this module registers them (tag "baseline") and the settings they read: soft control,
label smoothing, Gaussian noise and feature dropout join the control kind, as traced transforms
of its B rows (so one compiled program trains them beside the control); manifold mixup is a
kind of its own, whose pairs the training engine mixes inside the model.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from embaug_jax import registry
from embaug_jax.augment.checks import (
    check_alpha,
    check_class_mask,
    check_rate,
    check_softness,
    check_x,
    labels_to_float,
    prepare_inputs,
)
from embaug_jax.augment.methods import (
    PURE_PROPERTIES,
    parents,
    sample_weights,
    soften_labels,
    take_from,
)
from embaug_jax.augment.traced import MethodParams, any_member
from embaug_jax.registry import Range, Setting

_BASELINE = ("baseline",)
# What `embaug_jax.testing.check_augmentation` checks of each baseline's rows (see methods.py).
_ROWWISE = ("rows=all", *PURE_PROPERTIES)
_RATE = Range(low=0, high=1, high_closed=False)

registry.register(Setting(name="smoothing", grid="smoothing", range=_RATE, default=(0.1,),
                          note="label smoothing's epsilon"))
registry.register(Setting(name="noise_std", grid="noise_std", range=Range(low=0), default=(0.1,),
                          note="noise std relative to a row's RMS"))
registry.register(Setting(name="drop_rate", grid="drop_rate", range=_RATE, default=(0.1,),
                          note="the share of embedding elements zeroed"))


# --------------------------------------------------------------------------------------------
# The control kind's traced transforms (`registry.Method.transform`): for the same key each
# equals its named function. The O(B x D) draws run only if some member needs them
# (`any_member`), so a group of controls pays nothing for them.
# --------------------------------------------------------------------------------------------


def _smooth_rows(key, x, y, params: MethodParams, *, class_mask=None):
    del key
    smoothing = jnp.asarray(params.smoothing, jnp.float32)
    return x, jnp.where(smoothing > 0, smooth_labels(y, smoothing, class_mask=class_mask), y)


def _noise_rows(key, x, y, params: MethodParams, *, class_mask=None):
    del class_mask
    k_noise = jax.random.split(key)[0]  # as `gaussian_noise(k_noise, ...)`
    noise_std = jnp.asarray(params.noise_std, jnp.float32)
    return lax.cond(any_member(noise_std > 0), lambda: _add_noise(k_noise, x, noise_std),
                    lambda: x), y


def _dropout_rows(key, x, y, params: MethodParams, *, class_mask=None):
    del class_mask
    k_drop = jax.random.split(key)[1]  # as `feature_dropout(k_drop, ...)`
    drop_rate = jnp.asarray(params.drop_rate, jnp.float32)
    return lax.cond(any_member(drop_rate > 0), lambda: _drop_features(k_drop, x, drop_rate),
                    lambda: x), y


# --------------------------------------------------------------------------------------------
# The named baselines
# --------------------------------------------------------------------------------------------


@registry.register_method(display="Soft control", kind="control", reads=("softness",),
                          soft=True, tags=_BASELINE,
                          reference="the softening of sec. 2.4 without mixing",
                          properties=(*_ROWWISE, "label_mass=soft"))
def soft_control(key, x, y, *, softness=0.05, negative_mass=1.0, class_mask=None,
                 num_classes=None):
    """The paper's label softening without mixing: the control's rows, `soften_labels`'d.

    Separates what Soft E-Mixup / Soft E-Stitchup owe to the softening from what they owe to
    the mixing. `key` is unused.
    """
    del key
    check_softness(softness, negative_mass)
    x = check_x(x)
    y = labels_to_float(y, x.shape[0], num_classes)
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
    check_rate("smoothing", smoothing, upper_open=True)
    class_mask = check_class_mask(class_mask, y.shape[-1])
    compute = jnp.promote_types(y.dtype, jnp.float32)
    eps = jnp.asarray(smoothing, compute)
    valid = jnp.ones(y.shape[-1], bool) if class_mask is None else class_mask
    k = jnp.maximum(jnp.sum(valid, axis=-1, keepdims=True, dtype=compute), 1)
    smoothed = (1 - eps) * y.astype(compute) + eps / k
    return jnp.where(valid, smoothed, 0).astype(y.dtype)


@registry.register_method(display="Label smoothing", kind="control", reads=("smoothing",),
                          transform=_smooth_rows, tags=_BASELINE,
                          reference="Szegedy et al., 2016",
                          properties=(*_ROWWISE, "label_mass=1"))
def label_smoothing(key, x, y, smoothing=0.1, *, class_mask=None, num_classes=None):
    """The control's rows with `smooth_labels`: the standard way to soften targets. `key` unused."""
    del key
    x = check_x(x)
    y = labels_to_float(y, x.shape[0], num_classes)
    return x, smooth_labels(y, smoothing, class_mask=class_mask)


def _row_rms(x: jax.Array) -> jax.Array:
    xc = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return jnp.sqrt(jnp.mean(xc * xc, axis=1, keepdims=True))


@registry.register_method(display="Gaussian noise", kind="control", reads=("noise_std",),
                          transform=_noise_rows, tags=_BASELINE,
                          reference="feature-space noise, DeVries and Taylor, 2017",
                          properties=(*_ROWWISE, "keyed", "label_mass=1"))
def gaussian_noise(key, x, y, noise_std=0.1, *, num_classes=None):
    """x + noise_std * rms(x_row) * N(0, I): isotropic noise scaled to each embedding's size.

    Scaling by the row's root mean square makes `noise_std` a noise-to-signal ratio, comparable
    across embedders (MiniLM rows have RMS ~0.05, EfficientNet pools ~0.5). Labels unchanged.
    """
    check_rate("noise_std", noise_std, upper_open=False)
    x = check_x(x)
    y = labels_to_float(y, x.shape[0], num_classes)
    return _add_noise(key, x, jnp.asarray(noise_std, jnp.float32)), y


def _add_noise(key, x, noise_std):
    compute = jnp.promote_types(x.dtype, jnp.float32)
    noise = jax.random.normal(key, x.shape, compute)
    return (x.astype(compute) + noise_std * _row_rms(x) * noise).astype(x.dtype)


@registry.register_method(display="Feature dropout", kind="control", reads=("drop_rate",),
                          transform=_dropout_rows, tags=_BASELINE,
                          reference="dropout (Srivastava et al., 2014) on the input",
                          properties=(*_ROWWISE, "keyed", "label_mass=1"))
def feature_dropout(key, x, y, rate=0.1, *, num_classes=None):
    """Each embedding element zeroed with probability `rate`, the rest scaled by 1 / (1 - rate)
    (inverted dropout on the input, so the expected input is unchanged). Labels unchanged."""
    check_rate("rate", rate, upper_open=True)
    x = check_x(x)
    y = labels_to_float(y, x.shape[0], num_classes)
    return _drop_features(key, x, jnp.asarray(rate, jnp.float32)), y


def _drop_features(key, x, rate):
    compute = jnp.promote_types(x.dtype, jnp.float32)
    keep = jax.random.uniform(key, x.shape) >= rate
    return jnp.where(keep, x.astype(compute) / (1 - rate), 0).astype(x.dtype)


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
    lam_a, lam_b = sample_weights(k_lam, jnp.asarray(alpha, jnp.float32), (pairs, 1))
    (x_a, y_a), (x_b, y_b) = parents(k_pair, take_from(x, y), batch, pairing)
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


@registry.register_method(display="Manifold mixup", kind="manifold", reads=("alpha",),
                          tags=_BASELINE, reference="Verma et al., 2019",
                          properties=("rows=half", *PURE_PROPERTIES, "keyed", "beta_lambda",
                                      "label_mass=1", "convex_mix"))
def manifold_mixup(key, x, y, alpha, *, pairing="halve", num_classes=None) -> ManifoldPairs:
    """Manifold mixup (Verma et al., 2019) at the first hidden layer, fixed there.

    The same pairs and lambdas as `e_mixup(key, ...)`: the only difference from E-Mixup is where
    the convex combination is taken (after the first Dense -> Dropout -> ReLU instead of on the
    embedding), which the model applies (`embaug_jax.train.mlp.MLP(..., mix=)`).
    """
    check_alpha(alpha)
    x, y, _ = prepare_inputs(x, y, num_classes=num_classes, pairing=pairing)
    k_pair, k_lam, _ = jax.random.split(key, 3)
    pairs = x.shape[0] // 2 if pairing == "halve" else x.shape[0]
    lam_a, lam_b = sample_weights(k_lam, jnp.asarray(alpha, jnp.float32), (pairs, 1))
    (x_a, y_a), (x_b, y_b) = parents(k_pair, take_from(x, y), x.shape[0], pairing)
    compute = jnp.promote_types(y.dtype, jnp.float32)
    y_mix = lam_a.astype(compute) * y_a.astype(compute) + lam_b.astype(compute) * y_b.astype(
        compute)
    return ManifoldPairs(x_a, x_b, lam_a, lam_b, y_mix.astype(y.dtype))
