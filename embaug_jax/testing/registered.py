"""Registered methods in the checked signature: what `check_augmentation` calls for a method's
name or its `registry.Method` row.

A registered method is checked as a sweep trains it. `trained_rows(row)` is
`rows(key, x, y, alpha, **settings) -> (x_out, y_out)`: the rows `augment.augment_rows` gives
one member of the method's kind with `augment.method_params(name, alpha, **settings)` (the
kind's pairs and draws, the method's own transform, its softening), so a method registered with
a transform and no named function is checked too. As in the training engine, a mixing kind's
lambdas are drawn ahead (`augment.draw_weights`) and the rows are compiled, one program per kind
and shape that every method of the kind shares; under the checker's own `jax.jit` everything is
traced at once. Manifold mixup's rows are pairs the model mixes after its first layer; they are
checked mixed as the model would mix them with the identity for that layer, which is E-Mixup.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from embaug_jax import augment, registry

__all__ = ["resolve", "trained_rows"]


def trained_rows(row: registry.Method) -> Callable:
    """The rows a sweep trains `row`'s members on, as `rows(key, x, y, alpha, **settings)`."""

    def rows(key, x, y, alpha, **settings):
        params = augment.method_params(row.name, alpha=alpha if "alpha" in row.reads else None,
                                       **settings)
        weights = (None if row.kind == "control"
                   else augment.draw_weights(key, params, x.shape[0]))
        # The kind's transforms, as augment_rows would look them up, but static here: a method
        # registered later gets a program of its own instead of a stale one.
        transforms = augment.kind_transforms(row.kind, [name for name, _ in params.static])
        x_out, y_out = _kind_rows(key, x, y, params, weights, kind=row.kind,
                                  transforms=transforms)
        if row.kind == "manifold":
            x_a, x_b, lam_a, lam_b = x_out
            compute = jnp.promote_types(x_a.dtype, jnp.float32)
            x_out = (lam_a * x_a.astype(compute) + lam_b * x_b.astype(compute)).astype(x_a.dtype)
        return x_out, y_out

    rows.__name__ = rows.__qualname__ = row.name
    return rows


@functools.partial(jax.jit, static_argnames=("kind", "transforms"))
def _kind_rows(key, x, y, params, weights, *, kind, transforms):
    return augment.augment_rows(key, lambda r: (x[r], y[r]), x.shape[0], params, kind=kind,
                                weights=weights, transforms=transforms)


def resolve(method: str | registry.Method) -> tuple[Callable, tuple[str, ...], dict[str, Any]]:
    """(its rows in the checked signature, its declared properties, the settings it reads
    other than alpha at their default grids' first values) of a registered method."""
    row = registry.method(method if isinstance(method, str) else method.name)
    if not isinstance(method, str) and method != row:
        raise ValueError(f"the row given for {row.name!r} is not the registered one; register it "
                         "first (registry.register, or registry.temporary in a test)")
    if not row.properties:
        raise ValueError(f"method {row.name!r} declares no properties to check: give its row "
                         'properties=(...), e.g. ("rows=all", "deterministic", "jit", "vmap", '
                         '"finite", "differentiable", "label_mass=1")')
    settings = {name: registry.setting(name).default[0] for name in row.reads if name != "alpha"}
    return trained_rows(row), row.properties, settings
