"""`embaug train`: a config's sweep end to end in a workdir (validate, load, split, train, report).

`train_and_evaluate(config, workdir)` validates the config, loads the data, draws the splits,
fingerprints config and data, runs the sweep engine (`embaug_jax.train.driver.run_sweep`: a tqdm
bar, an orbax checkpoint, a rewritten metrics.jsonl and TensorBoard events per chunk; rerunning
the same command resumes from the last checkpoint) and hands the final validation probabilities to
`embaug_jax.report.write_report`. A finished run re-reports from its saved predictions. Where
each file goes is `embaug_jax.workdir.Workdir`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from embaug_jax import augment, distributed, registry, report
from embaug_jax.evaluate import check_threshold
from embaug_jax.report.results import AXIS_METRICS, check_axis_metrics
from embaug_jax.report.tensorboard import TensorBoardLog
from embaug_jax.report.statistics import check_bootstrap_resamples, check_selection_fraction
from embaug_jax.train.cadence import Cadence
from embaug_jax.train.checkpoints import FINGERPRINT_KEYS
from embaug_jax.train.driver import (OnChunk, TrainingDiverged, devices_per_member,
                                     members_at_once, run_sweep)
from embaug_jax.train.members import sweep_members
from embaug_jax.train.mlp import HEADS
from embaug_jax.train.optim import OPTIMIZERS, sweep_grid
from embaug_jax.train.program import TrainData
from embaug_jax.train.splits import Splits, make_splits
from embaug_jax.util import (DamagedOutput, UserError, check_cpu_devices, check_seed,
                             write_json_atomic, write_text_atomic)
from embaug_jax.workdir import Workdir

DATA_SOURCES = ("file", "synthetic")


# ---------------------------------------------------------------------------------------------
# Config validation and data.


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(f"bad config: {message}")


def _require_distinct(grid: str, values: list) -> None:
    """Each value of a grid makes members of its own: a repeated one would train the same
    members twice and count them as independent replicates."""
    repeated = sorted({v for v in values if values.count(v) > 1})
    _require(not repeated, f"{grid} lists {', '.join(f'{v:g}' for v in repeated)} more than "
             "once; each value makes members of its own, so a repeat would train the same "
             "members twice and count them as independent replicates. List each value once.")


def _require_valid(check, value, name: str) -> None:
    """`check(value, name)`, its ValueError a UserError about the config."""
    try:
        check(value, name)
    except (TypeError, ValueError) as e:
        raise UserError(f"bad config: {e}") from None


def validate_config(config) -> None:
    """Raises UserError (a ValueError) naming the first bad value and how to fix it."""
    s, d, o, m, a = config.sweep, config.data, config.optim, config.model, config.augment
    n_dev = int(config.num_devices)
    _require(0 <= n_dev <= jax.device_count(), f"config.num_devices={n_dev} but "
             f"{jax.device_count()} device(s) are visible; use 0 (all) or at most that many.")
    _require(n_dev == 0 or jax.process_count() == 1, f"config.num_devices={n_dev} but "
             f"{jax.process_count()} processes run (--distributed): each must take part, so use "
             "0 (every device of every process).")
    check_cpu_devices(config.get("cpu_devices", 0))
    members_at_once(config, jax.devices())  # a UserError if the value is out of range
    # A UserError if a set value does not divide the devices (the features: once loaded).
    devices_per_member(config, 1, n_dev or jax.device_count(), None,
                       platform=jax.default_backend())
    _require(len(s.methods) > 0, "config.sweep.methods is empty; list at least one of "
             f"{registry.method_names()}.")
    for method in s.methods:
        try:
            registry.method(method)
        except registry.UnknownNameError as e:
            raise UserError(f"bad config: config.sweep.methods: {e}") from None
    _require(len(set(s.methods)) == len(s.methods), "config.sweep.methods has duplicates.")
    # The grid of each setting a listed method reads: non-empty, every value in range. A
    # setting every method reads takes the config's value where its grid is unset.
    for setting in registry.settings():
        users = [mth for mth in s.methods if setting.name in registry.method(mth).reads]
        if setting.every_method and not s.get(setting.grid):
            value = sweep_grid(config, setting)[0]
            _require(value in setting.range, f"config.{setting.config_key}={value:g} must be "
                     f"{setting.text}.")
            continue
        if not (users or setting.every_method):
            continue
        values = s.get(setting.grid, ())
        _require(len(values) > 0, f"config.sweep.{setting.grid} is empty but "
                 f"{(users or ['every method'])[0]} needs it.")
        for v in values:
            _require(float(v) in setting.range, f"{setting.name}={v} in "
                     f"config.sweep.{setting.grid} must be {setting.text}.")
        _require_distinct(f"config.sweep.{setting.grid}", [float(v) for v in values])
    lr_min, lr_max, half_cycle = (sweep_grid(config, registry.setting(n))
                                  for n in ("lr_min", "lr_max", "half_cycle_epochs"))
    _require(max(lr_min) <= min(lr_max), f"every lr_min ({_grid_text(config, 'lr_min')}) must "
             f"be <= every lr_max ({_grid_text(config, 'lr_max')}), so that each member's cycle "
             "rises from lr_min to lr_max.")
    _require(all(v == int(v) for v in half_cycle), f"half_cycle_epochs "
             f"({_grid_text(config, 'half_cycle_epochs')}) must be whole epochs.")
    _require(len(s.seeds) > 0, "config.sweep.seeds is empty.")
    for seed in s.seeds:
        check_seed(seed, "config.sweep.seeds: seed")
    _require_distinct("config.sweep.seeds", [int(v) for v in s.seeds])
    for name, value in (("config.seed", config.seed), ("config.data.split_seed", d.split_seed),
                        ("config.report.seed", config.report.seed)):
        check_seed(value, name)
    if d.source == "synthetic":
        check_seed(d.synthetic.seed, "config.data.synthetic.seed")
    _require(d.source in DATA_SOURCES, f"config.data.source={d.source!r}; choose one of "
             f"{DATA_SOURCES}.")
    # `:smoke` / `:synthetic` pick synthetic clusters; training on them while a data path is set
    # would silently ignore the user's data.
    _require(not (d.source == "synthetic" and d.get("path")), f"config.data.path={d.path!r} is "
             "set but config.data.source='synthetic' (the :smoke and :synthetic variants pick "
             "synthetic clusters); set config.data.source='file' to train on that file, or "
             "unset the path.")
    _require(0 < float(d.train_fraction) < 1, f"config.data.train_fraction={d.train_fraction} "
             "must be in (0, 1) (the paper uses 0.1).")
    _require(int(d.trials) >= 1, f"config.data.trials={d.trials} must be >= 1.")
    _require(m.head in HEADS, f"config.model.head={m.head!r}; choose one of {HEADS}.")
    _require(all(int(h) > 0 for h in m.hidden), f"config.model.hidden={m.hidden} must be "
             "positive widths.")
    _require(o.optimizer in OPTIMIZERS, f"config.optim.optimizer={o.optimizer!r}; choose one "
             f"of {OPTIMIZERS}.")
    # The check the augmentations make of their options: the two cannot disagree.
    for option in ("pairing", "label_weight", "negative_mass"):
        try:
            augment.check_options(**{option: a[option]})
        except ValueError as e:
            raise UserError(f"bad config: config.augment.{option}: {e}.") from None
    bs = int(config.batch_size)
    _require(bs >= 2 and (bs % 2 == 0 or a.pairing != "halve"), f"config.batch_size={bs} must "
             "be >= 2 and even (halving pairs the two halves of a batch).")
    Cadence.from_config(config)  # a UserError if the set values cannot nest
    _require(int(config.eval_block_rows) >= 1, "config.eval_block_rows must be >= 1.")
    _require(int(config.get("profile") or 0) >= 0, "config.profile must be >= 0 (training "
             "steps to trace with jax.profiler; 0: none).")
    _require(int(config.get("device_data_bytes", 0) or 0) >= 0, "config.device_data_bytes "
             "must be >= 0 (0 = no cap on the dataset bytes placed on a device).")
    # The checks write_report makes of the same values: the two cannot disagree.
    _require_valid(check_threshold, config.threshold, "config.threshold")
    _require_valid(check_selection_fraction, config.report.selection_fraction,
                   "config.report.selection_fraction")
    _require_valid(check_bootstrap_resamples, config.report.bootstrap_resamples,
                   "config.report.bootstrap_resamples")
    _require_valid(check_axis_metrics, config.report.get("axis_metrics", AXIS_METRICS),
                   "config.report.axis_metrics")


def _grid_text(config, name: str) -> str:
    """Where a setting every method reads gets its values, and what they are."""
    setting = registry.setting(name)
    where = (f"config.sweep.{setting.grid}" if config.sweep.get(setting.grid)
             else f"config.{setting.config_key}")
    return f"{where}={', '.join(f'{v:g}' for v in sweep_grid(config, setting))}"


def load_data(config):
    """The config's embedding dataset: a file (`config.data.path`) or synthetic clusters."""
    d = config.data
    if d.source == "synthetic":
        from embaug_jax.train.synthetic import make_synthetic

        sy = d.synthetic
        return make_synthetic(sy.seed, sy.n, sy.dim, sy.num_classes, class_sep=sy.class_sep,
                              noise=sy.noise, imbalance=sy.imbalance,
                              segments=tuple(sy.segments) if sy.segments else None)
    if not d.path:
        raise UserError("bad config: config.data.source='file' but config.data.path is not "
                        "set; pass --config.data.path=DIR (a dataset written by `embaug "
                        "extract`) or use --config.data.source=synthetic.")
    from embaug_jax.dataset import load_embeddings

    return load_embeddings(os.path.expanduser(d.path))


# ---------------------------------------------------------------------------------------------
# The command.


def data_fingerprint(dataset) -> str:
    """sha256 over a dataset's contents (embeddings, labels, class names, ids, segments).

    Reads memory-mapped embeddings in blocks of rows, so hashing stays within memory.
    """
    h = hashlib.sha256()
    emb = dataset.embeddings
    h.update(json.dumps([str(emb.dtype), list(emb.shape), list(dataset.class_names),
                         dataset.segment_sizes]).encode())
    rows = max(1, (64 << 20) // max(1, emb.shape[1] * emb.dtype.itemsize))
    for start in range(0, emb.shape[0], rows):
        h.update(np.ascontiguousarray(emb[start:start + rows]).tobytes())
    h.update(np.ascontiguousarray(np.asarray(dataset.labels, np.int64)).tobytes())
    if dataset.ids is not None:
        h.update("\0".join(map(str, dataset.ids.tolist())).encode())
    return h.hexdigest()


# How the checkpointed state is laid out; a change makes older checkpoints unreadable.
STATE_LAYOUT = "mlp kernels [out, in]"


def _fingerprint(config, dataset) -> dict:
    """What the checkpoints depend on: the config's training keys and the data itself.

    The data enters by its content hash, not its path: replacing the file at config.data.path
    with other data of the same shape must not resume the old run; moving it may.
    """
    full = json.loads(config.to_json_best_effort())
    out = {k: full[k] for k in FINGERPRINT_KEYS if k in full}
    out["eval_every"] = Cadence.from_config(config).eval_every  # resolved: None may be derived
    if isinstance(out.get("data"), dict):
        out["data"] = {k: v for k, v in out["data"].items() if k != "path"}
    if isinstance(out.get("sweep"), dict):
        # An unset grid of a setting every method reads runs the config's value, which the
        # fingerprint holds already: left out, a run that sets none keeps its fingerprint.
        unset = {s.grid for s in registry.settings(every_method=True)
                 if not config.sweep.get(s.grid)}
        out["sweep"] = {k: v for k, v in out["sweep"].items() if k not in unset}
    out["data_content"] = data_fingerprint(dataset)
    out["state_layout"] = STATE_LAYOUT
    return out


def _same_run(previous: dict, fingerprint: dict) -> bool:
    """The same config and data, whatever version laid out the checkpointed state."""
    if not isinstance(previous, dict):
        return False
    strip = lambda fp: {k: v for k, v in fp.items() if k != "state_layout"}
    return strip(previous) == strip(fingerprint)


def _check_fingerprint(workdir: Workdir, fingerprint: dict) -> None:
    """Refuses to resume (or re-report) a run of another config or other data, or a run whose
    fingerprint is gone; each message names everything to delete to start over."""
    state = workdir.run_state()
    if not state:
        return
    remove = " and ".join(str(p) for p in state)
    held = " and ".join(p.name for p in state)
    if not workdir.fingerprint.is_file():
        raise UserError(
            f"{workdir} holds {held} but no {workdir.fingerprint.name}, so nothing says which "
            f"config and data they belong to, and they are not reused. Delete {remove} to start "
            "over, or use a new --workdir.")
    previous = _read_json(workdir.fingerprint)
    if not isinstance(previous, dict):
        raise DamagedOutput(
            f"{workdir.fingerprint} is damaged (not a JSON object), so nothing says which config "
            f"and data {held} belong to, and they are not reused. Delete {remove} to start over, "
            "or use a new --workdir.")
    if previous == fingerprint:
        return
    changed = sorted(k for k in set(previous) | set(fingerprint)
                     if previous.get(k) != fingerprint.get(k))
    ckpt_dir = workdir.checkpoints
    if changed == ["state_layout"]:
        if not workdir.has_checkpoints():
            return  # a finished run without checkpoints: its report needs only the predictions
        raise UserError(
            f"{workdir} holds checkpoints of an earlier embaug_jax, whose MLP stored its kernels "
            f"[in, out] (now {STATE_LAYOUT}); they cannot be resumed. Use a new --workdir, or "
            f"delete {ckpt_dir}: a finished run then re-reports from its predictions, an "
            "unfinished one starts over.")
    if changed == ["data_content"]:
        raise UserError(f"{workdir} holds {held} of a run trained on other data: the dataset's "
                        "contents differ from those of the run that wrote them (same config). "
                        f"Use a new --workdir, or delete {remove} to start over on this data.")
    raise UserError(
        f"{workdir} holds {held} of a different run (it differs in: {', '.join(changed)}); "
        f"use a new --workdir or delete {remove} to start over.")


def _write_metrics_jsonl(path, members, history, eval_epochs, epochs_done):
    lines = []
    for e, epoch in enumerate(eval_epochs):
        if epoch > epochs_done:
            break
        for i, m in enumerate(members):
            row = dict(member=i, **m, epoch=int(epoch))
            # NaN (e.g. no "none" example in a split) becomes null: metrics.jsonl stays strict JSON.
            row.update({k: None if np.isnan(v[i, e]) else float(v[i, e])
                        for k, v in history.items()})
            lines.append(json.dumps(row))
    write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


def prepare_data(config) -> tuple[Any, Splits, TrainData, tuple[int, ...] | None]:
    """The config's dataset, its trial splits, the device-ready `TrainData` and the segment
    sizes the augmentation mixes independently (None unless `config.augment.use_segments`)."""
    dataset = load_data(config)
    if dataset.num_classes < 2:
        raise UserError(f"the dataset has {dataset.num_classes} class(es); need at least 2.")
    d = config.data
    splits: Splits = make_splits(dataset.labels, dataset.num_classes, trials=int(d.trials),
                                 train_fraction=float(d.train_fraction), seed=int(d.split_seed),
                                 holdout_classes=_holdout(d),
                                 class_names=dataset.class_names)
    n_train, batch = int(splits.train_idx.shape[1]), int(config.batch_size)
    if batch > n_train:
        raise UserError(f"config.batch_size={batch} exceeds the {n_train} training rows of a "
                        f"split ({float(d.train_fraction):g} of {len(dataset)} rows); lower "
                        "config.batch_size or raise config.data.train_fraction.")
    segments = dataset.segment_sizes if config.augment.use_segments else None
    if config.augment.use_segments and segments is None:
        raise UserError("config.augment.use_segments=True but the dataset records no segments; "
                        "set it to False, or train on a dataset written with segments.")
    # Host arrays (a file dataset stays memory-mapped): the engine places only the training rows
    # on the devices and streams the validation rows.
    data = TrainData(dataset.embeddings, np.asarray(dataset.labels, np.int32), splits.train_idx,
                     splits.val_idx, splits.seen_mask)
    return dataset, splits, data, segments


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       on_chunk: OnChunk | None = None) -> dict | None:
    """Runs a config's sweep end to end in `workdir`; returns the results dict.

    Writes the config, its fingerprint, metrics.jsonl, the checkpoints and (via
    `report.write_report`) the predictions, results and figures; see `Workdir` for the layout.
    Rerunning with the same config resumes. `on_chunk` is `run_sweep`'s: a truthy return stops
    the sweep as if killed (returns None).
    """
    started = time.monotonic()
    # Under --distributed every process runs this command, and each must run the same one:
    # processes of different configs (or data) would wait for each other's collectives forever.
    distributed.check_same("config", json.loads(config.to_json_best_effort()),
                           ignore=("data.path",))
    validate_config(config)
    workdir = Workdir(workdir).check()
    # Process 0 alone holds the workdir and writes its files, the checkpoints included.
    primary = distributed.is_primary()
    with workdir.lock("train", take=primary):
        # Everything checkable is checked before anything is written: a run that fails here
        # leaves no config.json / fingerprint.json behind.
        dataset, splits, data, segments = prepare_data(config)
        fingerprint = _fingerprint(config, dataset)
        distributed.check_same("dataset", {"data_content": fingerprint["data_content"]})
        _check_fingerprint(workdir, fingerprint)
        if workdir.predictions.exists() and workdir.fingerprint.exists() and (
                _same_run(_read_json(workdir.fingerprint), fingerprint)):
            # A finished run: its saved predictions are all the report needs, no checkpoint
            # restore (so they serve whatever the layout of its checkpoints).
            logging.info("%s is finished; re-reporting from %s", workdir, workdir.predictions)
            results = None
            if primary:
                results = _report(config, workdir, report.load_predictions(workdir.predictions),
                                  dataset)
            _wait_for_report(started)
            return results
        return _train_and_report(config, workdir, fingerprint, dataset, splits, data, segments,
                                 on_chunk=on_chunk, primary=primary, started=started)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _train_and_report(config, workdir: Workdir, fingerprint: dict, dataset, splits, data,
                      segments, *, on_chunk: OnChunk | None, primary: bool,
                      started: float) -> dict | None:
    members = sweep_members(config)
    logging.info("%d members, %d training / %d validation rows per trial, %d unseen classes "
                 "on average", len(members), splits.train_idx.shape[1], splits.val_idx.shape[1],
                 int((~splits.seen_mask).sum(1).mean()))
    eval_epochs = Cadence.from_config(config).eval_epochs
    tensorboard = TensorBoardLog(workdir.tensorboard, members, eval_epochs,
                                 splits.train_idx.shape[1] // int(config.batch_size))
    if primary and not workdir.has_checkpoints():
        tensorboard.clear()  # training starts at epoch 0: no earlier run's events stay

    def write_metrics(history, epochs_done):
        if primary:
            _write_metrics_jsonl(workdir.metrics, members, history, eval_epochs, epochs_done)
            tensorboard.write(history, epochs_done)
        return on_chunk(history, epochs_done) if on_chunk is not None else None

    devices = None
    if int(config.num_devices):
        devices = jax.devices()[:int(config.num_devices)]
    written = [workdir.config, workdir.fingerprint]
    fresh = not any(p.exists() for p in written)
    if primary:
        write_json_atomic(written[0], json.loads(config.to_json_best_effort()))
        write_json_atomic(written[1], fingerprint)
    try:
        result = run_sweep(config, data, members, class_names=dataset.class_names,
                           devices=devices, checkpoint_dir=workdir.checkpoints, segments=segments,
                           on_chunk=write_metrics, profile_dir=workdir.profile)
    except TrainingDiverged as e:
        # Its checkpoints hold a config that diverges again where it did: without them (and
        # the fingerprint that claims them) the same command with a smaller learning rate
        # starts afresh here. A fresh run leaves the workdir as it found it.
        earlier = workdir.has_checkpoints()
        if primary:
            shutil.rmtree(workdir.checkpoints, ignore_errors=True)
            for p in [workdir.fingerprint] + (written + [workdir.metrics] if fresh else []):
                p.unlink(missing_ok=True)
        if not earlier:
            raise
        raise TrainingDiverged(f"{e} Its earlier checkpoints ({workdir.checkpoints}) were "
                               "removed as well, so that run starts afresh.") from None
    except BaseException:
        # A run that failed before its first checkpoint leaves nothing that claims otherwise.
        if primary and fresh and not workdir.has_checkpoints():
            for p in written:
                p.unlink(missing_ok=True)
        raise
    # A resumed, finished sweep runs no chunk: metrics.jsonl is still rewritten from the
    # checkpoint's history, and any epoch TensorBoard lacks is written.
    if primary:
        _write_metrics_jsonl(workdir.metrics, members, result.history, eval_epochs,
                             result.epochs_done)
        tensorboard.write(result.history, result.epochs_done)
    if not result.finished:
        return None
    if not primary:
        _wait_for_report(started)
        return None

    results = _report(config, workdir, result, dataset)
    _wait_for_report(started)
    return results


def _wait_for_report(started: float) -> None:
    """Under --distributed, keeps every process until process 0 has written the report: one
    that finished long before would fail at JAX's shutdown barrier (bounded by its own timeout),
    taking the others down with it."""
    distributed.barrier("train: reported", distributed.patient_timeout(started))


def _report(config, workdir: Workdir, result, dataset) -> dict:
    # The dataset gives the report the embeddings its distance detectors measure.
    return report.write_report(workdir, result, threshold=config.threshold, dataset=dataset,
                               head=config.model.head, **config.report)


def _holdout(data_config) -> int | list[str]:
    """config.data.holdout_classes: a whole number is a count of random classes per trial,
    anything else comma-separated class names ("7," names the one class "7")."""
    value = str(data_config.holdout_classes).strip()
    if value.isdigit():
        return int(value)
    return [v.strip() for v in value.split(",") if v.strip()]
