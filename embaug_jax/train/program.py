"""The pure per-member program of one augmentation kind (purejaxrl style).

`make_program(spec)` returns the init / train / evaluate functions of one member of
`spec.kind`; `ProgramSpec.from_config(config, num_classes, n_train, kind=...)` holds everything
they read. Epochs and steps are `lax.scan`s; shuffling and augmentation happen on device.
Everything a sweep varies within a kind -- alpha, softness, the soft switch, the method, the
learning-rate cycle, the weight decay, the dropout rate, the trial's split, the seed -- is a
traced array in `MemberHParams`, so one compiled program trains every member of the kind
(`train.driver` maps it over the members on each device). Each member computes only the rows
it trains on: under the paper's halving a mixing member trains on B/2 mixed rows, the control
on B rows, with no padding rows and no select between methods (`augment.augment_rows`);
manifold mixup's pairs are mixed after the model's first hidden layer.

Keys: member key = fold_in(fold_in(root, seed), trial); its first split initialises the MLP, the
second drives training: epoch key = fold_in(train_key, epoch) splits into the shuffle key and a
steps key, and step key = fold_in(steps key, step). Nothing random depends on how many members
run, on the grouping or on the chunking, so a member trained alone, inside a sweep, on 1 or 4
devices, or across a resume sees the same numbers. Members that differ only in method or alpha
share their initialisation and shuffles (common random numbers), so a comparison of methods
within a trial is not confounded by the draw; trials get independent initialisations as well
as splits.

Features axis: `make_program(spec, features_axis=name)` splits each member over the devices of
a mapped axis (the driver's "features" mesh axis, when a group has fewer members than
devices) by the embedding's features: each device holds a block of the first layer's input
columns (its kernel's, and their optimizer moments: `Program.split_by_features`). Every device
draws the member's whole step from the same keys -- shuffle, augmented rows, dropout masks --
and keeps its block of the rows' features; the first layer's partial products are summed over
the axis, one all-reduce of [rows, hidden] a step (two for manifold mixup, whose parents pass
the first layer apart), and the rest of the network runs whole on every device. Each device's
gradient of its kernel block is its own, the other gradients and updates are the same
everywhere, so nothing else is reduced. The numbers are those of the whole member on one
device, to float rounding.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from embaug_jax import augment, registry
from embaug_jax.evaluate.threshold import accuracies, threshold_counts
from embaug_jax.train.cadence import Cadence
from embaug_jax.train.members import MemberHParams
from embaug_jax.train.mlp import MLP, classification_loss, probabilities
from embaug_jax.train.optim import make_optimizer
from embaug_jax.util import unroll_cpu_threefry


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


class TrainState(NamedTuple):
    """A member's training state (a leading [M] axis in a group's)."""

    params: Any
    opt_state: Any
    epoch: jax.Array  # int32: epochs completed


# ---------------------------------------------------------------------------------------------
# The pure program.


@dataclasses.dataclass(frozen=True)
class ProgramSpec:
    """Everything the compiled program reads besides the traced members and the data arrays.

    `make_program` reads nothing else, and the compile cache is keyed on the spec itself, so a
    new knob the program depends on has to become a field here and can never reuse a stale
    program. Build one from a config with `ProgramSpec.from_config`. The learning-rate cycle,
    the weight decay and the dropout rate are each member's traced values
    (`MemberHParams.optim`, `train.optim`), except those in `fixed`.
    """

    num_classes: int
    n_train: int  # training rows per trial
    hidden: tuple[int, ...]
    head: str
    optimizer: str
    momentum: float
    batch_size: int
    pairing: str
    negative_mass: float | None
    label_weight: str
    segments: tuple[int, ...] | None  # sizes mixed independently; None: one lambda per pair
    eval_every: int
    eval_block_rows: int
    threshold: float
    kind: str = "control"  # `registry.KINDS`: the members' code path and rows per step
    # The registry rows the kind's program applies: (method id, transform) of its methods'
    # transforms, and the group's untraced settings. Here, so that a method or setting
    # registered after a compile gets a new program.
    transforms: tuple[tuple[int, Callable], ...] = ()
    static: tuple[tuple[str, float], ...] = ()
    # Settings every method reads that all the program's members share (a `Group`'s), as
    # constants: XLA folds them into the program as it does any constant, so a sweep that sets
    # no grid compiles the program it compiled before they could be swept, to the bit. The
    # members' traced values of these are not read.
    fixed: tuple[tuple[str, float], ...] = ()

    @classmethod
    def from_config(cls, config, num_classes: int, n_train: int, *, segments=None,
                    kind: str = "control", static=(), fixed=()) -> ProgramSpec:
        """The spec of `kind`'s program (with the untraced settings `static` and the shared
        settings `fixed`, a `Group`'s) as `config` sets it up, the kind's transforms as
        registered now."""
        m, o, a = config.model, config.optim, config.augment
        return cls(
            num_classes=int(num_classes), n_train=int(n_train),
            hidden=tuple(int(h) for h in m.hidden), head=str(m.head),
            optimizer=str(o.optimizer), momentum=float(o.momentum),
            batch_size=int(config.batch_size),
            pairing=str(a.pairing),
            negative_mass=None if a.negative_mass is None else float(a.negative_mass),
            label_weight=str(a.label_weight),
            segments=None if segments is None else tuple(int(s) for s in segments),
            eval_every=Cadence.from_config(config).eval_every,
            eval_block_rows=int(config.eval_block_rows), threshold=float(config.threshold),
            kind=str(kind), transforms=augment.kind_transforms(kind, [n for n, _ in static]),
            static=tuple((str(n), float(v)) for n, v in static),
            fixed=tuple((str(n), float(v)) for n, v in fixed))

    @property
    def steps_per_epoch(self) -> int:
        return self.n_train // self.batch_size


@dataclasses.dataclass(frozen=True)
class Program:
    """The pure per-member functions of one kind, which the driver maps (or vmaps), jits and
    shards.

    init(key, hp, data: DeviceData) -> TrainState
    train(key, hp, state, data, num_epochs) -> (state, mean training loss of those epochs)
    evaluate(params, hp, data, block: EvalBlock) -> (counts int32 [5], probabilities float32 [rows, C]);
      counts = (correct, correct "none", "none" rows, correct seen, seen rows) over valid rows.
    With a features axis, `state` holds this device's block of the leaves `split_by_features`
    marks, and every result is the whole member's.
    """

    init: Callable
    train: Callable
    evaluate: Callable
    model: MLP
    kind: str
    rows: int  # rows a member trains on per step
    steps_per_epoch: int

    def split_by_features(self, tree):
        """A tree of bools like `tree` (a `TrainState`, its params or its optimizer state): True
        for the leaves a features axis splits along their last axis -- the first layer's kernel
        ([out, D]: the input's columns) and the optimizer's moments of it."""
        first = self.model.first_layer

        def split(path, _):
            keys = [getattr(k, "key", None) for k in path]
            return first in keys and keys[-1] == "kernel"

        return jax.tree_util.tree_map_with_path(split, tree)


def _member_keys(key, hp: MemberHParams):
    member = jax.random.fold_in(jax.random.fold_in(key, hp.seed), hp.trial)
    init_key, train_key = jax.random.split(member)
    return init_key, train_key


def metrics_from_counts(counts) -> dict:
    """`evaluate.accuracies` of summed `Program.evaluate` counts, named as the driver's history
    names them (float32: the sums are integers, so blocks summed on the host give the one-shot
    values exactly)."""
    return {f"{k}_accuracy": v for k, v in accuracies(jnp.asarray(counts)).items()}


def _own_features(x, axis: str):
    """This device's equal block of the features (last axis) of `x`, split over `axis`."""
    shards = jax.lax.axis_size(axis)
    n = x.shape[-1] // shards
    if n * shards != x.shape[-1]:
        raise ValueError(f"{x.shape[-1]} features cannot be split evenly over {shards} devices.")
    return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(axis) * n, n, axis=x.ndim - 1)


def make_program(spec: ProgramSpec, *, features_axis: str | None = None) -> Program:
    """Builds the per-member init / train / evaluate of `spec.kind` (shapes are static).

    Args:
      features_axis: the name of a mapped axis (`shard_map`'s) over whose devices each member's
        embedding features are split (see the module docstring); None: whole on each device.
    """
    if not isinstance(spec, ProgramSpec):
        raise TypeError(f"make_program takes a ProgramSpec (ProgramSpec.from_config(config, "
                        f"num_classes, n_train)), got {type(spec).__name__}.")
    kind = spec.kind
    if kind not in registry.KINDS:
        raise registry.UnknownNameError.naming("kind", kind, registry.KINDS)
    unroll_cpu_threefry()  # a step's dropout, pairing and shuffle draws: same bits, one pass each
    num_classes, head, batch = spec.num_classes, spec.head, spec.batch_size
    model = MLP(num_classes=num_classes, hidden=spec.hidden, head=head)
    steps_per_epoch = spec.steps_per_epoch
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size={batch} exceeds the {spec.n_train} training rows of a "
                         "split; lower config.batch_size or raise config.data.train_fraction.")
    threshold, segments = spec.threshold, spec.segments
    rows = augment.kind_rows(kind, batch, spec.pairing)

    def settings(hp):
        """The member's learning-rate cycle, weight decay and dropout rate: traced, or the
        program's constants."""
        return {**hp.optim, **dict(spec.fixed)}

    def optimizer(hp):
        """The member's optimiser."""
        return make_optimizer(spec.optimizer, settings(hp), steps_per_epoch,
                              momentum=spec.momentum)

    def init(key, hp, data):
        init_key, _ = _member_keys(key, hp)
        params = model.init(init_key, jnp.zeros((1, data.x.shape[1]), data.x.dtype))
        return TrainState(params, optimizer(hp).init(params), jnp.int32(0))

    def loss_fn(params, x, y, seen, dropout_key, dropout):
        if kind == "manifold":  # pairs mixed after the first hidden layer, inside the model
            x_a, x_b, lam_a, lam_b = x
            logits = model.apply(params, x_a, train=True, dropout=dropout, mix_with=x_b,
                                 mix_weights=(lam_a, lam_b), features_axis=features_axis,
                                 rngs={"dropout": dropout_key,
                                       "dropout_b": jax.random.fold_in(dropout_key, 1)})
        else:
            logits = model.apply(params, x, train=True, dropout=dropout,
                                 features_axis=features_axis, rngs={"dropout": dropout_key})
        return classification_loss(logits, y, jnp.ones(y.shape[0], jnp.float32), seen, head)

    def train_epoch(train_key, hp, data, state):
        tx = optimizer(hp)
        method = hp.method.with_static(spec.static) if spec.static else hp.method
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
                aug_key, take, batch, method, kind=kind, class_mask=seen,
                pairing=spec.pairing, negative_mass=spec.negative_mass,
                label_weight=spec.label_weight, segments=segments, weights=w,
                transforms=spec.transforms)
            if features_axis is not None:  # the step's whole rows drawn, this device's block kept
                if kind == "manifold":
                    x = (*(_own_features(a, features_axis) for a in x[:2]), *x[2:])
                else:
                    x = _own_features(x, features_axis)
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y, seen, dropout_key,
                                                      settings(hp)["dropout"])
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
        if features_axis is not None:
            x = _own_features(x, features_axis)
        labels = block.labels[hp.trial]
        seen = data.seen_mask[hp.trial]
        probs = probabilities(model.apply(params, x, features_axis=features_axis), head,
                              seen).astype(jnp.float32)
        # Padding rows weigh 0: the counts are those of the block's valid rows.
        return threshold_counts(probs, labels, seen, threshold, block.valid), probs

    return Program(init, train, evaluate, model, kind, rows, steps_per_epoch)


def make_train(spec: ProgramSpec, num_epochs: int) -> Callable:
    """Returns the pure `train(key, hp, data) -> (state, metrics)` of one member of `spec.kind`.

    `data` is a `TrainData` of device arrays; the whole run (all epochs, an evaluation of the
    validation rows every `eval_every` epochs and after the last) is one program, so
    `jax.jit(jax.vmap(train, in_axes=(None, 0, None)))` trains members of one kind at once.
    Metrics hold one entry per evaluation (`Cadence.eval_epochs`). `run_sweep` computes the
    same numbers with the data streamed and the members grouped.
    """
    program = make_program(spec)
    eval_every = spec.eval_every
    num_periods, last_period = divmod(int(num_epochs), eval_every)

    def train(key, hp, data):
        x = jnp.asarray(data.x, jnp.float32)
        labels = jnp.asarray(data.labels, jnp.int32)
        on_device = DeviceData(x, labels, jnp.asarray(data.train_idx, jnp.int32),
                               jnp.asarray(data.seen_mask, bool))
        val_idx = jnp.asarray(data.val_idx)
        block = EvalBlock(x[val_idx], labels[val_idx], jnp.ones(val_idx.shape[1], bool))

        def period(state, epochs):
            state, loss = program.train(key, hp, state, on_device, epochs)
            counts, _ = program.evaluate(state.params, hp, on_device, block)
            metrics = metrics_from_counts(counts)
            metrics.update(train_loss=loss, epoch=state.epoch)
            return state, metrics

        state, metrics = jax.lax.scan(lambda s, _: period(s, eval_every),
                                      program.init(key, hp, on_device), None, length=num_periods)
        if last_period:  # the shorter last period, evaluated too
            state, last = period(state, last_period)
            metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), metrics, last)
        return state, metrics

    return train
