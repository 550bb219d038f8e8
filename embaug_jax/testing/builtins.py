"""The built-in methods and ablation baselines as `check_augmentation` calls them, with the
properties each declares.

Every entry is called `fn(key, x, y, alpha, **kwargs)`: the paper's methods through
`augment.METHODS`; a baseline that takes no alpha ignores it; manifold mixup, which hands its
pairs to the model, is checked as the model's mix with the identity for the mixed layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp

from embaug_jax import augment

__all__ = ["BUILTINS", "CheckedMethod"]


@dataclasses.dataclass(frozen=True)
class CheckedMethod:
    """A method in the checked signature, with its declared properties."""

    fn: Callable
    properties: tuple[str, ...]


# What every method here is, as a JAX function.
_PURE = ("deterministic", "jit", "vmap", "finite", "differentiable")
_MIXING = ("rows=half", *_PURE, "keyed", "beta_lambda")
_ROWWISE = ("rows=all", *_PURE)


def _without_alpha(fn: Callable, name: str) -> Callable:
    def checked(key, x, y, alpha, **kwargs):
        del alpha
        return fn(key, x, y, **kwargs)

    checked.__name__ = checked.__qualname__ = name
    return checked


def manifold_at_identity(key, x, y, alpha, **kwargs):
    """`augment.manifold_mixup`'s pairs mixed as the model mixes its first hidden layer, with the
    identity for that layer: its pairs and weights must be E-Mixup's."""
    pairs = augment.manifold_mixup(key, x, y, alpha, **kwargs)
    compute = jnp.promote_types(pairs.x_a.dtype, jnp.float32)
    x_mix = pairs.lam_a * pairs.x_a.astype(compute) + pairs.lam_b * pairs.x_b.astype(compute)
    return x_mix.astype(pairs.x_a.dtype), pairs.y


BUILTINS: dict[str, CheckedMethod] = {
    "control": CheckedMethod(augment.METHODS["control"], (*_ROWWISE, "label_mass=1")),
    "e_mixup": CheckedMethod(augment.METHODS["e_mixup"],
                             (*_MIXING, "label_mass=1", "convex_mix")),
    "e_stitchup": CheckedMethod(augment.METHODS["e_stitchup"],
                                (*_MIXING, "label_mass=1", "coordinate_stitch")),
    "soft_e_mixup": CheckedMethod(augment.METHODS["soft_e_mixup"],
                                  (*_MIXING, "label_mass=soft", "convex_mix")),
    "soft_e_stitchup": CheckedMethod(augment.METHODS["soft_e_stitchup"],
                                     (*_MIXING, "label_mass=soft", "coordinate_stitch")),
    "soft_control": CheckedMethod(_without_alpha(augment.soft_control, "soft_control"),
                                  (*_ROWWISE, "label_mass=soft")),
    "label_smoothing": CheckedMethod(_without_alpha(augment.label_smoothing, "label_smoothing"),
                                     (*_ROWWISE, "label_mass=1")),
    "gaussian_noise": CheckedMethod(_without_alpha(augment.gaussian_noise, "gaussian_noise"),
                                    (*_ROWWISE, "keyed", "label_mass=1")),
    "feature_dropout": CheckedMethod(_without_alpha(augment.feature_dropout, "feature_dropout"),
                                     (*_ROWWISE, "keyed", "label_mass=1")),
    "manifold_mixup": CheckedMethod(manifold_at_identity,
                                    (*_MIXING, "label_mass=1", "convex_mix")),
}
