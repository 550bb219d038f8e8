"""The traced form: a member's method as arrays, so one compiled program serves many methods.

`method_params(name, ...)` gives a method's `MethodParams`: its kind, soft switch and id, and a
value of every traced setting, as (stackable) scalar arrays. Two programs read them:

* `augment_batch`, the padded form: every method of the control, mixup and stitchup kinds in one
  program with the same output shapes, selected by `jnp.where`; vmapped over members it costs
  per member what one member costs alone (the random draws run only for the methods some member
  uses). For the same key it returns what the named function returns.
* `augment_rows`, the kinds' form: the rows one member of a static kind trains on, no padding
  and no select between methods. The training engine compiles one program per kind present in a
  sweep (`kind_rows` rows a step: B/2 pairs under "halve" for the mixing kinds, B for control).

Both apply a registered method's `transform` (`embaug_jax.registry.Method`) to its own members'
rows, which is how the control-kind baselines (label smoothing, Gaussian noise, feature dropout)
are built, and how a new method of an existing kind is added without touching the engine. A
method that computes something no kind computes needs a kind: its name in `registry.KINDS`, its
row count in `kind_rows` and its branch in `augment_rows` (or, for a method that acts inside the
model like manifold mixup, in the engine's loss for that kind).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from embaug_jax import registry
from embaug_jax.augment.checks import (
    check_alpha,
    check_class_mask,
    check_key,
    check_name,
    check_options,
    check_setting,
    check_softness,
    prepare_inputs,
)
from embaug_jax.augment.methods import (
    combine,
    num_outputs,
    parents,
    sample_weights,
    soften_labels,
    stitch_mask,
    take_from,
)
from embaug_jax.registry import KINDS
from embaug_jax.util import is_traced

# Values of `MethodParams.mix`: the kind's index in `KINDS`.
MIX_CONTROL, MIX_MIXUP, MIX_STITCHUP, MIX_MANIFOLD = (KINDS.index(k) for k in KINDS)
# (method id, transform) pairs: the transforms a program applies, each to its method's members.
Transforms = tuple[tuple[int, Callable], ...]


@jax.tree_util.register_pytree_node_class
class MethodParams:
    """An augmentation method as arrays, so sweeps vmap over methods without recompiling.

    Fields, each a (possibly traced) scalar: `mix` (int32, the kind's index in `KINDS`:
    MIX_CONTROL, MIX_MIXUP, MIX_STITCHUP, MIX_MANIFOLD), `soft` (bool: apply `soften_labels`
    after the kind's rows; a switch of its own, as softness 0 still adds the negative mass),
    `method` (int32, `registry.method_index`: selects the method's transform), then one float32
    per traced registered method setting (alpha, softness, smoothing, noise_std, drop_rate,
    ...), 0 where the method does not read it; the settings every method reads (the learning
    rate, ...: `registry.Setting.every_method`) are the training engine's, not here. Stack
    members along a leading axis to vmap.

    Untraced settings ride along as Python numbers (`static`, read as attributes like the
    rest); members stacked together must share them.

    Used like the NamedTuple it was: `params.alpha`, `params._fields`,
    `params._replace(alpha=0.3)`; a pytree for `jax.tree.map`, `jax.vmap` and `jax.jit`.
    """

    __slots__ = ("_fields", "_values", "static")

    def __init__(self, *, mix: Any, soft: Any, method: Any,
                 static: tuple[tuple[str, float], ...] = (), **settings: Any):
        names = tuple(s.name for s in registry.settings(traced=True, every_method=False))
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise TypeError(f"MethodParams has no traced setting {unknown}; registered: "
                            f"{list(names)}")
        self._set(("mix", "soft", "method") + names,
                  (mix, soft, method) + tuple(settings.get(n, 0.0) for n in names), static)

    def _set(self, fields, values, static) -> MethodParams:
        object.__setattr__(self, "_fields", tuple(fields))
        object.__setattr__(self, "_values", tuple(values))
        object.__setattr__(self, "static", tuple(static))
        return self

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_"):  # private names are slots: never looked up here
            if name in self._fields:
                return self._values[self._fields.index(name)]
            for key, value in self.static:
                if key == name:
                    return value
        raise AttributeError(f"MethodParams has no field {name!r}")

    def __setattr__(self, name, value):
        raise AttributeError("MethodParams is immutable; use _replace")

    def __repr__(self) -> str:
        fields = [f"{k}={v!r}" for k, v in zip(self._fields, self._values)]
        return f"MethodParams({', '.join(fields + [f'{k}={v!r}' for k, v in self.static])})"

    def _replace(self, **changes: Any) -> MethodParams:
        """A copy with the fields `changes` names replaced, as a NamedTuple's `_replace`."""
        unknown = sorted(set(changes) - set(self._fields))
        if unknown:
            raise ValueError(f"MethodParams has no field {unknown}; fields: {list(self._fields)}")
        values = tuple(changes.get(k, v) for k, v in zip(self._fields, self._values))
        return object.__new__(MethodParams)._set(self._fields, values, self.static)

    def with_static(self, static: tuple[tuple[str, float], ...]) -> MethodParams:
        """These params with the untraced settings `static` ((name, value) pairs) instead."""
        return object.__new__(MethodParams)._set(self._fields, self._values, static)

    def tree_flatten(self):
        return self._values, (self._fields, self.static)

    @classmethod
    def tree_unflatten(cls, aux, values) -> MethodParams:
        return object.__new__(cls)._set(aux[0], values, aux[1])


def method_params(name: str, alpha: float | None = None, softness: float | None = None,
                  **settings: float) -> MethodParams:
    """The `MethodParams` of a registered method (the paper's five, a baseline or your own).

    A setting the method reads takes the value given, or else the first value of the setting's
    default grid (alpha 0.2, softness 0.05, ...); the method's members hold 0 for the others,
    so e.g. a control never smooths whatever `smoothing` says. Values given are checked.
    """
    row = registry.method(name)
    given = {k: v for k, v in dict(alpha=alpha, softness=softness, **settings).items()
             if v is not None}
    for key, value in given.items():
        setting = registry.setting(key)
        if setting.every_method:
            raise ValueError(f"{key} is read by every method: a sweep member's value "
                             f"(config.{setting.config_key} or config.sweep.{setting.grid}), "
                             "not a method parameter")
        check_setting(setting, value)
    traced, static = {}, []
    for s in registry.settings(every_method=False):
        value = given.get(s.name, s.default[0]) if s.name in row.reads else 0.0
        if s.traced:
            traced[s.name] = jnp.asarray(value, jnp.float32)
        elif s.name in row.reads:
            static.append((s.name, float(value)))
    return MethodParams(mix=jnp.asarray(KINDS.index(row.kind), jnp.int32),
                        soft=jnp.asarray(row.soft, jnp.bool_),
                        method=jnp.asarray(registry.method_index(name), jnp.int32),
                        static=tuple(static), **traced)


def kind_transforms(kind: str, untraced: Iterable[str] = ()) -> Transforms:
    """The registered transforms of `kind`'s methods, as (method id, transform) pairs: those of
    the methods whose untraced settings are `untraced` (members with other untraced settings
    never share a program with them)."""
    check_name("kind", kind, KINDS)
    untraced, numbers = set(untraced), {s.name for s in registry.settings(traced=False)}
    return tuple((i, m.transform) for i, m in enumerate(registry.methods())
                 if m.kind == kind and m.transform is not None
                 and numbers.intersection(m.reads) == untraced)


@jax.custom_batching.custom_vmap
def any_member(flag):
    """`flag` (a bool scalar); under `jax.vmap`, one unbatched `any` over the members.

    A `lax.cond` on it stays a real branch under vmap (a batched predicate would turn it into a
    select that runs both sides for every member): the branch runs when some member needs it,
    and each member's own parameters then make it a no-op for the others.
    """
    return flag


@any_member.def_vmap
def _any_member_batched(axis_size, in_batched, flag):
    del axis_size
    return (jnp.any(flag) if in_batched[0] else flag), False


def _apply_transforms(transforms: Transforms, key, x, y, params: MethodParams, *,
                      class_mask=None):
    """Each (method id, transform) applied to the rows of its own method's members: run when
    some member is one of them (`any_member`), kept only for those."""
    for index, transform in transforms:
        mine = params.method == index

        def run(x=x, y=y, transform=transform, mine=mine):
            x_new, y_new = transform(key, x, y, params, class_mask=class_mask)
            return jnp.where(mine, x_new, x), jnp.where(mine, y_new, y)

        x, y = lax.cond(any_member(mine), run, lambda x=x, y=y: (x, y))
    return x, y


def _as_arrays(params: MethodParams) -> MethodParams:
    """Every field as the array dtype the programs compute with."""
    dtypes = dict(mix=jnp.int32, soft=jnp.bool_, method=jnp.int32)
    return params._replace(**{k: jnp.asarray(getattr(params, k), dtypes.get(k, jnp.float32))
                              for k in params._fields})


# --------------------------------------------------------------------------------------------
# The padded form: every method in one program
# --------------------------------------------------------------------------------------------


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
    check_key(key)
    if not isinstance(params, MethodParams):
        raise ValueError(
            f"params must be a MethodParams (build one with method_params(name, alpha, "
            f"softness)), got {type(params).__name__}"
        )
    for field in params._fields:
        if np.ndim(getattr(params, field)) != 0:
            raise ValueError(
                f"params.{field} must be a scalar, got shape {np.shape(getattr(params, field))}; "
                "vmap over stacked params instead of passing arrays"
            )
    x, y, sizes = prepare_inputs(
        x, y, num_classes=num_classes, pairing=pairing, label_weight=label_weight, segments=segments
    )
    check_softness(params.softness, negative_mass)
    mix_idx = jnp.asarray(params.mix, jnp.int32)
    if not is_traced(mix_idx) and int(mix_idx) not in (MIX_CONTROL, MIX_MIXUP, MIX_STITCHUP):
        raise ValueError(
            f"params.mix must be 0 (control), 1 (mixup) or 2 (stitchup), got {int(mix_idx)}"
            + ("; manifold mixup (3) mixes inside the model: train it with the sweep engine"
               if int(mix_idx) == MIX_MANIFOLD else "")
        )
    if not is_traced(mix_idx) and int(mix_idx) != MIX_CONTROL:
        check_alpha(params.alpha)
    params = _as_arrays(params)
    class_mask = check_class_mask(class_mask, y.shape[1])
    if negative_mass is not None:
        negative_mass = jnp.asarray(negative_mass, jnp.float32)
    untraced = [name for name, _ in params.static]
    return _augment_batch(key, x, y, params, class_mask, negative_mass, pairing=pairing,
                          label_weight=label_weight, sizes=sizes,
                          control=kind_transforms("control", untraced),
                          mixing=(kind_transforms("mixup", untraced)
                                  + kind_transforms("stitchup", untraced)))


# Jitted so that eager calls compile once per shape and configuration; inside a caller's jit it
# is simply inlined. The transforms are static: a method registered later gets a new program.
@partial(jax.jit, static_argnames=("pairing", "label_weight", "sizes", "control", "mixing"))
def _augment_batch(key, x, y, params, class_mask, negative_mass, *, pairing, label_weight, sizes,
                   control, mixing):
    batch, dim = x.shape
    # The same key split as the named functions, so every method reproduces its named function.
    k_pair, k_lam, k_mask = jax.random.split(key, 3)
    pairs = batch // 2 if pairing == "halve" else batch
    is_control = params.mix == MIX_CONTROL
    lam_a, lam_b, from_a = _draws(k_lam, k_mask, params.mix, params.alpha,
                                  shape=(pairs, 1 if sizes is None else len(sizes)), dim=dim,
                                  sizes=sizes)
    # No lax.switch on the method: under vmap a batched switch becomes a select that runs every
    # branch for every member. The data path is one fused elementwise pass for all methods; the
    # costly random draws are skipped by `_draws` for the methods no member uses.
    (x_a, y_a), (x_b, y_b) = parents(k_pair, take_from(x, y), batch, pairing)
    x_mix, y_mix = combine(params.mix == MIX_STITCHUP, x_a, x_b, y_a, y_b, lam_a, lam_b, from_a,
                           label_weight=label_weight, sizes=sizes)
    x_mix, y_mix = _apply_transforms(mixing, k_mask, x_mix, y_mix, params, class_mask=class_mask)
    weight = jnp.ones(pairs, jnp.float32)
    if pairs < batch:
        pad = batch - pairs
        x_mix = jnp.concatenate([x_mix, jnp.zeros((pad,) + x_mix.shape[1:], x_mix.dtype)])
        y_mix = jnp.concatenate([y_mix, jnp.zeros((pad,) + y_mix.shape[1:], y_mix.dtype)])
        weight = jnp.concatenate([weight, jnp.zeros(pad, jnp.float32)])
    # The control's rows, with the control-kind methods' transforms.
    x_ctrl, y_ctrl = _apply_transforms(control, k_mask, x, y, params, class_mask=class_mask)
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
    (all False otherwise). Each draw sits behind a `lax.cond` on `any_member`, so it is skipped
    when no member needs it, alone or under `jax.vmap` (where a batched predicate would run
    both sides for every member): vmapped over members of one method, a member costs what it
    costs alone.
    """
    is_control = mix == MIX_CONTROL
    # A control member's alpha is never used; a safe value keeps NaN out of a vmapped batch.
    alpha = jnp.where(is_control, 1.0, jnp.asarray(alpha, jnp.float32))
    lam_a, lam_b = lax.cond(
        any_member(~is_control), lambda: sample_weights(k_lam, alpha, shape),
        lambda: (jnp.ones(shape, jnp.float32), jnp.zeros(shape, jnp.float32)))
    lam_a = jnp.where(is_control, 1.0, lam_a)
    lam_b = jnp.where(is_control, 0.0, lam_b)
    is_stitch = mix == MIX_STITCHUP
    from_a = lax.cond(any_member(is_stitch), lambda: stitch_mask(k_mask, lam_a, dim, sizes),
                      lambda: jnp.zeros((shape[0], dim), jnp.bool_))
    return lam_a, lam_b, from_a & is_stitch


# --------------------------------------------------------------------------------------------
# The kinds' form: the static form the training engine groups members by
# --------------------------------------------------------------------------------------------


def kind_rows(kind: str, batch: int, pairing: str = "halve") -> int:
    """Rows a member of `kind` trains on per step of `batch` examples (for "manifold": pairs,
    each of two parent rows)."""
    check_name("kind", kind, KINDS)
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
    return sample_weights(k_lam, jnp.asarray(params.alpha, jnp.float32),
                          (pairs, 1 if sizes is None else len(sizes)))


def augment_rows(key, take: Callable, batch: int, params: MethodParams, *, kind: str,
                 class_mask=None, pairing="halve", negative_mass=1.0, label_weight="lambda",
                 segments=None, weights=None, transforms: Transforms | None = None):
    """The rows one member of a static `kind` trains on: no padding, no branch on the method.

    For the same key the rows equal `augment_batch`'s weight-1 rows (and the named function's
    output). Traceable, vmappable over params and keys; nothing is checked beyond the kind and
    the options (`check_options`), so call it inside a program whose inputs were validated.

    Args:
      take: `take(rows) -> (x[rows], y[rows] float)` for an index array or a slice of the
        batch's `batch` rows, so the caller gathers the parents from wherever its data lives.
      kind: one of `KINDS` (the method's `registry.method(name).kind`); params.mix is ignored.
      weights: optional (lam_a, lam_b) from `draw_weights` with the same key (for "manifold",
        drawn without segments: it mixes hidden units, not embedding segments).
      transforms: the kind's transforms (default: `kind_transforms` of the kind and the params'
        untraced settings, as registered now; a compiled program passes its spec's).
    Returns:
      (x [R, D], y [R, C]) with R = `kind_rows(kind, batch, pairing)`; for "manifold", x is
      (x_a, x_b, lam_a, lam_b), the pairs `manifold_mixup` returns, for
      `MLP(..., mix_with=x_b, mix_weights=(lam_a, lam_b))`.
    """
    check_name("kind", kind, KINDS)
    check_options(pairing=pairing, label_weight=label_weight, negative_mass=negative_mass)
    if transforms is None:
        transforms = kind_transforms(kind, [name for name, _ in params.static])
    sizes = None if segments is None else tuple(int(v) for v in segments)
    k_pair, k_lam, k_mask = jax.random.split(key, 3)
    if kind == "control":
        x, y = take(slice(None))
        x, y = _apply_transforms(transforms, k_mask, x, y, params, class_mask=class_mask)
    elif kind == "manifold":
        if weights is None:
            weights = draw_weights(key, params, batch, pairing=pairing)
        lam_a, lam_b = weights
        (x_a, y_a), (x_b, y_b) = parents(k_pair, take, batch, pairing)
        compute = jnp.promote_types(y_a.dtype, jnp.float32)
        y = (lam_a.astype(compute) * y_a.astype(compute)
             + lam_b.astype(compute) * y_b.astype(compute)).astype(y_a.dtype)
        x = (x_a, x_b, lam_a, lam_b)
    else:
        if weights is None:
            weights = draw_weights(key, params, batch, pairing=pairing, segments=sizes)
        lam_a, lam_b = weights
        (x_a, y_a), (x_b, y_b) = parents(k_pair, take, batch, pairing)
        from_a = (stitch_mask(k_mask, lam_a, x_a.shape[1], sizes) if kind == "stitchup"
                  else None)
        x, y = combine(kind == "stitchup", x_a, x_b, y_a, y_b, lam_a, lam_b, from_a,
                       label_weight=label_weight, sizes=sizes)
        x, y = _apply_transforms(transforms, k_mask, x, y, params, class_mask=class_mask)
    softness = jnp.asarray(params.softness, jnp.float32)
    if negative_mass is not None:
        negative_mass = jnp.asarray(negative_mass, jnp.float32)
    y_soft = soften_labels(y, softness, negative_mass, class_mask=class_mask)
    return x, jnp.where(params.soft, y_soft, y)
