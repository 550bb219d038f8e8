"""The sweep engine: a whole sweep (method x alpha x softness x trial x seed) as a few programs.

`make_program(spec)` returns the pure per-member functions of one augmentation kind (purejaxrl
style; `ProgramSpec.from_config(config, num_classes, n_train, kind=...)` holds everything it
reads): epochs and steps are `lax.scan`s, shuffling and augmentation happen on device.
Everything a sweep varies within a kind -- alpha, softness, the soft switch, the trial's split,
the seed -- is a traced array in `MemberHParams`, so one compiled program trains every member of
the kind (`compiled_group`: vmapped on accelerators, one member after another on each CPU device).

Groups. Members are grouped by `augment.KIND_OF_METHOD`: all controls, all E-Mixup variants
(soft or not), all E-Stitchup variants; the ablation baselines soft control, label smoothing,
Gaussian noise and feature dropout join the control kind (traced transforms of its B rows,
`augment.control_transforms`) and manifold mixup is its own kind, whose pairs the loss mixes
after the model's first hidden layer. A group shares shapes and code, so a sweep compiles one
member-sharded program per kind present, and each member computes only the rows it
trains on: under the paper's halving a mixing member trains on B/2 mixed rows, the control on
B rows, with no padding rows and no select between methods (`augment.augment_rows`). A new
method joins an existing kind or adds one (see `embaug_jax.augment`, "Kinds"); the engine
needs no change for the former and a branch in `augment.augment_rows` for the latter.

Data. Training gathers only from the training rows of every trial, so only those (their union)
are placed on each device; evaluation computes only the validation rows, streamed from the host
(a memory-mapped dataset stays on disk) in blocks of `config.eval_block_rows`, so the device
holds a bounded amount whatever N is. `config.device_data_bytes` caps the dataset bytes placed
on one device (training rows + one evaluation block); the block shrinks to fit.

`run_sweep(config, data, members)` shards each group's member axis over the devices, trains in
chunks of `config.chunk_epochs` epochs (`eval_every` epochs per compiled call, each followed by a
streamed evaluation; a tqdm tick and an `on_chunk` call per chunk; an orbax checkpoint every
`config.checkpoint_every` epochs, resumed when present) and returns a `SweepResult`, which
`report.write_report(workdir, result)` turns into the report.

Keys: member key = fold_in(fold_in(root, seed), trial); its first split initialises the MLP, the
second drives training: epoch key = fold_in(train_key, epoch) splits into the shuffle key and a
steps key, and step key = fold_in(steps key, step). Nothing random depends on how many members
run, on the grouping or on the chunking, so a member trained alone, inside a sweep, on 1 or 4
devices, or across a resume sees the same numbers. Members that differ only in method or alpha
share their initialisation and shuffles (common random numbers), so a comparison of methods
within a trial is not confounded by the draw; trials get independent initialisations as well
as splits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from embaug_jax import augment
from embaug_jax.evaluate.threshold import accuracies, threshold_counts
from embaug_jax.train.mlp import MLP, classification_loss, probabilities
from embaug_jax.util import (UserError, large_dot_compiler_options, list_first, on_cpus,
                             reuse_freed_memory, unroll_cpu_threefry)

OPTIMIZERS = ("adamw", "sgd")
# Config keys whose change makes an existing checkpoint meaningless for this run.
FINGERPRINT_KEYS = ("data", "model", "optim", "augment", "sweep", "num_epochs", "batch_size",
                    "eval_every", "seed")
METRIC_NAMES = ("overall_accuracy", "none_accuracy", "seen_accuracy", "train_loss")


# ---------------------------------------------------------------------------------------------
# What one member is, as traced arrays.


class MemberHParams(NamedTuple):
    """Everything a sweep varies, as (stackable) scalar arrays."""

    method: augment.MethodParams
    trial: jax.Array  # int32 index into the split arrays
    seed: jax.Array  # int32


class TrainData(NamedTuple):
    """A sweep's data. `x` may live on the host (a numpy array or memory map): `run_sweep`
    places only the training rows on the devices and streams the validation rows."""

    x: Any  # float [N, D] all embeddings
    labels: Any  # int [N]
    train_idx: Any  # int [T, n_train]
    val_idx: Any  # int [T, n_val]
    seen_mask: Any  # bool [T, C]


class DeviceData(NamedTuple):
    """What training gathers from, placed on every device: the union of the trials' rows."""

    x: jax.Array  # float32 [R, D] the training rows of every trial (R <= T * n_train)
    labels: jax.Array  # int32 [R]
    train_idx: jax.Array  # int32 [T, n_train] indices into x
    seen_mask: jax.Array  # bool [T, C]


class EvalBlock(NamedTuple):
    """One block of every trial's validation rows (rows past the end are padding)."""

    x: jax.Array  # float32 [T, rows, D]
    labels: jax.Array  # int32 [T, rows]
    valid: jax.Array  # bool [rows]


def device_data(data: TrainData) -> DeviceData:
    """The training part of `data`, indices remapped into the union of the trials' rows."""
    train_idx = np.asarray(data.train_idx)
    rows, remapped = np.unique(train_idx, return_inverse=True)
    x = np.asarray(data.x[rows], np.float32)
    return DeviceData(x, np.asarray(data.labels)[rows].astype(np.int32),
                      remapped.reshape(train_idx.shape).astype(np.int32),
                      np.asarray(data.seen_mask, bool))


def eval_blocks(data: TrainData, block_rows: int):
    """Yields `EvalBlock`s of `block_rows` validation rows of every trial, gathered on the host
    (only those rows are read from a memory-mapped `x`); the last block is padded."""
    val_idx = np.asarray(data.val_idx)
    labels = np.asarray(data.labels)
    n_val = val_idx.shape[1]
    for start in range(0, n_val, block_rows):
        idx = val_idx[:, start:start + block_rows]
        n = idx.shape[1]
        rows = np.sort(np.unique(idx))  # one sorted read of the memory map
        x = np.asarray(data.x[rows], np.float32)[np.searchsorted(rows, idx)]
        pad = block_rows - n
        if pad:
            x = np.concatenate([x, np.zeros((x.shape[0], pad, x.shape[2]), np.float32)], 1)
            idx = np.concatenate([idx, np.repeat(idx[:, :1], pad, 1)], 1)
        yield EvalBlock(x, labels[idx].astype(np.int32), np.arange(block_rows) < n)


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    epoch: jax.Array  # int32: epochs completed


# The sweep config's grid of each method hyperparameter (augment.METHOD_HPARAMS).
HPARAM_GRIDS = {"alpha": "alphas", "softness": "softness", "smoothing": "smoothing",
                "noise_std": "noise_std", "drop_rate": "drop_rate"}


def sweep_members(config) -> list[dict]:
    """The members of a sweep, in order: method, then its hyperparameter grid, then trial, then
    seed.

    A method runs the product of the grids of the hyperparameters it reads
    (`augment.METHOD_HPARAMS`: control none, so it appears once per trial and seed; a soft method
    alpha x softness); every member records all of `augment.HPARAM_NAMES`, 0 where unused.
    """
    s = config.sweep
    members = []
    for method in s.methods:
        names = augment.METHOD_HPARAMS[method]
        grids = [[float(v) for v in s.get(HPARAM_GRIDS[n], ())] for n in names]
        for values in itertools.product(*grids):
            setting = {**dict.fromkeys(augment.HPARAM_NAMES, 0.0), **dict(zip(names, values))}
            for trial in range(config.data.trials):
                for seed in s.seeds:
                    members.append(dict(method=method, **setting, trial=trial, seed=int(seed)))
    return members


def member_hparams(members: Sequence[dict]) -> MemberHParams:
    """Stacks members into one MemberHParams with a leading [M] axis."""

    def one(m):
        # An unused alpha is never read; any valid value keeps method_params' checks happy.
        alpha = m["alpha"] if "alpha" in augment.METHOD_HPARAMS[m["method"]] else 1.0
        params = augment.method_params(
            m["method"], alpha, m["softness"], smoothing=m.get("smoothing", 0.0),
            noise_std=m.get("noise_std", 0.0), drop_rate=m.get("drop_rate", 0.0))
        return MemberHParams(params, jnp.int32(m["trial"]), jnp.int32(m["seed"]))

    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]),
                        *[one(m) for m in members])


# ---------------------------------------------------------------------------------------------
# The pure program.


def triangular_schedule(low: float, high: float, half_cycle_steps: int) -> optax.Schedule:
    """Triangular cyclic learning rate: low -> high over `half_cycle_steps`, back, and repeat."""
    if half_cycle_steps < 1:
        raise ValueError(f"half_cycle_steps={half_cycle_steps} must be >= 1.")

    def schedule(step):
        phase = jnp.mod(step, 2 * half_cycle_steps) / half_cycle_steps  # in [0, 2)
        return low + (high - low) * (1.0 - jnp.abs(phase - 1.0))

    return schedule


@dataclasses.dataclass(frozen=True)
class ProgramSpec:
    """Everything the compiled program reads besides the traced members and the data arrays.

    `make_program` reads nothing else, and the compile cache is keyed on the spec itself, so a
    new knob the program depends on has to become a field here and can never reuse a stale
    program. Build one from a config with `ProgramSpec.from_config`.
    """

    num_classes: int
    n_train: int  # training rows per trial
    hidden: tuple[int, ...]
    dropout: float
    head: str
    optimizer: str
    lr_min: float
    lr_max: float
    half_cycle_epochs: int
    weight_decay: float
    momentum: float
    batch_size: int
    pairing: str
    negative_mass: float | None
    label_weight: str
    segments: tuple[int, ...] | None  # sizes mixed independently; None: one lambda per pair
    eval_every: int
    eval_block_rows: int
    threshold: float
    kind: str = "control"  # `augment.KINDS`: the members' code path and rows per step

    @classmethod
    def from_config(cls, config, num_classes: int, n_train: int, *,
                    segments=None, kind: str = "control") -> "ProgramSpec":
        m, o, a = config.model, config.optim, config.augment
        return cls(
            num_classes=int(num_classes), n_train=int(n_train),
            hidden=tuple(int(h) for h in m.hidden), dropout=float(m.dropout), head=str(m.head),
            optimizer=str(o.optimizer), lr_min=float(o.lr_min), lr_max=float(o.lr_max),
            half_cycle_epochs=int(o.half_cycle_epochs), weight_decay=float(o.weight_decay),
            momentum=float(o.momentum), batch_size=int(config.batch_size),
            pairing=str(a.pairing),
            negative_mass=None if a.negative_mass is None else float(a.negative_mass),
            label_weight=str(a.label_weight),
            segments=None if segments is None else tuple(int(s) for s in segments),
            eval_every=int(config.eval_every), eval_block_rows=int(config.eval_block_rows),
            threshold=float(config.threshold), kind=str(kind))

    @property
    def steps_per_epoch(self) -> int:
        return self.n_train // self.batch_size


def make_optimizer(spec: ProgramSpec) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay) or SGD with momentum and L2, on the triangular cycle."""
    lr = triangular_schedule(spec.lr_min, spec.lr_max,
                             spec.half_cycle_epochs * spec.steps_per_epoch)
    if spec.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "sgd":
        return optax.chain(optax.add_decayed_weights(spec.weight_decay),
                           optax.sgd(lr, momentum=spec.momentum))
    raise ValueError(f"unknown optimizer {spec.optimizer!r}; choose one of {OPTIMIZERS}.")


@dataclasses.dataclass(frozen=True)
class Program:
    """The pure per-member functions of one kind, which the driver maps (or vmaps), jits and
    shards.

    init(key, hp, data: DeviceData) -> TrainState
    train(key, hp, state, data, num_epochs) -> (state, mean training loss of those epochs)
    evaluate(params, hp, data, block: EvalBlock) -> (counts int32 [5], probabilities float32 [rows, C]);
      counts = (correct, correct "none", "none" rows, correct seen, seen rows) over valid rows.
    """

    init: Callable
    train: Callable
    evaluate: Callable
    model: MLP
    kind: str
    rows: int  # rows a member trains on per step
    steps_per_epoch: int


def _member_keys(key, hp: MemberHParams):
    member = jax.random.fold_in(jax.random.fold_in(key, hp.seed), hp.trial)
    init_key, train_key = jax.random.split(member)
    return init_key, train_key


def metrics_from_counts(counts) -> dict:
    """`evaluate.accuracies` of summed `Program.evaluate` counts, named as METRIC_NAMES (float32:
    the sums are integers, so blocks summed on the host give the one-shot values exactly)."""
    return {f"{k}_accuracy": v for k, v in accuracies(jnp.asarray(counts)).items()}


def make_program(spec: ProgramSpec) -> Program:
    """Builds the per-member init / train / evaluate of `spec.kind` (shapes are static)."""
    if not isinstance(spec, ProgramSpec):
        raise TypeError(f"make_program takes a ProgramSpec (ProgramSpec.from_config(config, "
                        f"num_classes, n_train)), got {type(spec).__name__}.")
    kind = spec.kind
    augment._check_name("kind", kind, augment.KINDS)
    unroll_cpu_threefry()  # a step's dropout, pairing and shuffle draws: same bits, one pass each
    num_classes, head, batch = spec.num_classes, spec.head, spec.batch_size
    model = MLP(num_classes=num_classes, hidden=spec.hidden, dropout=spec.dropout, head=head)
    steps_per_epoch = spec.steps_per_epoch
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size={batch} exceeds the {spec.n_train} training rows of a "
                         "split; lower config.batch_size or raise config.data.train_fraction.")
    tx = make_optimizer(spec)
    threshold, segments = spec.threshold, spec.segments
    rows = augment.kind_rows(kind, batch, spec.pairing)

    def init(key, hp, data):
        init_key, _ = _member_keys(key, hp)
        params = model.init(init_key, jnp.zeros((1, data.x.shape[1]), data.x.dtype))
        return TrainState(params, tx.init(params), jnp.int32(0))

    def loss_fn(params, x, y, seen, dropout_key):
        if kind == "manifold":  # pairs mixed after the first hidden layer, inside the model
            x_a, x_b, lam_a, lam_b = x
            logits = model.apply(params, x_a, train=True, mix_with=x_b, mix_weights=(lam_a, lam_b),
                                 rngs={"dropout": dropout_key,
                                       "dropout_b": jax.random.fold_in(dropout_key, 1)})
        else:
            logits = model.apply(params, x, train=True, rngs={"dropout": dropout_key})
        return classification_loss(logits, y, jnp.ones(y.shape[0], jnp.float32), seen, head)

    def train_epoch(train_key, hp, data, state):
        seen = data.seen_mask[hp.trial]
        order = data.train_idx[hp.trial]
        shuffle_key, steps_key = jax.random.split(jax.random.fold_in(train_key, state.epoch))
        order = order[jax.random.permutation(shuffle_key, order.shape[0])]
        step_keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(steps_key, i)))(
            jnp.arange(steps_per_epoch))
        aug_keys, dropout_keys = step_keys[:, 0], step_keys[:, 1]
        # An epoch's Beta variates in one vectorised draw: the Gamma sampler's rejection loop
        # then runs once per epoch, not once per step (same numbers: same keys).
        weights = None
        if kind != "control":
            # Manifold mixup mixes hidden units, not embedding segments: one lambda per pair.
            weights = jax.vmap(lambda k: augment.draw_weights(
                k, hp.method, batch, pairing=spec.pairing,
                segments=None if kind == "manifold" else segments))(aug_keys)

        def step(carry, inputs):
            params, opt_state = carry
            i, aug_key, dropout_key, w = inputs
            idx = jax.lax.dynamic_slice_in_dim(order, i * batch, batch)

            def take(r):
                # Pairing composed with the batch's indices: one gather from the device rows.
                rows_ = idx[r]
                return data.x[rows_], jax.nn.one_hot(data.labels[rows_], num_classes,
                                                     dtype=data.x.dtype)

            x, y = augment.augment_rows(
                aug_key, take, batch, hp.method, kind=kind, class_mask=seen,
                pairing=spec.pairing, negative_mass=spec.negative_mass,
                label_weight=spec.label_weight, segments=segments, weights=w)
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y, seen, dropout_key)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(
            step, (state.params, state.opt_state),
            (jnp.arange(steps_per_epoch), aug_keys, dropout_keys, weights))
        return TrainState(params, opt_state, state.epoch + 1), losses.mean()

    def train(key, hp, state, data, num_epochs: int):
        _, train_key = _member_keys(key, hp)
        state, losses = jax.lax.scan(lambda s, _: train_epoch(train_key, hp, data, s),
                                     state, None, length=num_epochs)
        return state, losses.mean()

    def evaluate(params, hp, data, block):
        x = block.x[hp.trial]
        labels = block.labels[hp.trial]
        seen = data.seen_mask[hp.trial]
        probs = probabilities(model.apply(params, x), head, seen).astype(jnp.float32)
        # Padding rows weigh 0: the counts are those of the block's valid rows.
        return threshold_counts(probs, labels, seen, threshold, block.valid), probs

    return Program(init, train, evaluate, model, kind, rows, steps_per_epoch)


def make_train(spec: ProgramSpec, num_epochs: int) -> Callable:
    """Returns the pure `train(key, hp, data) -> (state, metrics)` of one member of `spec.kind`.

    `data` is a `TrainData` of device arrays; the whole run (all epochs, an evaluation of the
    validation rows every `eval_every` epochs) is one program, so
    `jax.jit(jax.vmap(train, in_axes=(None, 0, None)))` trains members of one kind at once.
    Metrics hold one entry per evaluation ([num_epochs // eval_every]). `run_sweep` computes the
    same numbers with the data streamed and the members grouped.
    """
    program = make_program(spec)
    eval_every = spec.eval_every
    num_periods = int(num_epochs) // eval_every

    def train(key, hp, data):
        x = jnp.asarray(data.x, jnp.float32)
        labels = jnp.asarray(data.labels, jnp.int32)
        on_device = DeviceData(x, labels, jnp.asarray(data.train_idx, jnp.int32),
                               jnp.asarray(data.seen_mask, bool))
        val_idx = jnp.asarray(data.val_idx)
        block = EvalBlock(x[val_idx], labels[val_idx], jnp.ones(val_idx.shape[1], bool))

        def period(state, _):
            state, loss = program.train(key, hp, state, on_device, eval_every)
            counts, _ = program.evaluate(state.params, hp, on_device, block)
            metrics = metrics_from_counts(counts)
            metrics.update(train_loss=loss, epoch=state.epoch)
            return state, metrics

        return jax.lax.scan(period, program.init(key, hp, on_device), None, length=num_periods)

    return train


# ---------------------------------------------------------------------------------------------
# The driver: groups, devices, chunks, checkpoints.


def evaluation_epochs(config) -> np.ndarray:
    """The epochs after which the program evaluates: every `eval_every`, up to `num_epochs`."""
    every = int(config.eval_every)
    return np.arange(1, int(config.num_epochs) // every + 1) * every


def _host(x) -> np.ndarray:
    """A device array as numpy on this host. Across several hosts (`jax.distributed`) the member
    axis is sharded over every process's devices, so it is gathered from all of them first."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _pad(tree, multiple: int):
    """Pads the leading axis to a multiple by repeating the last entry (dropped afterwards)."""
    m = jax.tree.leaves(tree)[0].shape[0]
    extra = -m % multiple
    if not extra:
        return tree
    return jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], extra, 0)]), tree)


def place_members(hp: MemberHParams, mesh: Mesh) -> tuple[MemberHParams, jax.Array]:
    """A group's hyperparameters padded to a multiple of the mesh's devices and sharded over
    them, and `live` [padded M], False for the padding (which `compiled_group` skips)."""
    n, d = len(hp.trial), mesh.devices.size
    by_member = NamedSharding(mesh, P("members"))
    return (jax.device_put(_pad(hp, d), by_member),
            jax.device_put(np.arange(n + -n % d) < n, by_member))


def member_groups(members: Sequence[dict]) -> list[tuple[str, np.ndarray]]:
    """(kind, member indices) of every kind present, in order of first appearance: members of one
    kind share one compiled program."""
    kinds = [augment.KIND_OF_METHOD[m["method"]] for m in members]
    order = list(dict.fromkeys(kinds))
    return [(k, np.array([i for i, v in enumerate(kinds) if v == k])) for k in order]


def eval_block_rows(config, data: TrainData, on_device_bytes: int) -> int:
    """Validation rows per evaluation block: `config.eval_block_rows`, shrunk so that the
    training rows and one block fit in `config.device_data_bytes` (0: no cap)."""
    trials, n_val = np.shape(data.val_idx)
    rows = max(1, min(int(config.eval_block_rows), n_val))
    budget = int(config.get("device_data_bytes", 0) or 0)
    if not budget:
        return rows
    row_bytes = trials * (np.shape(data.x)[1] * 4 + 4)  # float32 embedding + int32 label
    fit = (budget - on_device_bytes) // row_bytes
    if fit < 1:
        raise ValueError(
            f"config.device_data_bytes={budget} cannot hold the training rows of every trial "
            f"({on_device_bytes} bytes) plus one validation row per trial ({row_bytes} bytes); "
            "raise it (0 = no cap) or train on fewer trials at once.")
    return int(min(rows, fit))


def members_at_once(config, devices: Sequence) -> int:
    """How many members of a group one device steps together: `config.members_at_once` (0 = all
    of them, `vmap`; k >= 1 = k at a time), or when it is None one at a time on CPU devices and
    all at once on accelerators."""
    n = config.get("members_at_once")
    if n is None:
        # On a CPU a member's parameters and Adam moments (~21 MB at the paper's shapes) stay in
        # the cache through its whole call; vmapped members stream all of theirs every step.
        return 1 if on_cpus(devices) else 0
    if int(n) < 0:
        raise UserError(f"config.members_at_once={n}; use None (auto), 0 (all at once: vmap) "
                        "or k >= 1 (k members at a time on each device).")
    return int(n)


def over_members(fn: Callable, at_once: int, skipped: Callable) -> Callable:
    """`fn(*args)` over a leading member axis of every argument, with a bool `live` [M] first.

    at_once = 0: every member at once (`jax.vmap`); k >= 1: k members at a time
    (`lax.map`), which runs the members' whole calls one group after another. A member whose
    `live` is False (device padding) returns `skipped(*args)` instead; one at a time, it costs
    nothing (k > 1 at a time computes it and discards it).
    """
    if not at_once:
        return lambda live, *args: jax.vmap(fn)(*args)

    def one(args):
        return jax.lax.cond(args[0], fn, skipped, *args[1:])

    # lax.map's batch_size vmaps its body, even over batches of one, and a vmapped cond runs
    # both branches: one at a time must be a plain map for the padding to cost nothing.
    return lambda live, *args: jax.lax.map(one, (live, *args),
                                           batch_size=at_once if at_once > 1 else None)


@functools.lru_cache(maxsize=16)
def compiled_group(spec: ProgramSpec, mesh: Mesh, at_once: int = 0):
    """The jitted, member-sharded init / train / evaluate of a spec (one kind).

    Each device runs its members (`over_members`: all at once, or `at_once` at a time) with
    `shard_map`; `live` [M] marks the members that are not device padding. Cached on the spec
    (all the program reads), so another sweep with the same spec in one process (a resume, a
    different method list, a test) reuses the compiled executables instead of tracing fresh
    closures.
    """
    program = make_program(spec)
    by_member = NamedSharding(mesh, P("members"))
    m, r = P("members"), P()

    def sharded(fn, in_specs, out_specs):
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                             check_vma=False)

    init = jax.jit(jax.vmap(program.init, in_axes=(None, 0, None)), out_shardings=by_member)

    def train(key, hp, live, state, data, num_epochs):
        def local(key, hp, live, state, data):
            fn = lambda hp, state: program.train(key, hp, state, data, num_epochs)
            skip = lambda hp, state: (state, jnp.float32(jnp.nan))
            return over_members(fn, at_once, skip)(live, hp, state)
        return sharded(local, (r, m, m, m, r), (m, m))(key, hp, live, state, data)

    def evaluate(params, hp, live, data, block):
        def local(params, hp, live, data, block):
            fn = lambda params, hp: program.evaluate(params, hp, data, block)
            skip = lambda params, hp: jax.tree.map(
                lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, params, hp))
            return over_members(fn, at_once, skip)(live, params, hp)
        return sharded(local, (m, m, m, r, r), (m, m))(params, hp, live, data, block)

    train = jax.jit(train, static_argnums=5, donate_argnums=3, out_shardings=by_member)
    evaluate = jax.jit(evaluate, out_shardings=by_member,
                       compiler_options=large_dot_compiler_options(mesh.devices.flat))
    return init, train, evaluate


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax logs each save and restore step at INFO; the progress bar already tells the story."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def _restore(manager, step, states, history, groups, sharding):
    """Restores an unpadded checkpoint and pads every group again for this run's devices.

    Every process reads the whole (small) checkpoint into host memory and places its own shards
    from there, so a checkpoint written by any number of processes and devices restores onto any
    other number.
    """
    import orbax.checkpoint as ocp

    target = {"state": {k: jax.tree.map(lambda x: np.zeros((len(idx), *x.shape[1:]), x.dtype),
                                        states[k]) for k, idx in groups},
              "history": history}
    try:
        restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"the checkpoint at {manager.directory} (epoch {step}) does not fit this "
                         f"run ({e}); use a new workdir or delete the checkpoints.") from e
    # Padded on the host: device_put then places only this process's shards.
    states = {k: jax.device_put(jax.tree.map(lambda x, padded: np.concatenate(
        [x, np.repeat(x[-1:], padded.shape[0] - x.shape[0], 0)]), restored["state"][k],
        states[k]), sharding) for k, _ in groups}
    return states, {k: np.asarray(restored["history"][k]) for k in history}


MEMBER_KEYS = ("method", "alpha", "softness", "trial", "seed")


@dataclasses.dataclass
class SweepResult:
    """What a sweep produced: all `report.write_report(workdir, result)` needs (numpy arrays;
    validated on construction).

    Attributes:
      members: per member {"method": str, "alpha": float, "softness": float, "trial": int,
        "seed": int}, in the sweep's order.
      eval_epochs: int [E], the epochs at which `history` was recorded.
      history: "overall_accuracy", "none_accuracy", "seen_accuracy", "train_loss" (and anything
        else) float [M, E], accuracies at `threshold`; NaN where not trained yet.
      val_probs: float [M, Nv, C], each member's final probabilities on its trial's validation
        split; None when the sweep stopped before its last epoch.
      val_labels: int [T, Nv], the validation labels of each trial (all trials have equal size).
      seen_mask: bool [T, C], the classes in each trial's training split.
      class_names: [C].
      threshold: the confidence threshold of the accuracies (`config.threshold`); None where
        not recorded, and `write_report` then needs it.
      val_idx, train_idx: optional int [T, Nv] / [T, n_train], the dataset rows of each trial's
        validation and training split (saved with the predictions, so an analysis can go back to
        the embeddings).
      epochs_done: epochs trained (default: the last evaluation epoch).
      state: the members' final `TrainState` ([M] leading axis, numpy), when the engine made it.
      eval_block_rows: validation rows per trial in one streamed evaluation block.
      device_data_bytes: dataset bytes the engine placed on each device (the training rows of
        every trial and one evaluation block).
    """

    members: list[dict]
    eval_epochs: np.ndarray
    history: dict[str, np.ndarray]
    val_probs: np.ndarray | None
    val_labels: np.ndarray
    seen_mask: np.ndarray
    class_names: list[str]
    threshold: float | None = None
    val_idx: np.ndarray | None = None
    train_idx: np.ndarray | None = None
    epochs_done: int | None = None
    state: TrainState | None = None
    eval_block_rows: int | None = None
    device_data_bytes: int | None = None

    def __post_init__(self):
        self.eval_epochs = np.asarray(self.eval_epochs).reshape(-1)
        self.val_probs = None if self.val_probs is None else np.asarray(self.val_probs)
        self.val_labels = np.asarray(self.val_labels)
        self.seen_mask = np.asarray(self.seen_mask)
        self.history = {k: np.asarray(v) for k, v in dict(self.history).items()}
        self.class_names = [str(c) for c in self.class_names]
        self.members = [dict(m) for m in self.members]
        if self.epochs_done is None:
            self.epochs_done = int(self.eval_epochs[-1]) if self.eval_epochs.size else 0
        self._validate()

    @property
    def finished(self) -> bool:
        return self.val_probs is not None

    def _validate(self):
        m = len(self.members)
        if m == 0:
            raise ValueError("SweepResult: no members to report on.")
        for i, member in enumerate(self.members):
            missing = [k for k in MEMBER_KEYS if k not in member]
            if missing:
                raise ValueError(f"SweepResult.members[{i}] lacks {missing}; every member needs "
                                 f"{list(MEMBER_KEYS)}.")
        probs = self.val_probs
        if probs is not None and (probs.ndim != 3 or probs.shape[0] != m):
            raise ValueError(f"SweepResult: {m} members but val_probs holds "
                             f"{probs.shape[0] if probs.ndim else 0} (shape {probs.shape}; want "
                             "[M, Nv, C]).")
        if self.val_labels.ndim != 2:
            raise ValueError(f"SweepResult.val_labels must be [T, Nv], got shape "
                             f"{self.val_labels.shape}.")
        if not np.issubdtype(self.val_labels.dtype, np.integer):
            raise ValueError(f"SweepResult.val_labels must be integer, got "
                             f"{self.val_labels.dtype}.")
        t, nv = self.val_labels.shape
        c = probs.shape[2] if probs is not None else np.shape(self.seen_mask)[-1]
        if self.seen_mask.shape != (t, c):
            raise ValueError(f"SweepResult.seen_mask must be [T, C] = [{t}, {c}], got shape "
                             f"{self.seen_mask.shape}.")
        self.seen_mask = self.seen_mask.astype(bool)
        if len(self.class_names) != c:
            raise ValueError(f"SweepResult: {len(self.class_names)} class_names for C = {c}.")
        trials = np.array([int(mb["trial"]) for mb in self.members])
        bad = np.flatnonzero((trials < 0) | (trials >= t))
        if bad.size:
            raise ValueError(f"SweepResult: members {bad.tolist()} name trials "
                             f"{trials[bad].tolist()}, outside [0, {t}).")
        bad = np.argwhere((self.val_labels < 0) | (self.val_labels >= c))
        if bad.size:
            raise ValueError(f"SweepResult.val_labels must lie in [0, {c}); bad (trial, row) "
                             f"{list_first(bad.tolist(), 5)}.")
        for name, shape in (("val_idx", (t, nv)), ("train_idx", None)):
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value)
            setattr(self, name, value)
            if value.ndim != 2 or value.shape[0] != t or (shape and value.shape != shape):
                raise ValueError(f"SweepResult.{name} must be [T, rows] with T = {t}"
                                 + (f" and rows = {nv}" if shape else "")
                                 + f", got shape {value.shape}.")
        e = self.eval_epochs.shape[0]
        for name, values in self.history.items():
            if values.shape != (m, e):
                raise ValueError(f"SweepResult.history[{name!r}] must be [M, E] = [{m}, {e}], "
                                 f"got shape {values.shape}.")
        if self.val_probs is None:
            return
        if self.val_probs.shape != (m, nv, c):
            raise ValueError(f"SweepResult.val_probs must be [M, Nv, C] = [{m}, {nv}, {c}], got "
                             f"shape {self.val_probs.shape}.")
        bad = np.flatnonzero(~np.isfinite(self.val_probs).reshape(m, -1).all(axis=1))
        if bad.size:
            raise ValueError(f"SweepResult.val_probs has NaN/Inf for members {bad.tolist()} "
                             f"(e.g. {self.members[bad[0]]}): training diverged.")


OnChunk = Callable[[dict[str, np.ndarray], int], Any]


def run_sweep(config, data: TrainData, members: Sequence[dict], *,
              class_names: Sequence[str] | None = None, key=None, devices=None,
              checkpoint_dir: str | os.PathLike | None = None, segments=None,
              progress: bool = True, on_chunk: OnChunk | None = None) -> SweepResult:
    """Trains every member (`sweep_members(config)` or any list like it) on `data`, chunk by chunk.

    Members are grouped by kind (one compiled program each); results come back in member order.
    A chunk is `config.chunk_epochs` epochs; a checkpoint is written every
    `config.checkpoint_every` epochs and at the end.

    Args:
      data: `TrainData`; `x` may be a host array or memory map (only the training rows and one
        evaluation block at a time go to the devices; see `config.device_data_bytes`).
      members: dicts with method, alpha, softness, trial, seed (see `sweep_members`).
      class_names: [C] names for the report (default "0", "1", ...).
      key: root PRNG key (default `jax.random.key(config.seed)`).
      devices: the devices the member axis is sharded over (default all).
      checkpoint_dir: orbax checkpoints; an existing one is resumed.
      segments: sizes mixed independently by the augmentation (None: the whole vector).
      progress: show a tqdm bar.
      on_chunk: called as on_chunk(history so far [M, E] per metric, epochs done) after every
        chunk; a truthy return stops the sweep there, as if killed (the result then has no
        `val_probs`).
    """
    import orbax.checkpoint as ocp
    from tqdm.auto import tqdm

    # Every evaluation gathers its blocks of validation rows afresh (hundreds of MB at the
    # paper's scale): with glibc's defaults each block's pages are faulted in again.
    reuse_freed_memory()
    key = jax.random.key(int(config.seed)) if key is None else key
    devices = list(jax.devices() if devices is None else devices)
    mesh = Mesh(np.asarray(devices), ("members",))
    by_member = NamedSharding(mesh, P("members"))
    replicated = NamedSharding(mesh, P())

    members = [dict(m) for m in members]
    num_members = len(members)
    groups = member_groups(members)
    hp = member_hparams(members)
    val_idx, train_idx = np.asarray(data.val_idx), np.asarray(data.train_idx)
    val_labels = np.asarray(data.labels)[val_idx]
    seen_mask = np.asarray(data.seen_mask)
    num_classes = seen_mask.shape[1]
    # Only what training gathers from goes to the devices; validation rows stream in blocks.
    host_part = device_data(data)
    placed = sum(a.nbytes for a in host_part)
    block_rows = eval_block_rows(config, data, placed)
    placed += val_idx.shape[0] * block_rows * (np.shape(data.x)[1] * 4 + 4)
    on_device = jax.device_put(host_part, replicated)
    compiled, hps, live = {}, {}, {}
    at_once = members_at_once(config, devices)
    for kind, idx in groups:
        spec = ProgramSpec.from_config(config, num_classes, train_idx.shape[1],
                                       segments=segments, kind=kind)
        compiled[kind] = compiled_group(spec, mesh, at_once)
        hps[kind], live[kind] = place_members(jax.tree.map(lambda x: x[idx], hp), mesh)

    num_epochs, eval_every = int(config.num_epochs), int(config.eval_every)
    chunk_epochs, ckpt_every = int(config.chunk_epochs), int(config.checkpoint_every)
    num_evals = num_epochs // eval_every
    eval_epochs = evaluation_epochs(config)
    history = {k: np.full((num_members, num_evals), np.nan, np.float32) for k in METRIC_NAMES}

    states = {kind: compiled[kind][0](key, hps[kind], on_device) for kind, _ in groups}
    manager = None
    if checkpoint_dir is not None:
        with _quiet_orbax():
            manager = ocp.CheckpointManager(
                Path(checkpoint_dir).absolute(),
                options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                                     cleanup_tmp_directories=True,
                                                     enable_async_checkpointing=False))
        step = manager.latest_step()
        if step is not None:
            with _quiet_orbax():
                states, history = _restore(manager, step, states, history, groups, by_member)
            logging.info("resumed from %s at epoch %d", checkpoint_dir, step)
    done = int(_host(states[groups[0][0]].epoch)[0])

    def evaluate(want_probs: bool):
        """Streams every block of validation rows through every group: summed counts per
        group, and the probabilities ([M, n_val, C] in member order) if asked."""
        counts = {kind: None for kind, _ in groups}
        n_val = val_idx.shape[1]
        probs = np.zeros((num_members, n_val, num_classes), np.float32) if want_probs else None
        for start, block in zip(range(0, n_val, block_rows), eval_blocks(data, block_rows)):
            block = jax.device_put(block, replicated)
            n = min(block_rows, n_val - start)
            for kind, idx in groups:
                c, p = compiled[kind][2](states[kind].params, hps[kind], live[kind],
                                        on_device, block)
                counts[kind] = c if counts[kind] is None else counts[kind] + c
                if want_probs:
                    probs[idx, start:start + n] = _host(p)[:len(idx), :n]
        return {kind: _host(counts[kind])[:len(idx)] for kind, idx in groups}, probs

    bar = tqdm(total=num_epochs, initial=done, unit="epoch",
               disable=not progress or jax.process_index() != 0,
               desc=f"training {num_members} members on {len(devices)} device(s) "
                    f"({len(groups)} program{'s' * (len(groups) > 1)})")
    try:
        while done < num_epochs:
            # Every chunk is `chunk_epochs` long, except that a resume from a checkpoint written
            # under another chunk length first realigns.
            epochs = min(chunk_epochs - done % chunk_epochs, num_epochs - done)
            for _ in range(epochs // eval_every):
                losses = {}
                for kind, _idx in groups:
                    states[kind], losses[kind] = compiled[kind][1](
                        key, hps[kind], live[kind], states[kind], on_device, eval_every)
                counts, _ = evaluate(False)
                e = done // eval_every
                for kind, idx in groups:
                    metrics = metrics_from_counts(counts[kind])
                    metrics["train_loss"] = _host(losses[kind])[:len(idx)]
                    for k in METRIC_NAMES:
                        history[k][idx, e] = np.asarray(metrics[k])
                done += eval_every
            if manager is not None and (done % ckpt_every == 0 or done == num_epochs):
                # Saved without the device padding, so a run resumes on any device count.
                with _quiet_orbax():
                    manager.save(done, args=ocp.args.StandardSave({
                        "state": {k: jax.tree.map(lambda x: x[:len(idx)], states[k])
                                  for k, idx in groups},
                        "history": history}))
            bar.update(epochs)
            last = done // eval_every - 1
            bar.set_postfix(loss=f"{np.nanmean(history['train_loss'][:, last]):.4f}",
                            overall=f"{np.nanmean(history['overall_accuracy'][:, last]):.3f}")
            if on_chunk is not None and on_chunk({k: v.copy() for k, v in history.items()},
                                                 done):
                break
    finally:
        bar.close()
        if manager is not None:
            with _quiet_orbax():
                manager.wait_until_finished()
                manager.close()

    probs = evaluate(True)[1] if done >= num_epochs else None
    return SweepResult(
        members=members, eval_epochs=eval_epochs, history=history, val_probs=probs,
        val_labels=val_labels, seen_mask=seen_mask,
        class_names=(list(class_names) if class_names is not None
                     else [str(i) for i in range(num_classes)]),
        threshold=float(config.threshold), val_idx=val_idx, train_idx=train_idx,
        epochs_done=done, state=_member_order(states, groups, num_members),
        eval_block_rows=block_rows, device_data_bytes=int(placed))


def _member_order(states, groups, num_members):
    """The groups' states as one numpy tree with a leading [M] axis in member order."""
    first = states[groups[0][0]]

    def assemble(*leaves):
        out = np.empty((num_members,) + leaves[0].shape[1:], leaves[0].dtype)
        for (kind, idx), leaf in zip(groups, leaves):
            out[idx] = _host(leaf)[:len(idx)]
        return out

    return jax.tree.map(assemble, *[states[k] for k, _ in groups]) if len(groups) > 1 else \
        jax.tree.map(lambda leaf: _host(leaf)[:num_members], first)
