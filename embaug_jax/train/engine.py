"""The sweep engine: a whole sweep (method x alpha x softness x trial x seed) in one program.

`make_train(spec, num_epochs)` returns a pure `train(key, hp, data)` for ONE member (purejaxrl
style; `ProgramSpec.from_config` holds everything the program reads): epochs and steps are
`lax.scan`s, shuffling and augmentation happen on device, and the validation metrics are
computed every `eval_every` epochs inside the program. Everything a sweep varies -- the
augmentation method, alpha, softness, the trial's split, the seed -- is a traced array in
`MemberHParams`, so `jax.jit(jax.vmap(train, in_axes=(None, 0, None)))` trains
every member at once with one compilation. Control and mixing share that program: the augment
step always returns a fixed-size batch with per-example loss weights (`augment.augment_batch`).

`run_sweep(config, data, members)` is the driver: it shards the member axis over the devices,
trains in compiled chunks of `config.chunk_epochs` epochs (a tqdm tick and an `on_chunk` call
each; an orbax checkpoint every `config.checkpoint_every` epochs, resumed when present) and
returns a `SweepResult`, which `report.write_report(workdir, result)` turns into the report.

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
from embaug_jax.metrics import DEFAULT_THRESHOLD, threshold_accuracy
from embaug_jax.train.mlp import MLP, classification_loss, probabilities
from embaug_jax.util import list_first

OPTIMIZERS = ("adamw", "sgd")
# Config keys whose change makes an existing checkpoint meaningless for this run.
_FINGERPRINT_KEYS = ("data", "model", "optim", "augment", "sweep", "num_epochs", "batch_size",
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
    # Some member is manifold mixup: every member then runs the model's mixing path (lam_b = 0
    # for the others, which leaves their numbers exactly as without it), at the cost of a second
    # first-layer pass.
    manifold: bool = False

    @classmethod
    def from_config(cls, config, num_classes: int, n_train: int, *,
                    segments=None, manifold: bool = False) -> "ProgramSpec":
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
            threshold=float(config.threshold), manifold=bool(manifold))

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


def make_program(spec: ProgramSpec) -> Program:
    """Builds the per-member init / run / predict functions of a spec (shapes are static)."""
    if not isinstance(spec, ProgramSpec):
        raise TypeError(f"make_program takes a ProgramSpec (ProgramSpec.from_config(config, "
                        f"num_classes, n_train)), got {type(spec).__name__}.")
    num_classes, head, batch = spec.num_classes, spec.head, spec.batch_size
    model = MLP(num_classes=num_classes, hidden=spec.hidden, dropout=spec.dropout, head=head)
    steps_per_epoch = spec.steps_per_epoch
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size={batch} exceeds the {spec.n_train} training rows of a "
                         "split; lower config.batch_size or raise config.data.train_fraction.")
    tx = make_optimizer(spec)
    threshold, eval_every, eval_block = spec.threshold, spec.eval_every, spec.eval_block_rows

    def init(key, hp, data):
        init_key, _ = _member_keys(key, hp)
        params = model.init(init_key, jnp.zeros((1, data.x.shape[1]), data.x.dtype))
        return TrainState(params, tx.init(params), jnp.int32(0))

    def loss_fn(params, x, y, w, seen, dropout_key, mix=None):
        if mix is None:
            logits = model.apply(params, x, train=True, rngs={"dropout": dropout_key})
        else:  # manifold mixup's pairs, mixed after the first hidden layer
            x_b, lam_a, lam_b = mix
            logits = model.apply(params, x, train=True, mix_with=x_b, mix_weights=(lam_a, lam_b),
                                 rngs={"dropout": dropout_key,
                                       "dropout_b": jax.random.fold_in(dropout_key, 1)})
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
            x_in, y_in = x, y
            x, y, w = augment.augment_batch(
                aug_key, x, y, hp.method, class_mask=seen, pairing=spec.pairing,
                negative_mass=spec.negative_mass, label_weight=spec.label_weight,
                segments=spec.segments)
            mix = None
            if spec.manifold:
                is_manifold = hp.method.mix == augment.MIX_MANIFOLD
                pairs, w_m = augment.manifold_rows(
                    aug_key, x_in, y_in, jnp.where(is_manifold, hp.method.alpha, 1.0),
                    pairing=spec.pairing)
                x, y = jnp.where(is_manifold, pairs.x_a, x), jnp.where(is_manifold, pairs.y, y)
                w = jnp.where(is_manifold, w_m, w)
                mix = (jnp.where(is_manifold, pairs.x_b, x),
                       jnp.where(is_manifold, pairs.lam_a, 1.0),
                       jnp.where(is_manifold, pairs.lam_b, 0.0))
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y, w, seen, dropout_key, mix)
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


def make_train(spec: ProgramSpec, num_epochs: int) -> Callable:
    """Returns the pure `train(key, hp, data) -> (state, metrics)` of one member, all epochs.

    `jax.jit(jax.vmap(train, in_axes=(None, 0, None)))` trains a whole sweep; metrics hold one
    entry per evaluation ([num_epochs // eval_every]).
    """
    program = make_program(spec)
    num_periods = int(num_epochs) // spec.eval_every

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
def _compiled_sweep(spec: ProgramSpec, mesh: Mesh):
    """The jitted, vmapped, member-sharded init / run / predict of a spec.

    Cached on the spec (all the program reads), so another sweep with the same spec in one
    process (a resume, a different method list, a test) reuses the compiled executables instead
    of tracing fresh closures.
    """
    program = make_program(spec)
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
      threshold: the confidence threshold of the accuracies (`config.threshold`).
      val_idx, train_idx: optional int [T, Nv] / [T, n_train], the dataset rows of each trial's
        validation and training split (saved with the predictions, so an analysis can go back to
        the embeddings).
      epochs_done: epochs trained (default: the last evaluation epoch).
      state: the members' final `TrainState` ([M] leading axis), when the engine made it.
    """

    members: list[dict]
    eval_epochs: np.ndarray
    history: dict[str, np.ndarray]
    val_probs: np.ndarray | None
    val_labels: np.ndarray
    seen_mask: np.ndarray
    class_names: list[str]
    threshold: float = DEFAULT_THRESHOLD
    val_idx: np.ndarray | None = None
    train_idx: np.ndarray | None = None
    epochs_done: int | None = None
    state: TrainState | None = None

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

    A chunk is `config.chunk_epochs` epochs in one compiled call; a checkpoint is written every
    `config.checkpoint_every` epochs and at the end.

    Args:
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

    key = jax.random.key(int(config.seed)) if key is None else key
    devices = list(jax.devices() if devices is None else devices)
    mesh = Mesh(np.asarray(devices), ("members",))
    by_member = NamedSharding(mesh, P("members"))
    replicated = NamedSharding(mesh, P())

    members = [dict(m) for m in members]
    num_members = len(members)
    hp = jax.device_put(_pad(member_hparams(members), len(devices)), by_member)
    val_idx, train_idx = np.asarray(data.val_idx), np.asarray(data.train_idx)
    val_labels = np.asarray(data.labels)[val_idx]
    seen_mask = np.asarray(data.seen_mask)
    num_classes = seen_mask.shape[1]
    data = jax.device_put(data, replicated)
    spec = ProgramSpec.from_config(
        config, num_classes, data.train_idx.shape[1], segments=segments,
        manifold=any(m["method"] == "manifold_mixup" for m in members))
    init, run, predict = _compiled_sweep(spec, mesh)

    num_epochs, eval_every = int(config.num_epochs), spec.eval_every
    chunk_epochs, ckpt_every = int(config.chunk_epochs), int(config.checkpoint_every)
    num_evals = num_epochs // eval_every
    eval_epochs = evaluation_epochs(config)
    padded = jax.tree.leaves(hp)[0].shape[0]
    history = {k: np.full((padded, num_evals), np.nan, np.float32) for k in METRIC_NAMES}

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
    try:
        while done < num_epochs:
            # Every chunk is `chunk_epochs` long (one compiled program), except that a resume
            # from a checkpoint written under another chunk length first realigns.
            epochs = min(chunk_epochs - done % chunk_epochs, num_epochs - done)
            periods = epochs // eval_every
            state, metrics = run(key, hp, state, data, periods)
            first = done // eval_every
            for k in METRIC_NAMES:
                history[k][:, first:first + periods] = _host(metrics[k])
            done += epochs
            if manager is not None and (done % ckpt_every == 0 or done == num_epochs):
                # Saved without the device padding, so a run resumes on any device count.
                with _quiet_orbax():
                    manager.save(done, args=ocp.args.StandardSave(jax.tree.map(
                        lambda x: x[:num_members], {"state": state, "history": history})))
            bar.update(epochs)
            last = first + periods - 1
            bar.set_postfix(loss=f"{np.nanmean(history['train_loss'][:, last]):.4f}",
                            overall=f"{np.nanmean(history['overall_accuracy'][:, last]):.3f}")
            if on_chunk is not None and on_chunk(
                    {k: v[:num_members] for k, v in history.items()}, done):
                break
    finally:
        bar.close()
        if manager is not None:
            with _quiet_orbax():
                manager.wait_until_finished()
                manager.close()

    probs = None
    if done >= num_epochs:
        probs = _host(predict(state, hp, data))[:num_members]
    return SweepResult(
        members=members, eval_epochs=eval_epochs,
        history={k: v[:num_members] for k, v in history.items()}, val_probs=probs,
        val_labels=val_labels, seen_mask=seen_mask,
        class_names=(list(class_names) if class_names is not None
                     else [str(i) for i in range(num_classes)]),
        threshold=float(config.threshold), val_idx=val_idx, train_idx=train_idx,
        epochs_done=done,
        state=jax.tree.map(lambda x: x[:num_members], state))
