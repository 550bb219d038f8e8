"""The sweep engine: a whole sweep (method x alpha x softness x trial x seed) in one program.

`make_train(config, num_classes, n_train)` returns a pure `train(key, hp, data)` for ONE member
(purejaxrl style): epochs and steps are `lax.scan`s, shuffling and augmentation happen on device,
and the validation metrics are computed every `eval_every` epochs inside the program. Everything
a sweep varies -- the augmentation method, alpha, softness, the trial's split, the seed -- is a
traced array in `MemberHParams`, so `jax.jit(jax.vmap(train, in_axes=(None, 0, None)))` trains
every member at once with one compilation. Control and mixing share that program: the augment
step always returns a fixed-size batch with per-example loss weights (`augment.augment_batch`).

`train_and_evaluate(config, workdir)` is what `embaug train` runs: it validates the config, loads
the data, draws the splits, shards the member axis over the devices, trains in chunks of epochs
(a tqdm bar, an orbax checkpoint and a rewritten `metrics.jsonl` per chunk; rerunning the same
command resumes from the last checkpoint) and hands the final validation probabilities to
`report.write_report`.

Keys: member key = fold_in(fold_in(root, seed), trial); its first split initialises the MLP, the
second drives training: epoch key = fold_in(train_key, epoch) splits into the shuffle key and a
steps key, and step key = fold_in(steps key, step). Nothing random depends on how many members
run or on the chunking, so a member trained alone, inside a sweep, on 1 or 4 devices, or across
a resume sees the same numbers. Members that differ only in method or alpha share their
initialisation and shuffles (common random numbers), so a comparison of methods within a trial
is not confounded by the draw; trials get independent initialisations as well as splits.
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
_PROGRAM_KEYS = ("model", "optim", "augment", "batch_size", "eval_every", "eval_block_rows",
                 "threshold")


# ---------------------------------------------------------------------------------------------
# What one member is, as traced arrays.


class MemberHParams(NamedTuple):
    """Everything a sweep varies, as (stackable) scalar arrays."""

    method: augment.MethodParams
    trial: jax.Array  # int32 index into the split arrays
    seed: jax.Array  # int32


class TrainData(NamedTuple):
    """The arrays every member reads (replicated across devices)."""

    x: jax.Array  # float32 [N, D] all embeddings
    labels: jax.Array  # int32 [N]
    train_idx: jax.Array  # int32 [T, n_train]
    val_idx: jax.Array  # int32 [T, n_val]
    seen_mask: jax.Array  # bool [T, C]


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
    """The pure per-member functions the driver vmaps, jits and shards.

    init(key, hp, data) -> TrainState
    run(key, hp, state, data, num_periods) -> (state, metrics: dict of [num_periods] arrays);
      one period = `eval_every` epochs of training followed by an evaluation.
    predict(state, hp, data) -> float32 [n_val, C] validation probabilities.
    """

    init: Callable
    run: Callable
    predict: Callable
    model: MLP
    steps_per_epoch: int


def _member_keys(key, hp: MemberHParams):
    member = jax.random.fold_in(jax.random.fold_in(key, hp.seed), hp.trial)
    init_key, train_key = jax.random.split(member)
    return init_key, train_key


def make_program(config, num_classes: int, n_train: int, *, segments=None) -> Program:
    """Builds the per-member init / run / predict functions for a config (shapes are static)."""
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
    eval_every = int(config.eval_every)
    eval_block = int(config.get("eval_block_rows", 8192))
    segments = None if segments is None else tuple(int(s) for s in segments)

    from embaug_jax.metrics import (
        threshold_accuracy,  # the metrics module owns the definition
    )

    def init(key, hp, data):
        init_key, _ = _member_keys(key, hp)
        params = model.init(init_key, jnp.zeros((1, data.x.shape[1]), data.x.dtype))
        return TrainState(params, tx.init(params), jnp.int32(0))

    def loss_fn(params, x, y, w, seen, dropout_key):
        logits = model.apply(params, x, train=True, rngs={"dropout": dropout_key})
        return classification_loss(logits, y, w, seen, head)

    def train_epoch(train_key, hp, data, state):
        seen = data.seen_mask[hp.trial]
        rows = data.train_idx[hp.trial]
        shuffle_key, steps_key = jax.random.split(jax.random.fold_in(train_key, state.epoch))
        order = rows[jax.random.permutation(shuffle_key, rows.shape[0])]

        def step(carry, i):
            params, opt_state = carry
            aug_key, dropout_key = jax.random.split(jax.random.fold_in(steps_key, i))
            idx = jax.lax.dynamic_slice_in_dim(order, i * batch, batch)
            x = data.x[idx]
            y = jax.nn.one_hot(data.labels[idx], num_classes, dtype=x.dtype)
            x, y, w = augment.augment_batch(
                aug_key, x, y, hp.method, class_mask=seen, pairing=aug.pairing,
                negative_mass=aug.negative_mass, label_weight=aug.label_weight,
                segments=segments)
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y, w, seen, dropout_key)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(
            step, (state.params, state.opt_state), jnp.arange(steps_per_epoch))
        return TrainState(params, opt_state, state.epoch + 1), losses.mean()

    def all_logits(params, x):
        # The MLP runs on all N rows (shared by every member) and each member then picks its
        # validation rows: under vmap, gathering x[val_idx[trial]] first would copy [M, n_val, D]
        # embeddings. Blocks of `eval_block` rows bound the [M, rows, hidden] activations.
        n = x.shape[0]
        if n <= eval_block:
            return model.apply(params, x)
        blocks, rest = divmod(n, eval_block)

        def block(_, i):
            return None, model.apply(params, jax.lax.dynamic_slice_in_dim(x, i * eval_block,
                                                                          eval_block))

        _, out = jax.lax.scan(block, None, jnp.arange(blocks))
        out = out.reshape(blocks * eval_block, -1)
        if rest:
            out = jnp.concatenate([out, model.apply(params, x[blocks * eval_block:])])
        return out

    def val_probs(params, hp, data):
        logits = all_logits(params, data.x)[data.val_idx[hp.trial]]
        return probabilities(logits, head, data.seen_mask[hp.trial]).astype(jnp.float32)

    def evaluate(params, hp, data):
        probs = val_probs(params, hp, data)
        acc = threshold_accuracy(probs, data.labels[data.val_idx[hp.trial]],
                                 data.seen_mask[hp.trial], threshold)
        return {f"{k}_accuracy": v for k, v in acc.items()}

    def run(key, hp, state, data, num_periods: int):
        _, train_key = _member_keys(key, hp)

        def period(state, _):
            state, losses = jax.lax.scan(lambda s, _: train_epoch(train_key, hp, data, s),
                                         state, None, length=eval_every)
            metrics = evaluate(state.params, hp, data)
            metrics.update(train_loss=losses.mean(), epoch=state.epoch)
            return state, metrics

        return jax.lax.scan(period, state, None, length=num_periods)

    def predict(state, hp, data):
        return val_probs(state.params, hp, data)

    return Program(init, run, predict, model, steps_per_epoch)


def make_train(config, num_classes: int, n_train: int, *, segments=None) -> Callable:
    """Returns the pure `train(key, hp, data) -> (state, metrics)` of one member, all epochs.

    `jax.jit(jax.vmap(train, in_axes=(None, 0, None)))` trains a whole sweep; metrics hold one
    entry per evaluation ([num_epochs // eval_every]).
    """
    program = make_program(config, num_classes, n_train, segments=segments)
    num_periods = int(config.num_epochs) // int(config.eval_every)

    def train(key, hp, data):
        return program.run(key, hp, program.init(key, hp, data), data, num_periods)

    return train


# ---------------------------------------------------------------------------------------------
# The driver: devices, chunks, checkpoints.


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


@functools.lru_cache(maxsize=8)
def _compiled_sweep(config_json: str, num_classes: int, n_train: int, segments, mesh: Mesh):
    """The jitted, vmapped, member-sharded init / run / predict of a config.

    Cached on the JSON of the config keys the program reads, so another sweep with the same
    shapes in one process (a resume, a different method list, a test) reuses the compiled
    executables instead of tracing fresh closures.
    """
    config = ml_collections.ConfigDict(json.loads(config_json))
    program = make_program(config, num_classes, n_train, segments=segments)
    by_member = NamedSharding(mesh, P("members"))
    init = jax.jit(jax.vmap(program.init, in_axes=(None, 0, None)), out_shardings=by_member)
    run = jax.jit(jax.vmap(program.run, in_axes=(None, 0, 0, None, None)),
                  static_argnums=4, out_shardings=by_member, donate_argnums=2)
    predict = jax.jit(jax.vmap(program.predict, in_axes=(0, 0, None)), out_shardings=by_member)
    return init, run, predict


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax logs each save and restore step at INFO; the progress bar already tells the story."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def _restore(manager, step, state, history, num_members, sharding):
    """Restores an unpadded checkpoint and pads it again for this run's devices.

    Every process reads the whole (small) checkpoint into host memory and places its own shards
    from there, so a checkpoint written by any number of processes and devices restores onto any
    other number.
    """
    import orbax.checkpoint as ocp

    target = jax.tree.map(lambda x: np.zeros((num_members, *x.shape[1:]), x.dtype),
                          {"state": state, "history": history})
    try:
        restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"the checkpoint at {manager.directory} (epoch {step}) does not fit this "
                         f"run ({e}); use a new workdir or delete the checkpoints.") from e
    padded = jax.tree.leaves(state)[0].shape[0]
    # Padded on the host: device_put then places only this process's shards.
    restored = jax.tree.map(lambda x: np.concatenate(
        [x, np.repeat(x[-1:], padded - x.shape[0], 0)]), restored)
    state = jax.device_put(restored["state"], sharding)
    history = {k: np.asarray(restored["history"][k]) for k in history}
    return state, history


@dataclasses.dataclass
class SweepResult:
    state: TrainState  # [M] leading axis (padding dropped)
    history: dict[str, np.ndarray]  # [M, E] per metric
    eval_epochs: np.ndarray  # int [E]
    val_probs: np.ndarray | None  # float32 [M, n_val, C] (None if stopped early)
    epochs_done: int


def run_sweep(config, data: TrainData, hp: MemberHParams, *, key=None, devices=None,
              checkpoint_dir: str | os.PathLike | None = None, max_chunks: int | None = None,
              segments=None, progress: bool = True,
              on_chunk: Callable[[dict[str, np.ndarray], int], None] | None = None) -> SweepResult:
    """Trains every member of `hp` (leading axis M) on `data`, chunk by chunk.

    Args:
      key: root PRNG key (default `jax.random.key(config.seed)`).
      devices: the devices the member axis is sharded over (default all).
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
    hp = jax.device_put(_pad(hp, len(devices)), by_member)
    data = jax.device_put(data, replicated)
    program_config = {k: config[k] for k in _PROGRAM_KEYS}
    init, run, predict = _compiled_sweep(
        ml_collections.ConfigDict(program_config).to_json_best_effort(sort_keys=True),
        data.seen_mask.shape[1],
        data.train_idx.shape[1], None if segments is None else tuple(segments), mesh)

    num_epochs, eval_every = int(config.num_epochs), int(config.eval_every)
    num_evals = num_epochs // eval_every
    chunk_periods = int(config.checkpoint_every) // eval_every
    eval_epochs = evaluation_epochs(config)
    padded = jax.tree.leaves(hp)[0].shape[0]
    metric_names = ("overall_accuracy", "none_accuracy", "seen_accuracy", "train_loss")
    history = {k: np.full((padded, num_evals), np.nan, np.float32) for k in metric_names}

    state = init(key, hp, data)
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
                state, history = _restore(manager, step, state, history, num_members, by_member)
            logging.info("resumed from %s at epoch %d", checkpoint_dir, step)
    done = int(_host(state.epoch)[0])

    bar = tqdm(total=num_epochs, initial=done, unit="epoch",
               disable=not progress or jax.process_index() != 0,
               desc=f"training {num_members} members on {len(devices)} device(s)")
    chunks = 0
    try:
        while done < num_epochs and (max_chunks is None or chunks < max_chunks):
            periods = min(chunk_periods, (num_epochs - done) // eval_every)
            state, metrics = run(key, hp, state, data, periods)
            first = done // eval_every
            for k in metric_names:
                history[k][:, first:first + periods] = _host(metrics[k])
            done += periods * eval_every
            chunks += 1
            if manager is not None:
                # Saved without the device padding, so a run resumes on any device count.
                with _quiet_orbax():
                    manager.save(done, args=ocp.args.StandardSave(jax.tree.map(
                        lambda x: x[:num_members], {"state": state, "history": history})))
            if on_chunk is not None:
                on_chunk({k: v[:num_members] for k, v in history.items()}, done)
            bar.update(periods * eval_every)
            last = first + periods - 1
            bar.set_postfix(loss=f"{np.nanmean(history['train_loss'][:, last]):.4f}",
                            overall=f"{np.nanmean(history['overall_accuracy'][:, last]):.3f}")
    finally:
        bar.close()
        if manager is not None:
            with _quiet_orbax():
                manager.wait_until_finished()
                manager.close()

    probs = None
    if done >= num_epochs:
        probs = _host(predict(state, hp, data))[:num_members]
    state = jax.tree.map(lambda x: x[:num_members], state)
    return SweepResult(state, {k: v[:num_members] for k, v in history.items()}, eval_epochs,
                       probs, done)


