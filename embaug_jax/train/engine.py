"""The sweep engine: a whole sweep (method x alpha x softness x trial x seed) as a few programs.

`make_program(config, num_classes, n_train, kind=...)` returns the pure per-member functions of
one augmentation kind (purejaxrl style): epochs and steps are `lax.scan`s, shuffling and
augmentation happen on device. Everything a sweep varies within a kind -- alpha, softness, the
soft switch, the trial's split, the seed -- is a traced array in `MemberHParams`, so
`jax.jit(jax.vmap(...))` trains every member of the kind at once with one compilation.

Groups. Members are grouped by `augment.KIND_OF_METHOD`: all controls, all E-Mixup variants
(soft or not), all E-Stitchup variants. A group shares shapes and code, so a sweep compiles one
vmapped, member-sharded program per kind present, and each member computes only the rows it
trains on: under the paper's halving a mixing member trains on B/2 mixed rows, the control on
B rows, with no padding rows and no select between methods (`augment.augment_rows`). A new
method joins an existing kind or adds one (see `embaug_jax.augment`, "Kinds"); the engine
needs no change for the former and a branch in `augment.augment_rows` for the latter.

Data. Training gathers only from the training rows of every trial, so only those (their union)
are placed on each device; evaluation computes only the validation rows, streamed from the host
(a memory-mapped dataset stays on disk) in blocks of `config.eval_block_rows`, so the device
holds a bounded amount whatever N is. `config.device_data_bytes` caps the dataset bytes placed
on one device (training rows + one evaluation block); the block shrinks to fit.

`run_sweep` shards each group's member axis over the devices, trains `eval_every` epochs at a
time followed by a streamed evaluation, and after every `checkpoint_every` epochs saves an orbax
checkpoint and calls back (`embaug_jax.train.command.train_and_evaluate` writes `metrics.jsonl`
there); rerunning resumes from the last checkpoint.

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
import json
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from embaug_jax import augment
from embaug_jax.train.mlp import MLP, classification_loss, probabilities

OPTIMIZERS = ("adamw", "sgd")
# Config keys whose change makes an existing checkpoint meaningless for this run.
_FINGERPRINT_KEYS = ("data", "model", "optim", "augment", "sweep", "num_epochs", "batch_size",
                     "eval_every", "seed")
# The config keys `make_program` reads (the sweep itself enters only as traced arrays).
_PROGRAM_KEYS = ("model", "optim", "augment", "batch_size", "threshold")
_METRICS = ("overall_accuracy", "none_accuracy", "seen_accuracy", "train_loss")
# `augment.MethodParams.mix` -> kind: how run_sweep groups stacked members.
_KIND_OF_MIX = {augment.MIX_CONTROL: "control", augment.MIX_MIXUP: "mixup",
                augment.MIX_STITCHUP: "stitchup"}


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


def sweep_members(config) -> list[dict]:
    """The members of a sweep, in order: method, then (alpha, softness), then trial, then seed.

    Control ignores alpha and softness, so it appears once per trial and seed (recorded with
    alpha = softness = 0); a non-soft method ignores softness (recorded 0).
    """
    s = config.sweep
    members = []
    for method in s.methods:
        if method == "control":
            variants = [(0.0, 0.0)]
        elif method.startswith("soft_"):
            variants = [(float(a), float(sm)) for a in s.alphas for sm in s.softness]
        else:
            variants = [(float(a), 0.0) for a in s.alphas]
        for alpha, softness in variants:
            for trial in range(config.data.trials):
                for seed in s.seeds:
                    members.append(dict(method=method, alpha=alpha, softness=softness,
                                        trial=trial, seed=int(seed)))
    return members


def member_hparams(members: Sequence[dict]) -> MemberHParams:
    """Stacks members into one MemberHParams with a leading [M] axis."""

    def one(m):
        # Control's alpha is never used; any valid value keeps method_params' checks happy.
        alpha = m["alpha"] if m["method"] != "control" else 1.0
        return MemberHParams(augment.method_params(m["method"], alpha, m["softness"]),
                             jnp.int32(m["trial"]), jnp.int32(m["seed"]))

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


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay) or SGD with momentum and L2, on the triangular cycle."""
    o = config.optim
    lr = triangular_schedule(o.lr_min, o.lr_max, o.half_cycle_epochs * steps_per_epoch)
    if o.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=o.weight_decay)
    if o.optimizer == "sgd":
        return optax.chain(optax.add_decayed_weights(o.weight_decay),
                           optax.sgd(lr, momentum=o.momentum))
    raise ValueError(f"unknown optimizer {o.optimizer!r}; choose one of {OPTIMIZERS}.")


@dataclasses.dataclass(frozen=True)
class Program:
    """The pure per-member functions of one kind, which the driver vmaps, jits and shards.

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
    """`metrics.threshold_accuracy`'s values from summed `Program.evaluate` counts (exactly:
    the sums are integers)."""
    counts = jnp.asarray(counts)
    correct, none_ok, none_n, seen_ok, seen_n = (counts[..., i] for i in range(5))
    total = none_n + seen_n

    def ratio(ok, n):
        return jnp.where(n > 0, ok.astype(jnp.float32) / jnp.maximum(n, 1), jnp.nan)

    return dict(overall_accuracy=correct.astype(jnp.float32) / jnp.maximum(total, 1),
                none_accuracy=ratio(none_ok, none_n), seen_accuracy=ratio(seen_ok, seen_n))


def make_program(config, num_classes: int, n_train: int, *, kind: str = "control",
                 segments=None) -> Program:
    """Builds the per-member init / train / evaluate of one augmentation kind (static shapes)."""
    augment._check_name("kind", kind, augment.KINDS)
    model = MLP(num_classes=num_classes, hidden=tuple(config.model.hidden),
                dropout=float(config.model.dropout), head=config.model.head)
    batch = int(config.batch_size)
    steps_per_epoch = n_train // batch
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size={batch} exceeds the {n_train} training rows of a split; "
                         "lower config.batch_size or raise config.data.train_fraction.")
    tx = make_optimizer(config, steps_per_epoch)
    head = config.model.head
    aug = config.augment
    threshold = float(config.threshold)
    segments = None if segments is None else tuple(int(s) for s in segments)
    rows = augment.kind_rows(kind, batch, aug.pairing)

    from embaug_jax.metrics import top_seen_prediction  # the metrics module owns the definition

    def init(key, hp, data):
        init_key, _ = _member_keys(key, hp)
        params = model.init(init_key, jnp.zeros((1, data.x.shape[1]), data.x.dtype))
        return TrainState(params, tx.init(params), jnp.int32(0))

    def loss_fn(params, x, y, seen, dropout_key):
        logits = model.apply(params, x, train=True, rngs={"dropout": dropout_key})
        return classification_loss(logits, y, jnp.ones(x.shape[0], jnp.float32), seen, head)

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
            weights = jax.vmap(lambda k: augment.draw_weights(
                k, hp.method, batch, pairing=aug.pairing, segments=segments))(aug_keys)

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
                pairing=aug.pairing, negative_mass=aug.negative_mass,
                label_weight=aug.label_weight, segments=segments, weights=w)
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
        predicted, confidence = top_seen_prediction(probs, seen)
        predicted_none = ~(confidence > jnp.asarray(threshold, confidence.dtype))
        truth_seen = seen[labels]
        correct = jnp.where(truth_seen, ~predicted_none & (predicted == labels), predicted_none)
        correct &= block.valid
        none_rows, seen_rows = block.valid & ~truth_seen, block.valid & truth_seen
        counts = jnp.stack([jnp.sum(correct, dtype=jnp.int32),
                            jnp.sum(correct & none_rows, dtype=jnp.int32),
                            jnp.sum(none_rows, dtype=jnp.int32),
                            jnp.sum(correct & seen_rows, dtype=jnp.int32),
                            jnp.sum(seen_rows, dtype=jnp.int32)])
        return counts, probs

    return Program(init, train, evaluate, model, kind, rows, steps_per_epoch)


def make_train(config, num_classes: int, n_train: int, *, kind: str = "control",
               segments=None) -> Callable:
    """Returns the pure `train(key, hp, data) -> (state, metrics)` of one member of `kind`.

    `data` is a `TrainData` of device arrays; the whole run (all epochs, an evaluation of the
    validation rows every `eval_every` epochs) is one program, so
    `jax.jit(jax.vmap(train, in_axes=(None, 0, None)))` trains members of one kind at once.
    Metrics hold one entry per evaluation ([num_epochs // eval_every]). `run_sweep` computes the
    same numbers with the data streamed and the members grouped.
    """
    program = make_program(config, num_classes, n_train, kind=kind, segments=segments)
    num_periods = int(config.num_epochs) // int(config.eval_every)
    eval_every = int(config.eval_every)

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


def member_groups(hp: MemberHParams) -> list[tuple[str, np.ndarray]]:
    """(kind, member indices) of every kind present, in order of first appearance."""
    kinds = [_KIND_OF_MIX[int(m)] for m in np.asarray(hp.method.mix)]
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


@functools.lru_cache(maxsize=16)
def _compiled_group(config_json: str, kind: str, num_classes: int, n_train: int, segments,
                    mesh: Mesh):
    """The jitted, vmapped, member-sharded init / train / evaluate of one kind.

    Cached on the JSON of the config keys the program reads, so another sweep with the same
    shapes in one process (a resume, a different method list, a test) reuses the compiled
    executables instead of tracing fresh closures.
    """
    config = ml_collections.ConfigDict(json.loads(config_json))
    program = make_program(config, num_classes, n_train, kind=kind, segments=segments)
    by_member = NamedSharding(mesh, P("members"))
    init = jax.jit(jax.vmap(program.init, in_axes=(None, 0, None)), out_shardings=by_member)
    train = jax.jit(jax.vmap(program.train, in_axes=(None, 0, 0, None, None)),
                    static_argnums=4, out_shardings=by_member, donate_argnums=2)
    evaluate = jax.jit(jax.vmap(program.evaluate, in_axes=(0, 0, None, None)),
                       out_shardings=by_member)
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


@dataclasses.dataclass
class SweepResult:
    state: TrainState  # numpy, [M] leading axis in member order
    history: dict[str, np.ndarray]  # [M, E] per metric
    eval_epochs: np.ndarray  # int [E]
    val_probs: np.ndarray | None  # float32 [M, n_val, C] (None if stopped early)
    epochs_done: int
    eval_block_rows: int = 0  # validation rows per streamed evaluation block
    device_data_bytes: int = 0  # dataset bytes placed on each device (training rows + a block)


def run_sweep(config, data: TrainData, hp: MemberHParams, *, key=None, devices=None,
              checkpoint_dir: str | os.PathLike | None = None, max_chunks: int | None = None,
              segments=None, progress: bool = True,
              on_chunk: Callable[[dict[str, np.ndarray], int], None] | None = None) -> SweepResult:
    """Trains every member of `hp` (leading axis M) on `data`, chunk by chunk.

    Members are grouped by kind (one compiled program each); results come back in member order.

    Args:
      data: `TrainData`; `x` may be a host array or memory map (only the training rows and one
        evaluation block at a time go to the devices).
      key: root PRNG key (default `jax.random.key(config.seed)`).
      devices: the devices each group's member axis is sharded over (default all).
      checkpoint_dir: orbax checkpoints per chunk; an existing one is resumed.
      max_chunks: stop after this many chunks in this call (as if killed); no predictions.
      on_chunk: called with (history so far, epochs done) after every chunk.
    """
    import orbax.checkpoint as ocp
    from tqdm.auto import tqdm

    key = jax.random.key(int(config.seed)) if key is None else key
    devices = list(jax.devices() if devices is None else devices)
    mesh = Mesh(np.asarray(devices), ("members",))
    by_member = NamedSharding(mesh, P("members"))
    replicated = NamedSharding(mesh, P())

    num_members = jax.tree.leaves(hp)[0].shape[0]
    groups = member_groups(hp)
    host_part = device_data(data)
    placed = sum(a.nbytes for a in host_part)
    block_rows = eval_block_rows(config, data, placed)
    trials = np.shape(data.val_idx)[0]
    placed += trials * block_rows * (np.shape(data.x)[1] * 4 + 4)
    on_device = jax.device_put(host_part, replicated)
    num_classes, n_train = host_part.seen_mask.shape[1], host_part.train_idx.shape[1]
    program_config = ml_collections.ConfigDict({k: config[k] for k in _PROGRAM_KEYS})
    program_json = program_config.to_json_best_effort(sort_keys=True)
    seg = None if segments is None else tuple(int(s) for s in segments)
    compiled, hps = {}, {}
    for kind, idx in groups:
        compiled[kind] = _compiled_group(program_json, kind, num_classes, n_train, seg, mesh)
        hps[kind] = jax.device_put(_pad(jax.tree.map(lambda x: x[idx], hp), len(devices)),
                                   by_member)

    num_epochs, eval_every = int(config.num_epochs), int(config.eval_every)
    num_evals = num_epochs // eval_every
    chunk_periods = int(config.checkpoint_every) // eval_every
    eval_epochs = evaluation_epochs(config)
    history = {k: np.full((num_members, num_evals), np.nan, np.float32) for k in _METRICS}

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
        probs = np.zeros((num_members, np.shape(data.val_idx)[1], num_classes), np.float32) \
            if want_probs else None
        start = 0
        for block in eval_blocks(data, block_rows):
            block = jax.device_put(block, replicated)
            n = int(min(block_rows, probs.shape[1] - start)) if want_probs else 0
            for kind, idx in groups:
                c, p = compiled[kind][2](states[kind].params, hps[kind], on_device, block)
                counts[kind] = c if counts[kind] is None else counts[kind] + c
                if want_probs:
                    probs[idx, start:start + n] = _host(p)[:len(idx), :n]
            start += block_rows
        return {kind: _host(c)[:len(idx)] for (kind, idx), c in
                zip(groups, counts.values())}, probs

    bar = tqdm(total=num_epochs, initial=done, unit="epoch",
               disable=not progress or jax.process_index() != 0,
               desc=f"training {num_members} members ({len(groups)} programs) on "
                    f"{len(devices)} device(s)")
    chunks = 0
    try:
        while done < num_epochs and (max_chunks is None or chunks < max_chunks):
            periods = min(chunk_periods, (num_epochs - done) // eval_every)
            for _ in range(periods):
                losses = {}
                for kind, _idx in groups:
                    states[kind], losses[kind] = compiled[kind][1](
                        key, hps[kind], states[kind], on_device, eval_every)
                counts, _ = evaluate(False)
                e = done // eval_every
                for kind, idx in groups:
                    metrics = metrics_from_counts(counts[kind])
                    metrics["train_loss"] = _host(losses[kind])[:len(idx)]
                    for k in _METRICS:
                        history[k][idx, e] = np.asarray(metrics[k])
                done += eval_every
                bar.update(eval_every)
            chunks += 1
            if manager is not None:
                # Saved without the device padding, so a run resumes on any device count.
                with _quiet_orbax():
                    manager.save(done, args=ocp.args.StandardSave({
                        "state": {k: jax.tree.map(lambda x: x[:len(idx)], states[k])
                                  for k, idx in groups},
                        "history": history}))
            if on_chunk is not None:
                on_chunk({k: v.copy() for k, v in history.items()}, done)
            last = done // eval_every - 1
            bar.set_postfix(loss=f"{np.nanmean(history['train_loss'][:, last]):.4f}",
                            overall=f"{np.nanmean(history['overall_accuracy'][:, last]):.3f}")
    finally:
        bar.close()
        if manager is not None:
            with _quiet_orbax():
                manager.wait_until_finished()
                manager.close()

    probs = evaluate(True)[1] if done >= num_epochs else None
    state = _member_order(states, groups, num_members)
    return SweepResult(state, history, eval_epochs, probs, done, block_rows, int(placed))


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
