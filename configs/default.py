"""The paper's training set-up for one method (Soft E-Stitchup, the paper's best).

  python -m embaug_jax train --config=configs/default.py --workdir=/tmp/embaug/default \
      --config.data.path=/path/to/embeddings
  python -m embaug_jax train --config=configs/default.py:method=e_mixup ...

Variants (`--config=configs/default.py:smoke` or `:smoke,trials=2,method=control`):
  method=NAME one method, every other setting identical (sec. 3): control (no augmentation),
              e_mixup (sec. 2.2: lambda-weighted averages of two embeddings and of their labels),
              e_stitchup (sec. 2.3: each coordinate from one of two embeddings, w.p. lambda),
              soft_e_mixup / soft_e_stitchup (sec. 2.4: labels softened by 0.05; the default).
              The alpha is a starting point: configs/table1.py searches the grid.
  smoke       small synthetic clusters, few epochs: runs in seconds (the tests use it).
  synthetic   Gaussian clusters shaped like the paper's data (44,000 x 4864, 171 classes).
  trials=N    number of random splits.
Every other experiment (`table1.py`, `softness.py`, `demo.py`) loads this file and overrides the
sweep only, so "every setting identical but the augmentation" (sec. 3) holds.
"""

from __future__ import annotations

import ml_collections

import embaug_jax.train.optim  # noqa: F401 (registers the built-in methods and settings)
from embaug_jax import registry
from embaug_jax.configlib import parse_arg

# The variant keys and their types; configs built on this one parse their own from it.
VARIANTS = dict(smoke=False, synthetic=False, trials=0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, method="", **VARIANTS)
    c = ml_collections.ConfigDict()
    c.seed = 0  # root PRNG key: members fold in their seed and trial (embaug_jax/train/program.py)

    c.data = ml_collections.ConfigDict()
    c.data.source = "file"  # "file" (config.data.path) or "synthetic" (config.data.synthetic)
    c.data.path = ml_collections.FieldReference(None, field_type=str)
    c.data.train_fraction = 0.1  # sec. 3.4: 10% train, 90% validation
    c.data.trials = 5  # random splits; the paper reports mean +- max deviation over trials
    c.data.split_seed = 0
    # Classes that land no training example are the "none" category (sec. 2.5); more are forced
    # out of training by a count of random classes per trial ("2") or comma-separated class
    # names ("cat,dog"; a single name that is a number takes a trailing comma: "7,").
    c.data.holdout_classes = "0"
    # Paper-shaped Gaussian clusters (`:synthetic`). The long tail (class frequency ~ 1/rank^1.5)
    # leaves ~25 of 171 classes without a training row in a 10% split: the "none" category.
    c.data.synthetic = ml_collections.ConfigDict(dict(
        seed=0, n=44_000, dim=4864, num_classes=171, class_sep=0.35, noise=1.0, imbalance=1.5,
        segments=(1536, 1536, 1792)))  # title BERT | description BERT | EfficientNet-B4

    # The dropout rate, the learning-rate cycle and the weight decay below are each member's
    # value unless config.sweep sets a grid for them (the end of this file): members that differ
    # in them share one compiled program. The hidden sizes, the batch size and the optimizer
    # change shapes or code: each value is a compiled program of its own, and a run of its own.
    c.model = ml_collections.ConfigDict()
    c.model.hidden = (250, 250)  # sec. 3.3: two hidden layers of 250
    c.model.dropout = 0.3  # Dense -> Dropout(0.3) -> ReLU
    c.model.head = "sigmoid"  # element-wise sigmoid ("binomial output"); "softmax" to compare

    c.optim = ml_collections.ConfigDict()
    c.optim.optimizer = "adamw"  # "sgd" (with momentum) as an option
    c.optim.lr_min = 3e-4  # sec. 3.4: linear cycle 0.0003 <-> 0.003 ...
    c.optim.lr_max = 3e-3
    c.optim.half_cycle_epochs = 12  # ... with a step size of 12 epochs
    c.optim.weight_decay = 1e-4
    c.optim.momentum = 0.9  # SGD only

    c.num_epochs = 576  # sec. 3.4
    # The paper gives no batch size. 128 gives ~34 updates per epoch on the paper's 4,400
    # training rows, so one 12-epoch half cycle is ~400 updates, and under halving 64 mixed
    # rows per update -- large enough for stable Adam statistics with 171 classes, small
    # enough to keep the gradient noise that regularises a 1.3M-parameter MLP on 4,400 rows.
    c.batch_size = 128
    # The cadence, in epochs; None derives it from num_epochs (embaug_jax/train/cadence.py):
    # eval_every = the largest power of two <= sqrt(num_epochs), chunk_epochs = eval_every,
    # checkpoint_every = 3 chunks; here 16, 16 and 48. Any num_epochs works: evaluations fall
    # every eval_every epochs (validation metrics, the Figure 5 curves: 36 points at 576) and
    # after the last epoch; chunks (a progress tick and a metrics.jsonl rewrite each) and
    # checkpoints likewise. Values you set must nest: chunk_epochs a multiple of eval_every,
    # checkpoint_every a multiple of chunk_epochs. An evaluation runs the MLP on the validation
    # rows only (~2.7x a training epoch's FLOPs at 10% training data).
    c.eval_every = ml_collections.FieldReference(None, field_type=int)
    c.chunk_epochs = ml_collections.FieldReference(None, field_type=int)
    c.checkpoint_every = ml_collections.FieldReference(None, field_type=int)
    # Validation rows per trial in one evaluation block (streamed from the host): bounds the
    # block to trials x rows x D floats and its activations to members x rows x (250 + 250 + C).
    c.eval_block_rows = 8192
    # Caps the dataset bytes placed on one device (the training rows of every trial plus one
    # evaluation block; validation rows stream from the host): 0 = no cap. The block shrinks to
    # fit, so a dataset larger than device memory still trains.
    c.device_data_bytes = 0
    # Devices the members train on (0 = all visible ones); results do not depend on it, and a
    # run may resume on a different count.
    c.num_devices = 0
    # Devices each member is split over by its embedding's features (each holds a block of the
    # first layer's input columns; one all-reduce of the first layer's outputs per step), per
    # group of members of one kind on N devices: a ("members", "features") mesh of
    # N / devices_per_member x devices_per_member. None (auto) = on CPU devices 1 (members
    # only: on the 2-core test CPU a split member was no faster, benchmarks/README.md); on
    # accelerators the most that add no round of members: a group of M >= N members is sharded
    # over members alone (1), M < N members get N / M devices each where M divides N (a lone
    # member all N), within the divisors of N and of the embedding's dimension. Set k to force
    # it. Results agree across layouts to float rounding.
    c.devices_per_member = ml_collections.FieldReference(None, field_type=int)
    # XLA CPU devices the CLI splits the host into before JAX starts (0 = one per core, at most
    # 8), so the members of a group train side by side on the cores; each holds a copy of the
    # training rows. Read only on a CPU; XLA_FLAGS=--xla_force_host_platform_device_count wins.
    c.cpu_devices = 0
    # Members one device steps together: None (auto) = one at a time on CPU devices (a member's
    # parameters and Adam moments stay in cache through its whole call), all at once (`vmap`)
    # on GPU/TPU; 0 = all at once; k = k at a time. Results agree to float rounding.
    c.members_at_once = ml_collections.FieldReference(None, field_type=int)
    c.threshold = 0.6  # sec. 3.5 confidence threshold of the accuracy metrics, in (0, 1)
    # N > 0: a jax.profiler trace of the first N training steps after the first compiled call
    # (whole evaluation periods) into WORKDIR/profile, for TensorBoard's profile plugin or
    # Perfetto (embaug_jax/train/profiling.py). Changes no number.
    c.profile = 0

    c.augment = ml_collections.ConfigDict()
    c.augment.pairing = "halve"  # sec. 2.2: pairs of examples make one, halving the batch
    c.augment.negative_mass = 1.0  # sec. 2.4: total mass spread over the negative classes
    c.augment.label_weight = "lambda"  # stitchup labels weighted by lambda (the paper)
    c.augment.use_segments = False  # True: an independent lambda per dataset segment

    # The report's statistics (results["selection"], results["paired"], results["axes"]): the
    # keyword arguments of `report.write_report(workdir, result, **config.report)`, whose only
    # defaults are these (axis_metrics' is write_report's own as well). Changing them only
    # rewrites the report of a finished run.
    c.report = ml_collections.ConfigDict()
    # Share of each trial's validation rows on which each method's alpha (and any other setting
    # it ran several values of) is chosen; the rest report it. 0: only the paper's procedure (choose and report on the same rows).
    c.report.selection_fraction = 0.5
    c.report.bootstrap_resamples = 200  # per trial, for the paired intervals (0: none)
    c.report.seed = 0  # the selection split and the bootstrap draws
    # What results.md's "Along each swept setting" tables and settings.png show: each method's
    # metrics at each value of a setting it ran several values of (report.results.SCALAR_METRICS).
    c.report.axis_metrics = ("weighted_auc", "none_accuracy")

    c.sweep = ml_collections.ConfigDict()
    c.sweep.methods = ("soft_e_stitchup",)
    # A grid per registered setting (embaug_jax.registry), read only by the methods that read
    # the setting: config.sweep.alphas (Beta(alpha, alpha); the paper searched (0, 0.5]) = (0.2,),
    # .softness (sec. 2.4) = (0.05,), and the ablation baselines' (configs/ablation.py)
    # .smoothing (label smoothing's epsilon), .noise_std (Gaussian noise's std relative to an
    # embedding's RMS) and .drop_rate (feature dropout's rate), each (0.1,).
    # Every method reads .lr_min, .lr_max, .half_cycle_epochs, .weight_decay and .dropout
    # (embaug_jax/train/optim.py): empty, each member takes config.optim's / config.model's value;
    # set, e.g. "--config.sweep.weight_decay=(1e-5,1e-4,1e-3)", every method runs each value, in
    # the same compiled programs (configs/regularization.py). The report chooses each method's
    # setting over every grid it ran, as it chooses alpha.
    for setting in registry.settings():
        c.sweep[setting.grid] = setting.default
    c.sweep.seeds = (0,)

    if arg.method:
        c.sweep.methods = (arg.method,)
    if arg.synthetic:
        c.data.source = "synthetic"
    if arg.smoke:
        smoke(c)
    if arg.trials:
        c.data.trials = arg.trials
    return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a config to seconds: small synthetic clusters, a small MLP, 16 short epochs."""
    c.data.source = "synthetic"
    c.data.synthetic.update(dict(n=640, dim=24, num_classes=10, class_sep=1.0, imbalance=1.0,
                                 segments=(8, 16)))
    c.data.train_fraction = 0.25
    c.data.holdout_classes = "2"  # so the "none" metrics have examples
    c.data.trials = 2
    c.model.hidden = (32, 32)
    c.optim.half_cycle_epochs = 4
    c.num_epochs = 16
    c.batch_size = 16
    # Two chunks of two evaluations, a checkpoint after each: a short run still resumes.
    c.eval_every = 4
    c.chunk_epochs = 8
    c.checkpoint_every = 8
    return c
