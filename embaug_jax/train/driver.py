"""The sweep driver: `run_sweep(config, data, members)` trains a whole sweep (method x settings
x trial x seed) as a few compiled programs, chunk by chunk, and returns a `SweepResult`.

Groups. Members are grouped by kind (`train.members.member_groups`: all controls and the
control-kind baselines, all E-Mixup variants, all E-Stitchup variants, manifold mixup), and one
member-sharded program per group present is compiled (`compiled_group`: vmapped on
accelerators, one member after another on each CPU device). A method registered in
`embaug_jax.registry` joins its kind's program; the driver needs no change for it.

Devices. Each group trains on a ("members", "features") mesh of all the devices
(`group_mesh`): its members are sharded over the first axis, and each member is split over the
devices of the second by its embedding's features (`program.make_program`'s features axis:
each device the gradient of its block of the first layer, one all-reduce of the first layer's
[rows, hidden] outputs per step). `devices_per_member` picks the features axis from the
group's size and the device count: on an accelerator a group with fewer members than devices
lends the idle devices to its members (a lone member trains on every device), one with at
least as many is sharded over members alone; on CPU devices, where a split member was
no faster, every member stays whole unless `config.devices_per_member` says otherwise.

Data. Training gathers only from the training rows of every trial, so only those (their union)
are placed on each device; evaluation computes only the validation rows, streamed from the host
(a memory-mapped dataset stays on disk) in blocks of `config.eval_block_rows`, so the device
holds a bounded amount whatever N is. `config.device_data_bytes` caps the dataset bytes placed
on one device (training rows + one evaluation block); the block shrinks to fit.

Cadence (`train.cadence.Cadence`): each compiled call trains up to the next evaluation, which
streams the validation rows; a chunk (a tqdm tick and an `on_chunk` call) ends every
`chunk_epochs` epochs, an orbax checkpoint is written every `checkpoint_every` epochs
(`train.checkpoints`), and the last epoch is always evaluated and checkpointed. An existing
checkpoint is resumed. `report.write_report(workdir, result)` turns the result into the report.

Several processes. Every collective -- each gather of counts, losses or states to the host -- is
issued by the main thread at a fixed point of the loop, in the same order on every process;
process 0 writes the checkpoints from the gathered states, and orbax issues no collective of
its own. Processes whose collectives interleave differently would wait for each other forever.

Checks. A member whose training loss is not finite stops the sweep (`TrainingDiverged`) before
a checkpoint of it is written; identical members (counted twice as replicates) and a trial that
trains on one class are refused; training rows all alike, or of a scale far from 1, are warned
about (the model would train to chance without any error).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from embaug_jax import interrupt, registry
from embaug_jax.train import checkpoints
from embaug_jax.train.cadence import Cadence
from embaug_jax.train.members import (
    MemberHParams,
    member_groups,
    member_hparams,
    with_config_settings,
)
from embaug_jax.train.optim import sweep_grid
from embaug_jax.train.profiling import StepTrace
from embaug_jax.train.program import (
    DeviceData,
    EvalBlock,
    ProgramSpec,
    TrainData,
    make_program,
    metrics_from_counts,
)
from embaug_jax.train.result import SweepResult
from embaug_jax.util import (UserError, large_dot_compiler_options, list_first, on_cpus,
                             reuse_freed_memory)

_METRIC_NAMES = ("overall_accuracy", "none_accuracy", "seen_accuracy", "train_loss")
_MESH_AXES = ("members", "features")
OnChunk = Callable[[dict[str, np.ndarray], int], Any]


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


def devices_per_member(config, num_members: int, num_devices: int,
                       num_features: int | None, *, platform: str) -> int:
    """Devices each member is split over (the features axis of `group_mesh`) for a group of
    `num_members` members of `num_features`-dimensional embeddings on `num_devices` devices.

    `config.devices_per_member` when set (it must divide the device count and the features;
    `num_features` None: not known yet, not checked). When None, on devices of `platform`
    "cpu", 1 (each member whole: on the 2-core test CPU a lone member split over its two
    devices trained at 0.84-1.06x its speed on one, for more CPU time, benchmarks/README.md
    "train"); on an accelerator
    the most devices that add no round of members: the largest d dividing both num_devices and
    num_features for which each device still trains ceil(M / N) members in turn, as sharded
    over members alone. So there a group of M < N members whose size divides N runs on N / M
    devices per member, a lone member on all N (features permitting), and M >= N members on
    one device each (d = 1: the members-only layout). A split never makes a device train more
    members than the members-only layout would.
    """
    n = config.get("devices_per_member")
    divides_features = lambda d: num_features is None or num_features % d == 0
    if n is not None:
        n = int(n)
        if n < 1 or num_devices % n or not divides_features(n):
            raise UserError(
                f"config.devices_per_member={n} must be >= 1 and divide the {num_devices} "
                "device(s)" + ("" if num_features is None else
                               f" and the embeddings' {num_features} features")
                + "; use None (auto), 1 (each member on one device) or a common divisor.")
        return n
    if platform == "cpu":
        return 1
    rounds = -(-num_members // num_devices)
    return max(d for d in range(1, num_devices + 1)
               if num_devices % d == 0 and divides_features(d)
               and -(-num_members * d // num_devices) == rounds)


def group_mesh(devices: Sequence, per_member: int) -> Mesh:
    """The ("members", "features") mesh of `devices` whose features axis holds `per_member`
    consecutive devices (in `jax.devices()` order, a process's own devices first: a member's
    all-reduce stays on one host wherever `per_member` divides the devices per host)."""
    return Mesh(np.asarray(devices).reshape(-1, per_member), _MESH_AXES)


def place_members(hp: MemberHParams, mesh: Mesh) -> tuple[MemberHParams, jax.Array]:
    """A group's hyperparameters padded to a multiple of the mesh's members axis and sharded
    over it (each member replicated over the features axis), and `live` [padded M], False for
    the padding (which `compiled_group` skips)."""
    n, d = len(hp.trial), mesh.shape["members"]
    by_member = NamedSharding(mesh, P("members"))
    return (jax.device_put(_pad(hp, d), by_member),
            jax.device_put(np.arange(n + -n % d) < n, by_member))


def _eval_block_rows(config, data: TrainData, on_device_bytes: int) -> int:
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
        raise UserError(
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


def _over_members(fn: Callable, at_once: int, skipped: Callable) -> Callable:
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
    """The jitted, member-sharded init / train / evaluate of a spec (one kind) on a `group_mesh`.

    Each device runs its members (`_over_members`: all at once, or `at_once` at a time) with
    `shard_map`; `live` [M] marks the members that are not device padding. Over a features axis
    of more than one device each member is split by its features (the program's features
    axis): the leaves `Program.split_by_features` marks are sharded over that axis along their
    last dimension, everything else is replicated over it. Cached on the spec (all the program
    reads) and the mesh, so another sweep with the same spec in one process (a resume, a
    different method list, a test) reuses the compiled executables instead of tracing fresh
    closures.
    """
    split = mesh.shape["features"] > 1
    program = make_program(spec, features_axis="features" if split else None)
    m, r = P("members"), P()

    def specs(state):
        """The state's PartitionSpecs: [M, ...] by member, split leaves also by features."""
        return jax.tree.map(
            lambda leaf, by_features: P("members", *[None] * (leaf.ndim - 2), "features")
            if split and by_features else m, state, program.split_by_features(state))

    def sharded(fn, in_specs, out_specs):
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                             check_vma=False)

    def init(key, hp, data):
        state = jax.vmap(program.init, in_axes=(None, 0, None))(key, hp, data)
        return jax.lax.with_sharding_constraint(
            state, jax.tree.map(lambda p: NamedSharding(mesh, p), specs(state)))

    def train(key, hp, live, state, data, num_epochs):
        def local(key, hp, live, state, data):
            fn = lambda hp, state: program.train(key, hp, state, data, num_epochs)
            skip = lambda hp, state: (state, jnp.float32(jnp.nan))
            return _over_members(fn, at_once, skip)(live, hp, state)
        state_specs = specs(state)
        return sharded(local, (r, m, m, state_specs, r), (state_specs, m))(
            key, hp, live, state, data)

    def evaluate(params, hp, live, data, block):
        def local(params, hp, live, data, block):
            fn = lambda params, hp: program.evaluate(params, hp, data, block)
            skip = lambda params, hp: jax.tree.map(
                lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, params, hp))
            return _over_members(fn, at_once, skip)(live, params, hp)
        return sharded(local, (specs(params), m, m, r, r), (m, m))(params, hp, live, data, block)

    by_member = NamedSharding(mesh, m)
    init = jax.jit(init)
    train = jax.jit(train, static_argnums=5, donate_argnums=3)
    evaluate = jax.jit(evaluate, out_shardings=by_member,
                       compiler_options=large_dot_compiler_options(mesh.devices.flat))
    return init, train, evaluate


def run_sweep(config, data: TrainData, members: Sequence[dict], *,
              class_names: Sequence[str] | None = None, key=None, devices=None,
              checkpoint_dir: str | os.PathLike | None = None, segments=None,
              progress: bool = True, on_chunk: OnChunk | None = None,
              profile_dir: str | os.PathLike | None = None) -> SweepResult:
    """Trains every member (`sweep_members(config)` or any list like it) on `data`, chunk by chunk.

    Members are grouped by kind (one compiled program each); results come back in member order.
    Evaluations, chunks and checkpoints follow `Cadence.from_config(config)`.

    Args:
      data: `TrainData`; `x` may be a host array or memory map (only the training rows and one
        evaluation block at a time go to the devices; see `config.device_data_bytes`).
      members: dicts with method, trial, seed and the settings (see `sweep_members`); a
        setting every method reads that a member lacks takes the config's value
        (`with_config_settings`), and the result's members record it.
      class_names: [C] names for the report (default "0", "1", ...).
      key: root PRNG key (default `jax.random.key(config.seed)`).
      devices: the devices the members train on (default all; each group's mesh of them is
        `group_mesh(devices, devices_per_member(...))`).
      checkpoint_dir: orbax checkpoints; an existing one is resumed.
      segments: sizes mixed independently by the augmentation (None: the whole vector).
      progress: show a tqdm bar.
      on_chunk: called as on_chunk(history so far [M, E] per metric, epochs done) after every
        chunk; a truthy return stops the sweep there, as if killed (the result then has no
        `val_probs`).
      profile_dir: where a `jax.profiler` trace of `config.profile` training steps goes
        (`train.profiling.StepTrace`; None or config.profile 0: no trace).
    """
    from tqdm.auto import tqdm

    # Every evaluation gathers its blocks of validation rows afresh (hundreds of MB at the
    # paper's scale): with glibc's defaults each block's pages are faulted in again.
    reuse_freed_memory()
    key = jax.random.key(int(config.seed)) if key is None else key
    devices = list(jax.devices() if devices is None else devices)
    # Every group's mesh holds the devices in this order, so data placed once serves them all.
    replicated = NamedSharding(group_mesh(devices, 1), P())

    members = with_config_settings(config, members)
    num_members = len(members)
    groups = member_groups(members)
    _check_distinct(members)
    hp = member_hparams(members)
    val_idx, train_idx = np.asarray(data.val_idx), np.asarray(data.train_idx)
    val_labels = np.asarray(data.labels)[val_idx]
    seen_mask = np.asarray(data.seen_mask)
    num_classes = seen_mask.shape[1]
    class_names = (list(class_names) if class_names is not None
                   else [str(i) for i in range(num_classes)])
    _check_two_classes(seen_mask, np.asarray(data.labels), class_names)
    # Only what training gathers from goes to the devices; validation rows stream in blocks.
    host_part = device_data(data)
    _warn_about_rows(host_part.x)
    placed = sum(a.nbytes for a in host_part)
    block_rows = _eval_block_rows(config, data, placed)
    placed += val_idx.shape[0] * block_rows * (np.shape(data.x)[1] * 4 + 4)
    on_device = jax.device_put(host_part, replicated)
    compiled, hps, live = {}, {}, {}
    at_once = members_at_once(config, devices)
    for g in groups:
        spec = ProgramSpec.from_config(config, num_classes, train_idx.shape[1],
                                       segments=segments, kind=g.kind, static=g.static,
                                       fixed=g.fixed)
        per_member = devices_per_member(config, len(g.members), len(devices),
                                        np.shape(data.x)[1], platform=devices[0].platform)
        mesh = group_mesh(devices, per_member)
        logging.info("%s: %d member(s) on a %d x %d (members x features) mesh", g.name,
                     len(g.members), *mesh.devices.shape)
        compiled[g.name] = compiled_group(spec, mesh, at_once)
        hps[g.name], live[g.name] = place_members(jax.tree.map(lambda x: x[g.members], hp), mesh)

    cadence = Cadence.from_config(config)
    num_epochs = cadence.num_epochs
    eval_epochs = cadence.eval_epochs
    column = {int(epoch): e for e, epoch in enumerate(eval_epochs)}
    history = {k: np.full((num_members, len(eval_epochs)), np.nan, np.float32)
               for k in _METRIC_NAMES}
    states = {g.name: compiled[g.name][0](key, hps[g.name], on_device) for g in groups}

    def evaluate(want_probs: bool):
        """Streams every block of validation rows through every group: summed counts per
        group, and the probabilities ([M, n_val, C] in member order) if asked."""
        counts = {g.name: None for g in groups}
        n_val = val_idx.shape[1]
        probs = np.zeros((num_members, n_val, num_classes), np.float32) if want_probs else None
        for start, block in zip(range(0, n_val, block_rows), eval_blocks(data, block_rows)):
            block = jax.device_put(block, replicated)
            n = min(block_rows, n_val - start)
            for g in groups:
                c, p = compiled[g.name][2](states[g.name].params, hps[g.name], live[g.name],
                                           on_device, block)
                counts[g.name] = c if counts[g.name] is None else counts[g.name] + c
                if want_probs:
                    probs[g.members, start:start + n] = _host(p)[:len(g.members), :n]
        return {g.name: _host(counts[g.name])[:len(g.members)] for g in groups}, probs

    # Under several processes every collective -- each gather to the host, and nothing else
    # -- is issued by the main thread at a fixed point of this loop, in the same order on every
    # process; process 0 alone writes checkpoints, from gathered host arrays (see
    # `train.checkpoints`).
    primary = jax.process_index() == 0
    trace = StepTrace(profile_dir, int(config.get("profile") or 0),
                      train_idx.shape[1] // int(config.batch_size))
    with checkpoints.checkpoint_manager(checkpoint_dir, writer=primary) as manager, trace:
        step = _agreed_step(manager)
        if step is not None:
            states, history = checkpoints.restore(manager, step, states, history, groups)
            logging.info("resumed from %s at epoch %d", checkpoint_dir, step)
        done = int(_host(states[groups[0].name].epoch)[0])
        gathered = None  # (epoch, the states on the host) of the last checkpoint's gather
        bar = tqdm(total=num_epochs, initial=done, unit="epoch",
                   disable=not progress or not primary,
                   desc=f"training {num_members} members on {len(devices)} device(s) "
                        f"({len(groups)} program{'s' * (len(groups) > 1)})")
        try:
            while done < num_epochs:
                start, chunk_end = done, cadence.chunk_end(done)
                while done < chunk_end:
                    # One compiled call per evaluation period (a shorter last one compiles
                    # once more), then the streamed evaluation.
                    epochs = cadence.period_end(done) - done
                    losses = {}
                    with trace.period(epochs, done + epochs >= num_epochs, lambda: losses):
                        for g in groups:
                            states[g.name], losses[g.name] = compiled[g.name][1](
                                key, hps[g.name], live[g.name], states[g.name], on_device,
                                epochs)
                    counts, _ = evaluate(False)
                    done += epochs
                    interrupt.check()
                    for g in groups:
                        metrics = metrics_from_counts(counts[g.name])
                        metrics["train_loss"] = _host(losses[g.name])[:len(g.members)]
                        for k in _METRIC_NAMES:
                            history[k][g.members, column[done]] = np.asarray(metrics[k])
                    # Before any checkpoint of it is written: a rerun must not resume NaNs.
                    _check_finite(history["train_loss"][:, column[done]], members, done,
                                  config)
                if manager is not None and cadence.checkpoints_at(done):
                    gathered = done, _host_states(states, groups)
                    if primary:
                        checkpoints.save(manager, done, gathered[1], history)
                bar.update(done - start)
                last = column[done]
                bar.set_postfix(loss=f"{np.nanmean(history['train_loss'][:, last]):.4f}",
                                overall=f"{np.nanmean(history['overall_accuracy'][:, last]):.3f}")
                if on_chunk is not None and on_chunk({k: v.copy() for k, v in history.items()},
                                                     done):
                    break
        finally:
            bar.close()

    probs = evaluate(True)[1] if done >= num_epochs else None
    # The last epoch is always checkpointed: its gather is reused, not issued again (the
    # condition is the same on every process, so the collectives stay in step).
    on_host = gathered[1] if gathered and gathered[0] == done else _host_states(states, groups)
    return SweepResult(
        members=members, eval_epochs=eval_epochs, history=history, val_probs=probs,
        val_labels=val_labels, seen_mask=seen_mask, class_names=class_names,
        threshold=float(config.threshold), val_idx=val_idx, train_idx=train_idx,
        epochs_done=done, state=_member_order(on_host, groups, num_members),
        eval_block_rows=block_rows, device_data_bytes=int(placed))


def _agreed_step(manager) -> int | None:
    """The epoch of the checkpoint to resume (None: start afresh), as process 0 reads it:
    every process restores the same one even if a listing differed."""
    step = None if manager is None else checkpoints.latest_step(manager)
    if jax.process_count() == 1:
        return step
    from jax.experimental import multihost_utils

    step = int(multihost_utils.broadcast_one_to_all(np.int32(-1 if step is None else step)))
    return None if step < 0 else step


def _host_states(states: dict, groups) -> dict:
    """Every group's state as numpy on this host, without the device padding (gathered from
    every process under several)."""
    return {g.name: jax.tree.map(lambda leaf: _host(leaf)[:len(g.members)], states[g.name])
            for g in groups}


def _check_distinct(members: Sequence[dict]) -> None:
    """Two identical members train identically: a sweep counting both as replicates would
    overstate its evidence, so it is refused."""
    first: dict[tuple, int] = {}
    for i, m in enumerate(members):
        j = first.setdefault(tuple(sorted(m.items())), i)
        if j != i:
            raise UserError(f"members {j} and {i} of the sweep are the same, "
                            f"{_describe(m, members)}: they would train identically and count "
                            "twice; list each value of a grid (and each seed) once.")


def _check_two_classes(seen_mask: np.ndarray, labels: np.ndarray,
                       class_names: Sequence[str]) -> None:
    """Refuses a trial whose training rows hold one class: every prediction would be that
    class, and the accuracy that class's share of the validation rows (98% on data of 98%
    one class)."""
    for trial, seen in enumerate(seen_mask):
        if seen.sum() >= 2:
            continue
        counts = np.bincount(labels, minlength=len(class_names))
        only = [repr(class_names[c]) for c in np.flatnonzero(seen)]
        held = f"only class {only[0]}" if only else "no class"
        raise UserError(
            f"trial {trial}: the training rows hold {held}; a classifier needs at least two "
            "classes to learn from (the dataset's rows per class: "
            f"{list_first([f'{class_names[c]!r} {counts[c]}' for c in np.argsort(-counts)], 5)}"
            "). Raise config.data.train_fraction, hold out fewer classes "
            "(config.data.holdout_classes), or train on data with more classes.")


# The element RMS of embeddings the MLP's initialisation and learning rates suit (sentence
# and image embeddings are of order 1); far outside it, training learns little or nothing.
_TYPICAL_RMS = (1e-2, 1e2)


def _warn_about_rows(x: np.ndarray) -> None:
    """Warns when the training rows cannot train well: all the same vector, or of a scale far
    from 1 (the model then trains to chance without any error)."""
    if x.shape[0] > 1 and (x == x[:1]).all():
        logging.warning("every training row is the same vector: the model can learn nothing "
                        "but the class frequencies. Check how the embeddings were made (an "
                        "empty text field, for one, embeds every item alike).")
        return
    squares = sum(float(np.square(x[i:i + 4096], dtype=np.float64).sum())
                  for i in range(0, x.shape[0], 4096))
    rms = float(np.sqrt(squares / max(1, x.size)))
    low, high = _TYPICAL_RMS
    if not low <= rms <= high:
        logging.warning("the training rows' embeddings have an RMS of %.3g, far from 1: the "
                        "MLP's initialisation and learning rate suit features of order 1, so it "
                        "may train poorly or not at all. Standardise the embeddings (e.g. "
                        "divide them by %.3g) before training.", rms, rms)


class TrainingDiverged(UserError):
    """Some member's training loss is no longer finite: the learning rate (or the data's scale)
    is too large for it."""


def _describe(member: dict, members: Sequence[dict]) -> str:
    """A member in a message: its method, the settings it reads and those every method reads
    that differ between `members`, its trial and seed."""
    names = list(registry.method(member["method"]).reads) + [
        s.name for s in registry.settings(every_method=True)
        if len({m.get(s.name) for m in members}) > 1]
    settings = "".join(f" {n}={member.get(n, 0.0):g}" for n in names)
    return f"{member['method']}{settings}, trial {member['trial']}, seed {member['seed']}"


def _learning_rate_keys(config) -> tuple[str, str]:
    """The keys that set the learning-rate cycle's ends (config.optim's, or config.sweep's
    grids where set), with their values: now, and a tenth of them to try."""
    now, lower = [], []
    for name in ("lr_max", "lr_min"):
        setting = registry.setting(name)
        values = sweep_grid(config, setting)
        if config.sweep.get(setting.grid):
            key = f"config.sweep.{setting.grid}"
            now.append(f"{key}={_tuple_text(str(v) for v in values)}")
            lower.append(f"--{key}={_tuple_text(f'{v / 10:g}' for v in values)}")
        else:
            key = f"config.{setting.config_key}"
            now.append(f"{key}={values[0]}")
            lower.append(f"--{key}={values[0] / 10:g}")
    return " and ".join(now), " ".join(lower)


def _tuple_text(items) -> str:
    """A tuple as a --config override writes it: `(a,b)`, `(a,)`."""
    items = list(items)
    return f"({','.join(items)}{',' * (len(items) == 1)})"


def _check_finite(losses: np.ndarray, members: Sequence[dict], epoch: int, config) -> None:
    """Raises TrainingDiverged, naming the members and the learning-rate keys, if a member's
    training loss up to `epoch` is not finite."""
    bad = np.flatnonzero(~np.isfinite(losses))
    if not bad.size:
        return
    which = list_first([_describe(members[i], members) for i in bad], 3, sep="; ")
    now, lower = _learning_rate_keys(config)
    raise TrainingDiverged(
        f"training diverged: the training loss of {len(bad)} of {len(losses)} member(s) is not "
        f"finite after epoch {epoch} ({which}). Lower the learning rate, {now} (e.g. {lower}), "
        "and run again; no checkpoint of the diverged state was written.")


def _member_order(states: dict, groups, num_members: int):
    """The groups' host states (`_host_states`) as one tree with a leading [M] axis in member
    order."""
    if len(groups) == 1:
        return states[groups[0].name]

    def assemble(*leaves):
        out = np.empty((num_members,) + leaves[0].shape[1:], leaves[0].dtype)
        for g, leaf in zip(groups, leaves):
            out[g.members] = leaf
        return out

    return jax.tree.map(assemble, *[states[g.name] for g in groups])
