"""A sweep's members: the grid a config spans, each member as traced arrays, and its programs.

A member is one method at one value of each setting it reads, on one trial's split with one
seed (`sweep_members`). Everything that varies between members is a traced array
(`MemberHParams`), except what changes shapes or code: the method's kind, and its untraced
settings (`registry.Setting.traced`). Members that agree on those share one compiled program
(`member_groups`).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from embaug_jax import augment, registry


class MemberHParams(NamedTuple):
    """Everything a sweep varies within a program, as (stackable) scalar arrays."""

    method: augment.MethodParams
    trial: jax.Array  # int32 index into the split arrays
    seed: jax.Array  # int32


class Group(NamedTuple):
    """Members that share one compiled program."""

    name: str  # the kind, and the untraced settings' values if any: "control", "mixup(depth=2)"
    members: np.ndarray  # int: their indices in the sweep's member list
    kind: str
    static: tuple[tuple[str, float], ...] = ()  # the untraced settings' (name, value)


def sweep_members(config) -> list[dict]:
    """The members of a sweep, in order: method, then its settings' grids, then trial, then
    seed.

    A method runs the product of the grids (`config.sweep.<setting.grid>`) of the settings it
    reads, in the order it reads them (control none, so it appears once per trial and seed; a
    soft method alpha x softness); every member records every registered setting, 0 where its
    method does not read it.
    """
    s = config.sweep
    names = [setting.name for setting in registry.settings()]
    members = []
    for method in s.methods:
        reads = registry.method(method).reads
        grids = [[float(v) for v in s.get(registry.setting(n).grid, ())] for n in reads]
        for values in itertools.product(*grids):
            setting = {**dict.fromkeys(names, 0.0), **dict(zip(reads, values))}
            for trial in range(config.data.trials):
                for seed in s.seeds:
                    members.append(dict(method=method, **setting, trial=trial, seed=int(seed)))
    return members


def member_hparams(members: Sequence[dict]) -> MemberHParams:
    """Stacks members into one MemberHParams with a leading [M] axis (their untraced settings
    are left to the programs: see `member_groups`)."""

    def one(m):
        reads = registry.method(m["method"]).reads
        params = augment.method_params(m["method"], **{n: m.get(n, 0.0) for n in reads})
        return MemberHParams(params.with_static(()), jnp.int32(m["trial"]), jnp.int32(m["seed"]))

    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]),
                        *[one(m) for m in members])


def member_groups(members: Sequence[dict]) -> list[Group]:
    """The members' groups, in order of first appearance: one per kind and values of the
    untraced settings its methods read."""
    untraced = {s.name for s in registry.settings(traced=False)}
    keys = []
    for m in members:
        row = registry.method(m["method"])
        static = tuple((n, float(m.get(n, 0.0))) for n in row.reads if n in untraced)
        keys.append((row.kind, static))
    groups = []
    for kind, static in dict.fromkeys(keys):
        name = kind + (f"({','.join(f'{n}={v:g}' for n, v in static)})" if static else "")
        idx = np.array([i for i, k in enumerate(keys) if k == (kind, static)])
        groups.append(Group(name, idx, kind, static))
    return groups
