"""A sweep's members: the grid a config spans, each member as traced arrays, and its programs.

A member is one method at one value of each setting it reads and of each setting every method
reads (the learning-rate cycle, the weight decay, the dropout rate: `train.optim`), on one
trial's split with one seed (`sweep_members`). Everything that varies between members is a
traced array (`MemberHParams`), except what changes shapes or code: the method's kind, and its
untraced settings (`registry.Setting.traced`). Members that agree on those share one compiled
program (`member_groups`).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from embaug_jax import augment, registry
from embaug_jax.train.optim import config_value, sweep_grid


class MemberHParams(NamedTuple):
    """Everything a sweep varies within a program, as (stackable) scalar arrays."""

    method: augment.MethodParams
    trial: jax.Array  # int32 index into the split arrays
    seed: jax.Array  # int32
    # float32 by name: each setting every method reads (`registry.settings(every_method=True)`)
    optim: dict[str, jax.Array]


class Group(NamedTuple):
    """Members that share one compiled program."""

    name: str  # the kind, and the untraced settings' values if any: "control", "mixup(depth=2)"
    members: np.ndarray  # int: their indices in the sweep's member list
    kind: str
    static: tuple[tuple[str, float], ...] = ()  # the untraced settings' (name, value)
    # The settings every method reads that all its members share, (name, value): constants of
    # the program (`train.program.ProgramSpec.fixed`).
    fixed: tuple[tuple[str, float], ...] = ()


def sweep_members(config) -> list[dict]:
    """The members of a sweep, in order: method, then its settings' grids, then the grids of
    the settings every method reads, then trial, then seed.

    A method runs the product of the grids (`config.sweep.<setting.grid>`) of the settings it
    reads, in the order it reads them (control none; a soft method alpha x softness), and of
    the settings every method reads, in registration order (each the config's one value unless
    config.sweep sets its grid: `train.optim.sweep_grid`). Every member records every registered
    setting, 0 where its method does not read it.
    """
    s = config.sweep
    names = [setting.name for setting in registry.settings()]
    every = [setting.name for setting in registry.settings(every_method=True)]
    members = []
    for method in s.methods:
        reads = registry.method(method).reads + tuple(every)
        grids = [sweep_grid(config, registry.setting(n)) for n in reads]
        for values in itertools.product(*grids):
            setting = {**dict.fromkeys(names, 0.0), **dict(zip(reads, values))}
            for trial in range(config.data.trials):
                for seed in s.seeds:
                    members.append(dict(method=method, **setting, trial=trial, seed=int(seed)))
    return members


def with_config_settings(config, members: Sequence[dict]) -> list[dict]:
    """`members` with each setting every method reads that one lacks set to the config's value
    (config.optim / config.model), as `sweep_members` records it."""
    values = {s.name: config_value(config, s) for s in registry.settings(every_method=True)}
    return [{**m, **{k: v for k, v in values.items() if k not in m}} for m in members]


def member_hparams(members: Sequence[dict]) -> MemberHParams:
    """Stacks members into one MemberHParams with a leading [M] axis (their untraced settings
    are left to the programs: see `member_groups`). Each member holds every setting every
    method reads (`sweep_members`' do; `with_config_settings` fills a hand-made list)."""
    every = [s.name for s in registry.settings(every_method=True)]

    def one(i, m):
        missing = [n for n in every if n not in m]
        if missing:
            raise ValueError(f"member {i} ({m}) has no {', '.join(missing)}: every member holds "
                             "each setting every method reads; fill them with "
                             "with_config_settings(config, members)")
        reads = registry.method(m["method"]).reads
        params = augment.method_params(m["method"], **{n: m.get(n, 0.0) for n in reads})
        return MemberHParams(params.with_static(()), jnp.int32(m["trial"]), jnp.int32(m["seed"]),
                             {n: jnp.float32(m[n]) for n in every})

    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]),
                        *[one(i, m) for i, m in enumerate(members)])


def member_groups(members: Sequence[dict]) -> list[Group]:
    """The members' groups, in order of first appearance: one per kind and values of the
    untraced settings its methods read, each with the values of the settings every method reads
    that all its members share."""
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
        fixed = tuple((s.name, float(members[idx[0]][s.name]))
                      for s in registry.settings(every_method=True)
                      if all(s.name in members[i] for i in idx)
                      and len({float(members[i][s.name]) for i in idx}) == 1)
        groups.append(Group(name, idx, kind, static, fixed))
    return groups
