"""A user's mistakes end in one clear message (exit status 2, no traceback) and write nothing.

The table below holds the bad inputs, each run through `cli.main` in-process (or the Python API)
and checked for the exit status (2, or 1 for a damaged file the project wrote; or the exception
type), the message's key words and an untouched workdir; a few run as real subprocesses to see
the exit status and stderr a shell sees, and real runs are stopped by SIGINT and SIGTERM. Then
the cases that once gave silently wrong results, the workdir lock, a full disk, results before
figures and resume after changed data.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from embaug_jax import augment, cli, configlib
from embaug_jax.dataset import load_embeddings, save_embeddings
from embaug_jax.report import load_predictions
from embaug_jax.train.splits import make_splits
from embaug_jax.train.synthetic import make_synthetic
from embaug_jax.util import DamagedOutput, UserError, atomic_path, workdir_lock
from embaug_jax.workdir import Workdir

REPO = Path(__file__).resolve().parent.parent
DEFAULT = str(REPO / "configs" / "default.py")
TABLE = str(REPO / "configs" / "extract" / "table.py")
DEMO = str(REPO / "configs" / "demo.py")
# Small enough that a run that does train finishes in seconds.
TINY = ["--config.num_epochs=4", "--config.eval_every=4", "--config.chunk_epochs=4",
        "--config.checkpoint_every=4", "--config.data.trials=1"]


# ---------------------------------------------------------------------------------------------
# Inputs the cases build in tmp_path.


def dataset_dir(tmp: Path, name: str = "data", *, n: int = 160, seed: int = 0,
                classes: int = 4, segments=None) -> Path:
    ds = make_synthetic(seed, n, 8, classes, class_sep=2.0)
    save_embeddings(tmp / name, ds.embeddings, ds.labels, ds.class_names, segments=segments)
    return tmp / name


def table_csv(tmp: Path, rows: list[dict] | None = None, name: str = "items.csv") -> Path:
    rows = rows if rows is not None else [
        {"sku": f"s{i}", "title": f"red shirt {i}", "description": f"soft cotton {i}",
         "category": f"c{i % 2}"} for i in range(6)]
    path = tmp / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def train_argv(tmp: Path, *extra: str, config: str = DEFAULT + ":smoke") -> list[str]:
    return ["embaug", "train", f"--config={config}", f"--workdir={tmp / 'w'}", *TINY, *extra]


def file_train(tmp: Path, *extra: str, data: Path | None = None) -> list[str]:
    data = data if data is not None else dataset_dir(tmp)
    return train_argv(tmp, f"--config.data.path={data}", *extra)


def extract_argv(tmp: Path, *extra: str, csv: Path | None = None,
                 columns: str = "title,description") -> list[str]:
    csv = csv if csv is not None else table_csv(tmp)
    return ["embaug", "extract", f"--config={TABLE}", f"--workdir={tmp / 'w'}",
            f"--config.source.path={csv}", f"--config.source.text_columns={columns}",
            "--config.source.label_column=category", "--config.source.id_column=sku",
            "--config.progress=False", *extra]


def corrupt(tmp: Path, file: str, data: bytes | None = None, *, keep: int | None = None) -> Path:
    path = dataset_dir(tmp)
    target = path / file
    raw = target.read_bytes()
    target.write_bytes(data if data is not None else raw[:keep])
    return path


def npz(tmp: Path, **arrays) -> Path:
    path = tmp / "plain.npz"
    np.savez(path, **arrays)
    return path


def one_class(tmp: Path) -> Path:
    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    save_embeddings(tmp / "one", x, np.zeros(20, int), ["only"])
    return tmp / "one"


def meta_edit(tmp: Path, **changes) -> Path:
    path = dataset_dir(tmp)
    meta = json.loads((path / "meta.json").read_text())
    meta.update(changes)
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def truncated_npz(tmp: Path) -> Path:
    ds = make_synthetic(0, 40, 4, 3)
    path = tmp / "d.npz"
    save_embeddings(path, ds.embeddings, ds.labels, ds.class_names)
    path.write_bytes(path.read_bytes()[:300])
    return path


def pickle_checkpoint(path: Path) -> Path:
    """A torch file whose pickle holds an object that is not a tensor (a function call)."""
    import torch

    torch.save({"weight": torch.zeros(2), "obj": _Evil()}, path)
    return path


class _Evil:
    """Stands for arbitrary pickled code: weights_only=True refuses to build it."""

    def __reduce__(self):
        return (print, ("this would have run",))


def bert_folder_with_pickle(tmp: Path) -> Path:
    from embaug_jax.embed.extraction import resolve_model_path

    minilm = Path(resolve_model_path("builtin:minilm"))
    folder = tmp / "bert"
    folder.mkdir()
    for f in minilm.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and not f.name.endswith(".bin"):
            (folder / f.name).write_bytes(f.read_bytes())
    pickle_checkpoint(folder / "pytorch_model.bin")
    return folder


def users_folder(tmp: Path) -> Path:
    """A folder of the user's own, which no command may delete."""
    folder = tmp / "papers"
    folder.mkdir()
    (folder / "paper.tex").write_text("\\documentclass{article}")
    return folder


def linked_lock(tmp: Path) -> Path:
    """A workdir whose lock file is a symbolic link to a file of the user's."""
    (tmp / "notes.txt").write_text("precious")
    (tmp / "w").mkdir()
    (tmp / "w" / ".embaug.lock").symlink_to(tmp / "notes.txt")
    return tmp / "w"


def _lite0() -> str:
    from embaug_jax.embed.extraction import resolve_model_path

    return str(resolve_model_path("builtin:lite0"))


def make_file(tmp: Path, name: str = "afile") -> Path:
    (tmp / name).write_text("not a folder")
    return tmp / name


def fifo(path: Path) -> Path:
    """A named pipe: opening it to read waits for a writer that never comes."""
    os.mkfifo(path)
    return path


def link_loop(path: Path) -> Path:
    path.symlink_to(path.name)  # a relative link to itself
    return path


def pickled(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"embeddings": [[0.0, 1.0]], "labels": [0]}))
    return path


def fifo_in_dataset(tmp: Path, name: str) -> Path:
    path = dataset_dir(tmp)
    (path / name).unlink()
    fifo(path / name)
    return path


def jsonl_table(tmp: Path, labels: list, name: str = "items.jsonl") -> Path:
    path = tmp / name
    path.write_text("".join(json.dumps({"sku": f"s{i}", "title": f"red shirt {i}",
                                        "description": f"soft cotton {i}", "category": label})
                            + "\n" for i, label in enumerate(labels)))
    return path


def utf16_table(tmp: Path, encoding: str = "utf-16") -> Path:
    path = table_csv(tmp)
    path.write_bytes(path.read_text().encode(encoding))
    return path


def config_file(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


def damaged_predictions(tmp: Path, data: bytes | None = None) -> list[str]:
    """A finished run whose predictions.npz (the re-report's input) is cut short or replaced."""
    data_path = dataset_dir(tmp)
    assert cli.main(file_train(tmp, data=data_path)) == 0
    predictions = Workdir(tmp / "w").predictions
    predictions.write_bytes(data if data is not None else predictions.read_bytes()[:400])
    return file_train(tmp, data=data_path)


# Training runs and their workdirs, for the training side's rows.


def one_class_in_training(tmp: Path) -> list[str]:
    """Data of two classes, 98% class 'a', whose one trial's split trains on class 'a' alone:
    a model of it scored 98% overall before it was refused."""
    n, train_fraction = 400, 0.1
    train = make_splits(np.zeros(n, int), 2, trials=1, train_fraction=train_fraction,
                        seed=0).train_idx[0]
    labels = np.zeros(n, int)
    labels[np.setdiff1d(np.arange(n), train)[:8]] = 1
    x = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32) + labels[:, None]
    save_embeddings(tmp / "skewed", x, labels, ["a", "b"])
    return file_train(tmp, f"--config.data.train_fraction={train_fraction}",
                      "--config.data.holdout_classes=0", data=tmp / "skewed")


def finished_run(tmp: Path, change: Callable[[Workdir], None], *, other_data: bool = False,
                 extra: tuple[str, ...] = ()) -> list[str]:
    """A finished training run, then `change` to its workdir; the argv of a rerun (on other
    data of the same shape if `other_data`)."""
    assert cli.main(file_train(tmp, *extra, data=dataset_dir(tmp))) == 0
    change(Workdir(tmp / "w"))
    return file_train(tmp, *extra, data=dataset_dir(tmp, "other", seed=1) if other_data
                      else tmp / "data")


def truncate_checkpoint_file(work: Workdir, epoch: int = 8) -> None:
    """Cuts one data file of the checkpoint of `epoch` short, and drops the predictions, so the
    rerun restores that checkpoint."""
    data = sorted((work.checkpoints / str(epoch) / "default" / "d").iterdir())[0]
    data.write_bytes(data.read_bytes()[:10])
    work.predictions.unlink()


def damaged_manifest(tmp: Path) -> list[str]:
    """An unfinished extraction (one shard done) whose manifest.json is cut; the argv that
    resumes it."""
    shards = Workdir(tmp / "w").shards
    shards.mkdir(parents=True)
    np.save(shards / "shard_00000.npy", np.zeros((2, 384), np.float32))
    (shards / "manifest.json").write_text('{"fingerprint": "3f2a')
    Workdir(tmp / "w").lock_file.touch()  # as the interrupted run left it
    return extract_argv(tmp, "--config.text_model.path=builtin:minilm",
                        "--config.text_model.max_length=16")


def bert_folder_with(tmp: Path, name: str, data: bytes) -> Path:
    """The shipped MiniLM folder, copied, with its file `name` replaced by `data`."""
    from embaug_jax.embed.extraction import resolve_model_path

    folder = tmp / "bert"
    folder.mkdir()
    for f in Path(resolve_model_path("builtin:minilm")).iterdir():
        if f.is_file():
            (folder / f.name).write_bytes(data if f.name == name else f.read_bytes())
    return folder


def image_table(tmp: Path) -> Path:
    """A table of four items with a text and an image column, the images on disk."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp / f"{i}.png")
        rows.append({"sku": f"s{i}", "title": f"red shirt {i}", "description": f"cotton {i}",
                     "photo": str(tmp / f"{i}.png"), "category": f"c{i % 2}"})
    return table_csv(tmp, rows)


# ---------------------------------------------------------------------------------------------
# The table: (id, argv builder, key words of the message, exit status, words it must not say).


@dataclasses.dataclass
class Case:
    id: str
    argv: Callable[[Path], list[str]]
    words: tuple[str, ...]
    status: int = 2  # 1: not the user's input (a file the project wrote is damaged)
    absent: tuple[str, ...] = ()


CLI_CASES = [
    # config files, variants and keys
    Case("unknown key", lambda t: train_argv(t, "--config.nonexistent=1"),
         ("no key 'nonexistent'", "did you mean")),
    Case("misspelt nested key", lambda t: train_argv(t, "--config.optim.lr=0.1"),
         ("no key 'optim.lr'", "--config.optim.lr_min", "--config.optim.lr_max")),
    Case("missing config file", lambda t: ["embaug", "train", f"--config={t}/nope.py",
                                           f"--workdir={t / 'w'}"],
         ("config file", "nope.py", "does not exist")),
    Case("config is a folder", lambda t: ["embaug", "train", f"--config={t}",
                                          f"--workdir={t / 'w'}"], ("is a directory",)),
    Case("config is a named pipe", lambda t: [
        "embaug", "train", f"--config={fifo(t / 'c.py')}", f"--workdir={t / 'w'}"],
        ("c.py", "named pipe (FIFO)")),
    Case("config with a syntax error", lambda t: [
        "embaug", "train", f"--config={config_file(t, 'syn.py', 'def get_config(:')}",
        f"--workdir={t / 'w'}"], ("config file", "syn.py", "line 1", "invalid syntax")),
    Case("config that raises", lambda t: ["embaug", "train", "--config=" + config_file(
        t, "boom.py", "def get_config(arg=None):\n    raise RuntimeError('boom')\n") + ":x",
        f"--workdir={t / 'w'}"], ("boom.py", "get_config('x') raised RuntimeError: boom",
                                  "line 2", "Fix the config file")),
    Case("config that fails on import", lambda t: [
        "embaug", "train", f"--config={config_file(t, 'imp.py', 'import no_such_module')}",
        f"--workdir={t / 'w'}"], ("imp.py", "ModuleNotFoundError", "line 1")),
    Case("get_config returns a dict", lambda t: ["embaug", "train", "--config=" + config_file(
        t, "plain.py", "def get_config(arg=None):\n    return {'seed': 0}\n"),
        f"--workdir={t / 'w'}"], ("plain.py", "returned a dict", "ml_collections.ConfigDict")),
    Case("unknown variant", lambda t: train_argv(t, config=DEFAULT + ":smok"),
         ("unknown config variant 'smok'", "smoke")),
    Case("bad variant value", lambda t: train_argv(t, config=DEFAULT + ":trials=two"),
         ("trials='two'", "not a valid int")),
    Case("override of the wrong type", lambda t: train_argv(t, "--config.batch_size=big"),
         ("batch_size", "big")),
    Case("no --config", lambda t: ["embaug", "train", f"--workdir={t / 'w'}"],
         ("--config is required",)),
    Case("no --workdir", lambda t: ["embaug", "train", f"--config={DEFAULT}:smoke"],
         ("--workdir is required",)),
    # config values
    Case("unknown method", lambda t: train_argv(t, "--config.sweep.methods=('mixup',)"),
         ("unknown method 'mixup'", "e_mixup")),
    Case("alpha zero", lambda t: train_argv(t, "--config.sweep.alphas=(0.0,)"),
         ("alpha=0.0", "> 0")),
    Case("odd batch", lambda t: train_argv(t, "--config.batch_size=15"), ("batch_size=15", "even")),
    Case("chunk not a multiple of the evaluations", lambda t: train_argv(
        t, "--config.chunk_epochs=6"), ("chunk_epochs=6", "multiple of", "eval_every=4")),
    Case("softness out of range", lambda t: train_argv(t, "--config.sweep.softness=(1.5,)"),
         ("softness=1.5", "[0, 1)")),
    Case("too many devices", lambda t: train_argv(t, "--config.num_devices=99"),
         ("num_devices=99", "device(s)")),
    Case("synthetic source with a path", lambda t: train_argv(
        t, "--config.data.source=synthetic", f"--config.data.path={dataset_dir(t)}"),
        ("data.path", "synthetic", "data.source='file'")),
    Case("unknown holdout class", lambda t: file_train(t, "--config.data.holdout_classes=zebra"),
         ("holdout class 'zebra'", "class_000")),
    # the data
    Case("file source without a path", lambda t: train_argv(t, "--config.data.source=file"),
         ("data.path is not set",)),
    Case("dataset missing", lambda t: file_train(t, data=t / "nowhere"),
         ("nowhere", "no such file or directory")),
    Case("dataset lacks meta.json", lambda t: file_train(t, data=_unlinked(t, "meta.json")),
         ("missing meta.json",)),
    Case("truncated embeddings.npy", lambda t: file_train(
        t, data=corrupt(t, "embeddings.npy", keep=200)), ("embeddings.npy", "corrupt")),
    Case("empty labels.npy", lambda t: file_train(t, data=corrupt(t, "labels.npy", b"")),
         ("labels.npy", "is empty (0 bytes)")),
    Case("garbage meta.json", lambda t: file_train(t, data=corrupt(t, "meta.json", b"{oops")),
         ("meta.json", "corrupt")),
    Case("class_names as one string in meta.json", lambda t: file_train(
        t, data=meta_edit(t, class_names="abcd")), ("class_names", "list of names")),
    Case("truncated .npz", lambda t: file_train(t, data=truncated_npz(t)),
         ("d.npz", "corrupt")),
    Case("dataset is a named pipe", lambda t: file_train(t, data=fifo(t / "p.npz")),
         ("p.npz", "named pipe (FIFO)", "wait for a writer")),
    Case("dataset folder holds a named pipe", lambda t: file_train(
        t, data=fifo_in_dataset(t, "meta.json")), ("meta.json", "named pipe (FIFO)")),
    Case("dataset is a symbolic link loop", lambda t: file_train(t, data=link_loop(t / "l.npz")),
         ("l.npz", "symbolic link loop"), absent=("no such file",)),
    Case("dataset is a pickle named .npz", lambda t: file_train(t, data=pickled(t / "x.npz")),
         ("x.npz", "pickle", "not a dataset embaug_jax reads"), absent=("allow_pickle",)),
    Case("meta.json info not an object", lambda t: file_train(
        t, data=meta_edit(t, info=["a", "b"])), ("`info`", "JSON object", "an array")),
    Case(".npz without class_names", lambda t: file_train(t, data=npz(
        t, embeddings=np.ones((8, 2), np.float32), labels=np.zeros(8, int))),
        ("missing arrays", "class_names")),
    Case("one class", lambda t: file_train(t, data=one_class(t)), ("1 class(es)", "at least 2")),
    Case("batch larger than the training split", lambda t: file_train(
        t, "--config.batch_size=64", "--config.data.train_fraction=0.1"),
        ("batch_size=64", "exceeds the 16 training rows")),
    Case("segments asked for but absent", lambda t: file_train(
        t, "--config.augment.use_segments=True"), ("use_segments=True", "no segments")),
    # training: what the engine could not do, would count twice or would get wrong silently
    Case("seed above 2^31", lambda t: train_argv(t, "--config.seed=2147483648"),
         ("config.seed=2147483648", "2^31 - 1")),
    Case("sweep seed that wraps onto 0", lambda t: train_argv(
        t, "--config.sweep.seeds=(4294967296,)"), ("config.sweep.seeds", "4294967296", "2^31")),
    Case("negative split_seed", lambda t: train_argv(t, "--config.data.split_seed=-1"),
         ("config.data.split_seed=-1", "[0, 2^31 - 1")),
    Case("device_data_bytes too small", lambda t: file_train(
        t, "--config.device_data_bytes=100"), ("config.device_data_bytes=100", "raise it")),
    Case("negative negative_mass", lambda t: train_argv(
        t, "--config.augment.negative_mass=-1.0"),
        ("config.augment.negative_mass", "finite number >= 0", "-1.0")),
    Case("unknown label_weight", lambda t: train_argv(
        t, "--config.augment.label_weight=sometimes"),
        ("config.augment.label_weight", "unknown label_weight 'sometimes'", "'realized'")),
    Case("an alpha listed twice", lambda t: train_argv(
        t, "--config.sweep.methods=('e_mixup',)", "--config.sweep.alphas=(0.2,0.2)"),
        ("config.sweep.alphas lists 0.2 more than once", "independent replicates")),
    Case("a seed listed twice", lambda t: train_argv(t, "--config.sweep.seeds=(0,0)"),
         ("config.sweep.seeds lists 0 more than once",)),
    Case("one class in a trial's training rows", one_class_in_training,
         ("trial 0", "only class 'a'", "at least two classes", "'a' 392, 'b' 8",
          "config.data.train_fraction")),
    Case("training diverges", lambda t: file_train(
        t, "--config.optim.lr_max=1e6", "--config.optim.lr_min=1e5"),
        ("training diverged", "not finite after epoch 4", "config.optim.lr_max=1000000.0",
         "config.optim.lr_min=100000.0", "no checkpoint of the diverged state")),
    Case("training diverges, learning rates swept", lambda t: file_train(
        t, "--config.sweep.lr_max=(1e6,2e6)", "--config.sweep.lr_min=(1e5,)"),
        ("training diverged", "lr_max=2e+06", "config.sweep.lr_max=(1000000.0,2000000.0)",
         "--config.sweep.lr_max=(100000,200000)", "--config.sweep.lr_min=(10000,)")),
    Case("fingerprint.json deleted, then other data", lambda t: finished_run(
        t, lambda w: w.fingerprint.unlink(), other_data=True),
        ("no fingerprint.json", "checkpoints and predictions.npz", "not reused",
         f"Delete {os.sep}", f"w{os.sep}checkpoints and {os.sep}")),
    Case("changed data after a finished run", lambda t: finished_run(
        t, lambda w: None, other_data=True),
        ("trained on other data", f"w{os.sep}checkpoints and {os.sep}",
         f"w{os.sep}predictions.npz to start over")),
    Case("workdir is a file", lambda t: train_argv(t)[:3] + [f"--workdir={make_file(t)}"] + TINY,
         ("afile", "is a file")),
    # extract
    Case("0-byte CSV", lambda t: extract_argv(t, csv=_write(t / "e.csv", b"")),
         ("e.csv", "is empty (0 bytes)")),
    Case("header-only CSV", lambda t: extract_argv(
        t, csv=_write(t / "h.csv", b"sku,title,description,category\n")),
        ("h.csv", "header", "no data rows")),
    Case("all-empty text column", lambda t: extract_argv(t, csv=table_csv(t, [
        {"sku": i, "title": "", "description": "x", "category": "a"} for i in range(4)])),
        ("text column 'title'", "empty in all 4 rows")),
    Case("unknown column", lambda t: extract_argv(t, columns="title,colour"),
         ("no column(s) ['colour']", "its columns are")),
    Case("table missing", lambda t: extract_argv(t, csv=t / "gone.csv"),
         ("gone.csv", "does not exist")),
    Case("table is a named pipe", lambda t: extract_argv(t, csv=fifo(t / "f.csv")),
         ("f.csv", "named pipe (FIFO)", "wait for a writer"), absent=("does not exist",)),
    Case("table is a directory named .csv", lambda t: extract_argv(t, csv=_mkdir(t / "d.csv")),
         ("d.csv", "is a directory"), absent=("does not exist",)),
    Case("table is a symbolic link loop", lambda t: extract_argv(t, csv=link_loop(t / "l.csv")),
         ("l.csv", "symbolic link loop"), absent=("does not exist",)),
    Case("UTF-16 table", lambda t: extract_argv(t, csv=utf16_table(t)),
         ("UTF-16", "--config.source.encoding=utf-16"), absent=("binary",)),
    Case("UTF-16 table without a byte-order mark", lambda t: extract_argv(
        t, csv=utf16_table(t, "utf-16-le")), ("--config.source.encoding=utf-16-le",),
        absent=("binary",)),
    Case("unknown encoding", lambda t: extract_argv(t, "--config.source.encoding=klingon"),
         ("config.source.encoding='klingon'", "utf-8", "utf-16", "standard-encodings")),
    Case("format xlsx", lambda t: extract_argv(t, "--config.source.format=xlsx"),
         ("config.source.format='xlsx'", "csv, tsv, jsonl, parquet"),
         absent=("Cannot tell the format",)),
    Case("JSONL labels that are lists and objects", lambda t: extract_argv(
        t, csv=jsonl_table(t, ["a", ["a", "b"], "b", {"name": "c"}])),
        ("label column 'category'", "list or an object", "2 rows", "data rows 1, 3")),
    Case("JSONL labels of mixed types", lambda t: extract_argv(
        t, csv=jsonl_table(t, ["3", 3, "4", 4.5, "5"])),
        ("mixes value types", "strings in rows 0, 2, 4", "integers in rows 1",
         "decimal numbers in rows 3")),
    Case("not utf-8", lambda t: extract_argv(t, csv=_write(
        t / "l1.csv", "sku,title,description,category\n1,caf\xe9,x,a\n".encode("latin-1"))),
        ("line 2", "not valid utf-8", "encoding")),
    Case("unknown source kind", lambda t: extract_argv(t, "--config.source.kind=sql"),
         ("source.kind='sql'", "table")),
    Case("no text model", lambda t: extract_argv(t), ("text_model.path", "builtin:minilm")),
    Case("unknown built-in model", lambda t: extract_argv(
        t, "--config.text_model.path=builtin:gpt"), ("builtin:gpt", "builtin:minilm")),
    Case("unknown field", lambda t: extract_argv(t, "--config.fields=colour"),
         ("config.fields names ['colour']",)),
    Case("shard size 0", lambda t: extract_argv(t, "--config.shard_size=0"),
         ("shard_size must be >= 1",)),
    Case("missing image weights", lambda t: extract_argv(
        t, "--config.source.image_columns=photo", f"--config.image_model.path={t}/w.pth",
        "--config.fields=photo", csv=table_csv(t, [
            {"sku": i, "title": "x", "description": "y", "photo": f"{i}.jpg", "category": "a"}
            for i in range(3)])), ("w.pth", "image_model.path")),
    Case("extract output is a file", lambda t: extract_argv(
        t, f"--config.output={make_file(t, 'out')}"), ("out", "exists and is a file")),
    Case("refused pytorch_model.bin", lambda t: extract_argv(
        t, f"--config.text_model.path={bert_folder_with_pickle(t)}"),
        ("pytorch_model.bin", "refused", "safetensors")),
    Case("broken config.json in the BERT folder", lambda t: extract_argv(
        t, f"--config.text_model.path={bert_folder_with(t, 'config.json', b'{oops')}"),
        ("config.text_model", f"bert{os.sep}config.json is not a valid JSON file",
         "line 1, column 2")),
    Case("builtin:lite0 with the default variant", lambda t: extract_argv(
        t, "--config.source.image_columns=photo", "--config.fields=photo",
        "--config.image_model.path=builtin:lite0", csv=image_table(t)),
        ("config.image_model.variant='b4'", "EfficientNet-lite0",
         "--config.image_model.variant=lite0"), absent=("--variant", "missing from")),
    # convert
    Case("convert: no checkpoint", lambda t: ["embaug", "convert", "efficientnet",
                                              f"{t}/none.pth", f"{t}/w/o.safetensors"],
         ("no checkpoint", "none.pth")),
    Case("convert: not HDF5", lambda t: ["embaug", "convert", "efficientnet",
                                         str(_write(t / "m.h5", b"nope")), f"{t}/w/o.st"],
         ("m.h5", "neither a .keras archive nor an HDF5 file")),
    Case("convert: pickled objects", lambda t: [
        "embaug", "convert", "efficientnet", str(pickle_checkpoint(t / "evil.pth")),
        f"{t}/w/o.st"], ("evil.pth", "refused")),
    Case("convert: truncated safetensors", lambda t: [
        "embaug", "convert", "efficientnet", str(_write(t / "b.safetensors", b"\x10\x00")),
        f"{t}/w/o.st", "--from=timm"], ("b.safetensors",)),
    Case("convert: unknown origin", lambda t: ["embaug", "convert", "efficientnet", "a", "b",
                                               "--from=caffe"], ()),
    # never replace what the project did not write
    Case("convert onto a user's folder", lambda t: [
        "embaug", "convert", "efficientnet", _lite0(), str(users_folder(t))],
        ("papers", "did not write", "left untouched")),
    Case("convert onto a user's file", lambda t: [
        "embaug", "convert", "efficientnet", _lite0(), str(_write(t / "mine.safetensors",
                                                                  b"not ours"))],
        ("mine.safetensors", "did not write")),
    Case("extract overwrite=True onto a user's folder", lambda t: extract_argv(
        t, f"--config.output={users_folder(t)}", "--config.overwrite=True"),
        ("papers", "overwrite=True would remove", "did not write")),
    Case("lock file that is a symbolic link", lambda t: train_argv(t)[:3] + [
        f"--workdir={linked_lock(t)}"] + TINY, (".embaug.lock", "symbolic link")),
    Case("workdir is the filesystem root", lambda t: train_argv(t)[:3] + ["--workdir=/"] + TINY,
         ("--workdir /", "filesystem root", "subfolder")),
    # damaged outputs of an earlier run: not the user's input, exit status 1
    Case("truncated predictions.npz", lambda t: damaged_predictions(t),
         ("predictions.npz", "corrupt or truncated", "rerun the `embaug train` command"),
         status=1),
    Case("predictions.npz replaced by a pickle", lambda t: damaged_predictions(
        t, pickle.dumps([1, 2])), ("predictions.npz", "pickle", "rerun the `embaug train`"),
        status=1, absent=("allow_pickle",)),
    Case("damaged fingerprint.json", lambda t: finished_run(
        t, lambda w: w.fingerprint.write_text('{"data": ')),
        ("fingerprint.json is damaged", "Delete", "predictions.npz"), status=1),
    Case("truncated checkpoint file", lambda t: finished_run(
        t, truncate_checkpoint_file, extra=("--config.num_epochs=8",)),
        (f"{os.sep}checkpoints{os.sep}8 (epoch 8) cannot be restored",
         "changed since it was written", "to resume from epoch 4"), status=1),
    Case("damaged shards/manifest.json", damaged_manifest,
         ("manifest.json is damaged", "--config.overwrite=True"), status=1),
    # demo
    Case("demo: unknown key", lambda t: ["embaug", "demo", f"--config={DEMO}:smoke",
                                         f"--workdir={t / 'w'}", "--config.train.nope=1"],
         ("no key 'train.nope'",)),
    Case("demo: workdir is a file", lambda t: ["embaug", "demo", f"--config={DEMO}:smoke",
                                               f"--workdir={make_file(t)}"], ("is a file",)),
    Case("demo: explicit train data", lambda t: [
        "embaug", "demo", f"--config={DEMO}:smoke", f"--workdir={t / 'w'}",
        f"--config.train.data.path={t}"], ("train.data.path", "embaug train")),
    Case("demo: bad train config", lambda t: [
        "embaug", "demo", f"--config={DEMO}:smoke", f"--workdir={t / 'w'}",
        "--config.train.sweep.alphas=(-1.0,)"], ("alpha=-1.0",)),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _unlinked(tmp: Path, name: str) -> Path:
    path = dataset_dir(tmp)
    (path / name).unlink()
    return path


def _snapshot(tmp: Path) -> dict[str, int]:
    return {str(p.relative_to(tmp)): p.stat().st_size for p in tmp.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_a_bad_input_is_one_message_and_its_exit_status(case, tmp_path, capsys, fast_compile):
    argv = case.argv(tmp_path)
    before = _snapshot(tmp_path)
    had_workdir = (tmp_path / "w").exists()
    capsys.readouterr()
    assert cli.main(argv) == case.status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("embaug ")]) == 1, err
    for word in case.words:
        assert word in err, (word, err)
    for word in case.absent:
        assert word not in err, (word, err)
    # Nothing half-written: no file appeared or changed, and the workdir was not created.
    assert _snapshot(tmp_path) == before
    assert had_workdir or not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


def test_the_table_holds_at_least_40_distinct_bad_inputs():
    assert len({c.id for c in CLI_CASES}) == len(CLI_CASES) >= 40


# Python API: (id, call, exception type, key words).
API_CASES = [
    ("class_names as one string", lambda t: save_embeddings(
        t / "d", np.ones((3, 2)), [0, 1, 2], "abc"), UserError, ("class_names", "one str")),
    ("ids holding None", lambda t: save_embeddings(
        t / "d", np.ones((3, 2)), [0, 1, 0], ["a", "b"], ids=["x", None, "z"]), UserError,
     ("`ids` is None in 1 row(s)", "ids=None")),
    ("plain .npz class_names as one string", lambda t: load_embeddings(npz(
        t, embeddings=np.ones((3, 2), np.float32), labels=np.zeros(3, int),
        class_names=np.asarray("abc"))), UserError, ("class_names", "1-D")),
    ("integer PRNG key", lambda t: augment.e_mixup(
        0, np.ones((4, 3), np.float32), np.array([0, 1, 0, 1]), 0.2, num_classes=2), TypeError,
     ("plain integer 0", "jax.random.key(0)")),
    ("integer PRNG key to augment_batch", lambda t: augment.augment_batch(
        7, np.ones((4, 3), np.float32), np.array([0, 1, 0, 1]),
        augment.method_params("e_mixup", 0.2), num_classes=2), TypeError,
     ("jax.random.key(7)",)),
    ("save_embeddings onto a user's folder", lambda t: save_embeddings(
        users_folder(t), np.ones((3, 2)), [0, 1, 0], ["a", "b"]), UserError,
     ("papers", "did not write")),
    ("save_embeddings onto a plain .npz", lambda t: save_embeddings(
        npz(t, x=np.ones(2)), np.ones((3, 2)), [0, 1, 0], ["a", "b"]), UserError,
     ("plain.npz", "did not write")),
    ("refused pytorch_model.bin (TextEmbedder)", lambda t: _text_embedder(
        bert_folder_with_pickle(t)), UserError, ("pytorch_model.bin", "refused")),
    # inputs that are not regular files, and numpy files never unpickled
    ("load_embeddings of a named pipe", lambda t: load_embeddings(fifo(t / "p.npz")), UserError,
     ("p.npz", "named pipe (FIFO)")),
    ("load_embeddings of a broken link", lambda t: load_embeddings(_link(t / "b.npz", "gone")),
     FileNotFoundError, ("b.npz", "no such file", "symbolic link to gone")),
    ("load_embeddings of a pickle", lambda t: load_embeddings(pickled(t / "x.npz")), UserError,
     ("x.npz", "Python pickle", "not a dataset embaug_jax reads")),
    ("load_embeddings of a .npy named .npz", lambda t: load_embeddings(_npy_as_npz(t)),
     UserError, ("a.npz", "one numpy array (.npy format)")),
    ("load_embeddings of an object array", lambda t: load_embeddings(npz(
        t, embeddings=np.array([{"x": 1}], dtype=object), labels=np.zeros(1, int),
        class_names=np.array(["a"]))), UserError, ("plain.npz", "Python objects")),
    ("load_embeddings of a zip of other files", lambda t: load_embeddings(
        pickle_checkpoint(t / "torch.npz")), UserError,
     ("torch.npz", "zip archive of other files", "pickle")),
    ("a pickle as a dataset's embeddings.npy", lambda t: load_embeddings(_replaced(
        t, "embeddings.npy", pickle.dumps([1.0]))), UserError, ("embeddings.npy", "pickle")),
    ("an object array as a dataset's labels.npy", lambda t: load_embeddings(_object_labels(t)),
     UserError, ("labels.npy", "Python objects")),
    ("load_predictions of garbage", lambda t: load_predictions(_write(
        t / "predictions.npz", b"hello " * 50)), DamagedOutput,
     ("predictions.npz", "not a .npz file", "rerun the `embaug train` command")),
    ("load_predictions without its arrays", lambda t: load_predictions(npz(t, x=np.ones(2))),
     DamagedOutput, ("plain.npz", "lacks part of a sweep's predictions", "members")),
    ("load_predictions of a named pipe", lambda t: load_predictions(fifo(t / "p.npz")),
     UserError, ("p.npz", "named pipe (FIFO)")),
    # config files
    ("get_config of a syntax error", lambda t: configlib.get_config(config_file(
        t, "syn.py", "x = 1\ndef get_config(arg=None)\n    return None\n")), UserError,
     ("syn.py", "line 2", "expected ':'")),
    ("get_config returning a dict", lambda t: configlib.get_config(config_file(
        t, "plain.py", "def get_config(arg=None):\n    return dict(seed=0)\n")), UserError,
     ("returned a dict",)),
    ("a variant for a get_config without one", lambda t: configlib.get_config(config_file(
        t, "bare.py", "import ml_collections\ndef get_config():\n"
        "    return ml_collections.ConfigDict()\n") + ":smoke"), UserError,
     ("takes no variant", ":smoke")),
    # tables
    ("UTF-32 table", lambda t: _load_table(utf16_table(t, "utf-32")), UserError,
     ("UTF-32", "--config.source.encoding=utf-32")),
    ("JSONL labels of booleans and strings", lambda t: _load_table(jsonl_table(
        t, [True, "yes", "no", False])), UserError,
     ("mixes value types", "booleans in rows 0, 3", "strings in rows 1, 2")),
    # the sweep engine
    ("the same member twice", lambda t: _sweep_of(lambda members: members[:1] * 2), UserError,
     ("members 0 and 1 of the sweep are the same", "trial 0, seed 0", "count twice")),
    ("a sweep seed that wraps onto 0", lambda t: make_splits(
        np.arange(8) % 2, 2, trials=1, train_fraction=0.5, seed=2**32), UserError,
     ("the split seed=4294967296", "2^31 - 1")),
]


def _link(path: Path, target: str) -> Path:
    path.symlink_to(target)
    return path


def _npy_as_npz(tmp: Path) -> Path:
    np.save(tmp / "a.npy", np.ones((3, 2), np.float32))
    return (tmp / "a.npy").rename(tmp / "a.npz")


def _replaced(tmp: Path, name: str, data: bytes) -> Path:
    path = dataset_dir(tmp)
    (path / name).write_bytes(data)
    return path


def _object_labels(tmp: Path) -> Path:
    path = dataset_dir(tmp)
    np.save(path / "labels.npy", np.array([{"label": 0}] * 160, dtype=object), allow_pickle=True)
    return path


def _load_table(path: Path):
    from embaug_jax.sources import load_table

    src = configlib.get_config(TABLE).source
    src.update(dict(path=str(path), text_columns="title", label_column="category",
                    id_column="sku"))
    return load_table(src)


def _sweep_of(change):
    """`run_sweep` of the smoke config's members as `change` makes them, on tiny data."""
    from embaug_jax.train.driver import run_sweep
    from embaug_jax.train.members import sweep_members
    from embaug_jax.train.program import TrainData

    config = configlib.get_config(DEFAULT + ":smoke")
    ds = make_synthetic(0, 64, 4, 3)
    splits = make_splits(ds.labels, 3, trials=1, train_fraction=0.5)
    data = TrainData(ds.embeddings, ds.labels, splits.train_idx, splits.val_idx,
                     splits.seen_mask)
    return run_sweep(config, data, change(sweep_members(config)), progress=False)


def _text_embedder(folder):
    from embaug_jax.embed.bert.embedder import TextEmbedder

    return TextEmbedder.from_pretrained(folder)


@pytest.mark.parametrize("name,call,exc,words", API_CASES, ids=[c[0] for c in API_CASES])
def test_python_api_errors(name, call, exc, words, tmp_path):
    with pytest.raises(exc) as info:
        call(tmp_path)
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "allow_pickle" not in message
    assert not (tmp_path / "d").exists()


def test_mistakes_exit_2_without_a_traceback_in_a_real_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    runs = {
        "train": [sys.executable, "-m", "embaug_jax", "train", f"--config={DEFAULT}:smoke",
                  f"--workdir={tmp_path / 'w'}", "--config.data.source=file"],
        "extract": [sys.executable, "-m", "embaug_jax", *extract_argv(tmp_path, csv=_write(
            tmp_path / "e.csv", b""))[1:]],
    }
    for name, argv in runs.items():
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 2, (name, proc.stderr)
        assert "Traceback" not in proc.stderr
        # JAX's backend probing ("Unable to initialize backend 'tpu'") is hidden.
        assert "initialize backend" not in proc.stderr and "libtpu" not in proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"embaug {name}: error: "), proc.stderr
    proc = subprocess.run(runs["train"] + ["--verbose"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    assert "data.path is not set" in proc.stderr


# ---------------------------------------------------------------------------------------------
# Stopped by a signal: one line, status 128 + the signal, and the same command resumes.


# `embaug` with SIGINT and SIGTERM as a terminal's command finds them, even where the tests run
# with them ignored (a script's background job), which the command would respect.
_DEFAULT_SIGNALS = ("import signal\n"
                    "for s in (signal.SIGINT, signal.SIGTERM):\n"
                    "    signal.signal(s, signal.SIG_DFL)\n")
_EMBAUG = _DEFAULT_SIGNALS + ("import sys\nfrom embaug_jax.cli import main\n"
                              "sys.exit(main(['embaug', *sys.argv[1:]]))\n")


def _has_checkpoint(workdir: Workdir) -> bool:
    """Whether orbax has finished a checkpoint in `workdir` (its name is the epoch)."""
    folder = workdir.checkpoints
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_train_in_one_line_and_the_same_command_resumes(signum, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    work = Workdir(tmp_path / "w")
    # The smoke config checkpoints every 8 epochs: 400 epochs leave time to interrupt it.
    argv = [sys.executable, "-c", _EMBAUG, "train", f"--config={DEFAULT}:smoke",
            f"--workdir={work}", "--config.num_epochs=400"]
    with open(tmp_path / "stderr", "w") as err:  # a file: a full pipe would stall the run
        run = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 600
        while not _has_checkpoint(work):
            assert run.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.05)
        run.send_signal(signum)
        code = run.wait(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    stderr = (tmp_path / "stderr").read_text()
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    name = signal.Signals(signum).name
    assert code == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr[-3000:]
    assert lines[-1] == f"embaug train: interrupted by {name}; rerun the same command to resume."
    assert sum("interrupted" in line for line in lines) == 1
    # The lock went with the process; no temporary of an atomic write is left (orbax's own
    # temporary checkpoint folder, if the signal came during a save, goes when the run resumes).
    with workdir_lock(work, "train"):
        pass
    assert not [p for p in work.path.rglob("*") if p.name.endswith(".tmp")]
    last = max(int(p.name) for p in work.checkpoints.iterdir() if p.name.isdigit())
    assert last < 400 and not work.results_json.exists()

    rerun = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from {work.checkpoints} at epoch {last}" in rerun.stderr
    assert json.loads(work.results_json.read_text())["methods"]
    assert not [p for p in work.path.rglob("*") if "tmp" in p.name]


_SLOW_CLEAN_UP = _DEFAULT_SIGNALS + """
import time
from embaug_jax import interrupt

with interrupt.handling_signals("embaug test"):
    try:
        print("ready", flush=True)
        time.sleep(120)
    except interrupt.Interrupted:
        # A clean-up stuck outside Python (a long XLA call, say): the main thread takes no more
        # signals, so only the watcher thread can act on the second.
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])
        print("cleaning up", flush=True)
        time.sleep(120)
print("not reached")
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_ends_the_process_at_once(signum):
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CLEAN_UP], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signum)
        assert proc.stdout.readline() == "cleaning up\n"
        sent = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum and time.monotonic() - sent < 30
    assert out == "" and err == (f"embaug test: {signal.Signals(signum).name} again: stopped at "
                                 "once; rerun the same command to resume from its last "
                                 "checkpoint.\n")


_SIGNAL_IN_A_COLLECTION = _DEFAULT_SIGNALS + """
import gc
import sys
from embaug_jax import interrupt

def signal_now(phase, info):
    # A signal that Python handles inside a collection's callbacks, as JAX's runs each time.
    if phase == "start" and armed:
        signal.raise_signal(signal.SIG{name})
        for _ in range(1000):
            pass

for check in (True, False):
    armed = False
    try:
        with interrupt.handling_signals("embaug test"):
            gc.callbacks.insert(1, signal_now)
            armed = True
            gc.collect()
            armed = False
            gc.callbacks.remove(signal_now)
            print("collected", flush=True)
            if check:
                interrupt.check()
            print("not interrupted", flush=True)
    except interrupt.Interrupted as e:
        print("interrupted", signal.Signals(e.signum).name, flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_garbage_collection_is_held_not_lost(signum):
    # Python drops an exception raised in a gc callback ("Exception ignored in ..."): the
    # signal is held, and the next check, or the end of the block, raises it.
    name = signal.Signals(signum).name
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_IN_A_COLLECTION.replace(
        "{name}", name[3:])], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["collected", f"interrupted {name}",
                                        "collected", "not interrupted", f"interrupted {name}"]
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_signal_during_a_checkpoint_save_is_not_swallowed(tmp_path, monkeypatch):
    # orbax's wait for its checkpoint-finishing thread catches BaseException: a SIGINT that
    # came then was logged and dropped, and the run went on to its end.
    import orbax.checkpoint as ocp

    from embaug_jax import interrupt
    from embaug_jax.train import checkpoints

    save = ocp.CheckpointManager.save

    def save_that_swallows_a_signal(self, *args, **kwargs):
        out = save(self, *args, **kwargs)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here, in the main thread
        except BaseException:
            pass
        return out

    monkeypatch.setattr(ocp.CheckpointManager, "save", save_that_swallows_a_signal)
    states = {"g": {"w": np.ones((2, 3), np.float32)}}
    history = {"train_loss": np.zeros((2, 1), np.float32)}
    with interrupt.handling_signals("embaug test"):
        with checkpoints.checkpoint_manager(tmp_path / "c") as manager:
            with pytest.raises(interrupt.Interrupted):
                checkpoints.save(manager, 4, states, history)
    # Raised once the checkpoint was complete, its digests included.
    assert (tmp_path / "c" / "4" / checkpoints.DIGESTS).is_file()


_RECEIVED = _DEFAULT_SIGNALS + """
from embaug_jax import interrupt

with interrupt.handling_signals("embaug test"):
    print(interrupt.received())
    try:
        signal.raise_signal(signal.SIGTERM)
        for _ in range(1000):
            pass
    except interrupt.Interrupted:
        pass
    print(interrupt.received())
print(interrupt.received())
"""


def test_the_received_signal_is_known_until_the_command_ends():
    # What a process of a --distributed run reports when a collective fails under it because
    # its peer stopped on the same signal first.
    proc = subprocess.run([sys.executable, "-c", _RECEIVED], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["None", str(int(signal.SIGTERM)), "None"]


# ---------------------------------------------------------------------------------------------
# Environment faults: read-only and full disks.


def test_read_only_workdir(tmp_path, capsys, monkeypatch):
    # Tests may run as root, which ignores permission bits: make the lock file's open fail the
    # way a read-only mount does.
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(".embaug.lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    assert cli.main(file_train(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "Read-only file system" in err and "--workdir" in err


def test_a_short_write_on_a_full_disk_says_no_space_left(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))

    def writer(path):
        path.write_bytes(b"partial")
        raise OSError("61440 requested and 37856 written")  # what numpy's tofile says

    with pytest.raises(OSError) as info, atomic_path(tmp_path / "x.npy") as tmp:
        writer(tmp)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "x.npy")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# ---------------------------------------------------------------------------------------------
# Silent wrong results, no more.


def _no_training(monkeypatch):
    """Any training chunk saves a checkpoint: make that the forbidden path."""
    import orbax.checkpoint as ocp

    def forbidden(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(ocp.CheckpointManager, "save", forbidden)


def test_smoke_variant_with_data_path_trains_on_that_file_and_changed_data_is_refused(
        tmp_path, capsys, fast_compile):
    from embaug_jax.run.train import data_fingerprint

    data = dataset_dir(tmp_path, classes=4)
    assert cli.main(file_train(tmp_path, data=data)) == 0
    work = Workdir(tmp_path / "w")
    config = json.loads(work.config.read_text())
    assert config["data"]["source"] == "file" and config["data"]["path"] == str(data)
    fingerprint = json.loads(work.fingerprint.read_text())
    assert fingerprint["data_content"] == data_fingerprint(load_embeddings(data))
    results = work.results_json.read_bytes()

    # Different data of the same shape at the same path: refused, results untouched.
    other = dataset_dir(tmp_path, "other", seed=1, classes=4)
    for f in ("embeddings.npy", "labels.npy", "meta.json"):
        (data / f).write_bytes((other / f).read_bytes())
    capsys.readouterr()
    assert cli.main(file_train(tmp_path, data=data)) == 2
    err = capsys.readouterr().err
    assert "trained on other data" in err and "delete" in err and "Traceback" not in err
    assert work.results_json.read_bytes() == results


def test_an_all_empty_text_column_is_an_error_and_a_mostly_empty_one_a_warning(tmp_path,
                                                                                caplog):
    from embaug_jax import configlib
    from embaug_jax.sources import load_table

    def source(rows, **knobs):
        src = configlib.get_config(TABLE).source
        src.update(dict(path=str(table_csv(tmp_path, rows)), text_columns="title,description",
                        label_column="category", id_column="sku", **knobs))
        return src

    rows = [{"sku": i, "title": f"t{i}", "description": "" if i < 3 else "d",
             "category": "a"} for i in range(5)]
    caplog.set_level("WARNING")
    assert len(load_table(source(rows))) == 5
    assert "'description' is empty in 3 of 5 rows" in caplog.text
    rows = [dict(r, description="") for r in rows]
    for policy in ("keep", "drop"):
        with pytest.raises(UserError, match="'description' is empty in all 5 rows"):
            load_table(source(rows, empty_texts=policy))


# ---------------------------------------------------------------------------------------------
# Contracts.


def test_a_plain_npz_is_a_dataset(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    path = npz(tmp_path, embeddings=x, labels=np.array([0, 1, 2, 0, 1, 2]),
               class_names=np.array(["a", "b", "c"]), ids=np.arange(6),
               segments=np.array([2, 3]), segment_names=np.array(["title", "image"]))
    ds = load_embeddings(path)
    np.testing.assert_array_equal(ds.embeddings, x)
    assert ds.class_names == ["a", "b", "c"] and ds.ids.tolist() == [str(i) for i in range(6)]
    assert [(s.name, s.size) for s in ds.segments] == [("title", 2), ("image", 3)]
    minimal = load_embeddings(npz(tmp_path, embeddings=x, labels=np.zeros(6, int),
                                  class_names=np.array(["only", "other"])))
    assert minimal.segments is None and minimal.ids is None and minimal.num_classes == 2


def test_image_embedder_reads_the_shipped_lite0_pth_in_memory(tmp_path, fast_compile):
    from embaug_jax.embed.efficientnet.convert import convert_file
    from embaug_jax.embed.efficientnet.embedder import ImageEmbedder
    from embaug_jax.embed.extraction import resolve_model_path

    pth = resolve_model_path("builtin:lite0")
    direct = ImageEmbedder.from_pretrained(pth, variant=None)
    convert_file(pth, tmp_path / "lite0.safetensors")
    converted = ImageEmbedder.from_pretrained(tmp_path / "lite0.safetensors", variant=None)
    assert direct.info == converted.info and direct.info.variant == "lite0"
    images = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    np.testing.assert_array_equal(direct.embed(images), converted.embed(images))
    assert list(tmp_path.iterdir()) == [tmp_path / "lite0.safetensors"]  # nothing else written


# ---------------------------------------------------------------------------------------------
# Races and faults.


def test_a_second_run_in_a_locked_workdir_names_the_first(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from embaug_jax.util import workdir_lock\n"
         f"with workdir_lock({str(tmp_path / 'w')!r}, 'train'):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        for argv in (file_train(tmp_path), extract_argv(tmp_path)):
            capsys.readouterr()
            assert cli.main(argv) == 2
            err = capsys.readouterr().err
            assert f"in use by `embaug train` (pid {holder.pid}" in err, err
            assert not (tmp_path / "w" / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # The operating system released the lock with the process: the workdir is free again.
    with workdir_lock(tmp_path / "w", "train"):
        pass


def test_the_lock_is_taken_in_process_too(tmp_path):
    with workdir_lock(tmp_path / "w", "extract"):
        with pytest.raises(UserError, match=f"`embaug extract` \\(pid {os.getpid()}"):
            with workdir_lock(tmp_path / "w", "train"):
                pass
    with workdir_lock(tmp_path / "w", "train", take=False):  # process != 0 of a pod
        pass


def test_a_failed_train_leaves_no_config_or_fingerprint(tmp_path, monkeypatch):
    from embaug_jax.run import train as run_train

    def crash(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(run_train, "run_sweep", crash)
    with pytest.raises(RuntimeError, match="device lost"):
        cli.main(file_train(tmp_path))
    assert not (tmp_path / "w").exists()


def test_full_disk_keeps_the_results_and_a_rerun_finishes_without_training(
        tmp_path, capsys, monkeypatch, fast_compile):
    from matplotlib.figure import Figure

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(Figure, "savefig", full)
        assert cli.main(file_train(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "no space left on device" in err and "run the same command again" in err
    work = Workdir(tmp_path / "w")
    results = json.loads(work.results_json.read_text())  # written before the figures
    assert work.results_md.exists() and not list(work.path.glob("*.png"))

    _no_training(monkeypatch)
    assert cli.main(file_train(tmp_path)) == 0
    assert sorted(p.name for p in work.path.glob("*.png")) == sorted(results["figures"])
    assert json.loads(work.results_json.read_text()) == results


class _DeviceFake:
    """A text embedder that says how many devices it shards over; fails after `fail_after`."""

    dim = 4

    def __init__(self, devices: int, fail_after: int | None = None):
        self.devices, self.fail_after, self.calls = [None] * devices, fail_after, 0

    def fingerprint(self):
        return "fake"

    def embed(self, texts, *, progress=False):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("killed")
        self.calls += 1
        return np.stack([np.full(4, len(t), np.float32) for t in texts])


def test_extract_redoes_shards_of_another_device_count(tmp_path, caplog):
    from embaug_jax import configlib
    from embaug_jax.run import extract

    c = configlib.get_config(TABLE)
    c.source.path = str(table_csv(tmp_path))  # 6 rows in shards of 2: three shards
    c.source.text_columns, c.source.label_column, c.source.id_column = "title", "category", "sku"
    c.shard_size, c.progress = 2, False
    for workdir, resume_devices, redone in (("same", 4, 2), ("other", 1, 3)):
        with pytest.raises(RuntimeError, match="killed"):
            extract.run_extraction(c, tmp_path / workdir,
                                    text_embedder=_DeviceFake(4, fail_after=1))
        assert len(list((tmp_path / workdir / "shards").glob("shard_*.npy"))) == 1
        resumed = _DeviceFake(resume_devices)
        caplog.clear()
        out = extract.run_extraction(c, tmp_path / workdir, text_embedder=resumed)
        assert resumed.calls == redone and len(load_embeddings(out)) == 6
        assert ("so they are redone" in caplog.text) == (resume_devices != 4)


def test_damaged_predictions_are_written_again_by_doing_what_the_message_says(
        tmp_path, capsys, monkeypatch, fast_compile):
    argv = damaged_predictions(tmp_path)
    work = Workdir(tmp_path / "w")
    results = json.loads(work.results_json.read_text())
    capsys.readouterr()
    assert cli.main(argv) == 1
    assert "Delete it and rerun" in capsys.readouterr().err
    work.predictions.unlink()
    _no_training(monkeypatch)  # the last checkpoint has every epoch: nothing is trained again
    assert cli.main(argv) == 0
    assert load_predictions(work).members
    assert json.loads(work.results_json.read_text()) == results


def test_checkpoints_of_the_old_kernel_layout_are_refused_with_what_to_do(
        tmp_path, capsys, fast_compile):
    import shutil

    data = dataset_dir(tmp_path, classes=4)
    assert cli.main(file_train(tmp_path, data=data)) == 0
    work = Workdir(tmp_path / "w")
    # What an earlier version wrote: the same fingerprint without the state layout.
    fingerprint = json.loads(work.fingerprint.read_text())
    del fingerprint["state_layout"]
    work.fingerprint.write_text(json.dumps(fingerprint))
    capsys.readouterr()
    assert cli.main(file_train(tmp_path, data=data)) == 2
    err = capsys.readouterr().err
    assert "[in, out]" in err and "cannot be resumed" in err and "delete" in err
    assert "Traceback" not in err
    # Doing what it says: without the checkpoints the finished run re-reports from its
    # predictions, and trains nothing (training would write checkpoints again).
    shutil.rmtree(work.checkpoints)
    assert cli.main(file_train(tmp_path, data=data)) == 0
    assert not work.checkpoints.exists()
    assert work.results_md.exists()


# ---------------------------------------------------------------------------------------------
# The training side: divergence, full disks, damaged outputs, warnings, suggested keys.


def test_a_run_that_diverges_keeps_no_checkpoint_and_a_smaller_learning_rate_starts_clean(
        tmp_path, capsys, fast_compile):
    # The cyclic learning rate climbs to 5e5 over 8 epochs: the loss is finite at the
    # checkpoint of epoch 4 and NaN by epoch 8.
    data = dataset_dir(tmp_path)
    climbing = ("--config.num_epochs=8", "--config.optim.lr_min=1e-4",
                "--config.optim.half_cycle_epochs=8")
    capsys.readouterr()
    assert cli.main(file_train(tmp_path, *climbing, "--config.optim.lr_max=5e5",
                               data=data)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not finite after epoch 8" in err
    assert "--config.optim.lr_max=50000" in err and "config.optim.lr_min=0.0001" in err
    assert "earlier checkpoints" in err and "removed" in err
    work = Workdir(tmp_path / "w")
    assert not work.checkpoints.exists() and not work.fingerprint.exists()
    # Nothing of the diverged run is resumed: the smaller learning rate trains from epoch 0.
    assert cli.main(file_train(tmp_path, *climbing, "--config.optim.lr_max=3e-3",
                               data=data)) == 0
    err = capsys.readouterr().err
    assert "resumed from" not in err and "holds" not in err
    assert sorted(p.name for p in work.checkpoints.iterdir()) == ["4", "8"]


# What tensorstore raised when a tmpfs filled up during an orbax checkpoint write.
_TENSORSTORE_DISK_FULL = (
    'RESOURCE_EXHAUSTED: Error writing "state.stitchup.epoch/0" in OCDBT database at local file '
    '"/w/checkpoints/8.orbax-checkpoint-tmp/default.orbax-checkpoint-tmp/ocdbt.process_0/": '
    'Failed writing: "manifest.ocdbt.__lock": Failed to write 590 bytes to file 8: No space left '
    "on device [os_error_code='28']")


def test_a_full_disk_during_a_checkpoint_write_is_one_message_and_the_rerun_resumes(
        tmp_path, capsys, monkeypatch, fast_compile):
    import orbax.checkpoint as ocp

    save = ocp.CheckpointManager.save

    def full_at_8(self, step, *args, **kwargs):
        if step == 8:
            raise ValueError(_TENSORSTORE_DISK_FULL)
        return save(self, step, *args, **kwargs)

    argv = file_train(tmp_path, "--config.num_epochs=8")
    with monkeypatch.context() as m:
        m.setattr(ocp.CheckpointManager, "save", full_at_8)
        capsys.readouterr()
        assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if "embaug" in ln]) == 1
    work = Workdir(tmp_path / "w")
    assert f"no space left on device writing {work.checkpoints}" in err
    assert "run the same command again" in err
    assert sorted(p.name for p in work.checkpoints.iterdir()) == ["4"]
    assert cli.main(argv) == 0
    assert "resumed from" in capsys.readouterr().err and work.results_json.exists()


def test_a_really_full_disk_anywhere_in_a_run_is_one_message_and_freeing_space_finishes_it(
        tmp_path, capsys, fast_compile):
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150k", "tmpfs", str(disk)],
                           capture_output=True)
    if mount.returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        data = dataset_dir(tmp_path)
        argv = file_train(tmp_path, data=data)
        argv[3] = f"--workdir={disk / 'w'}"
        capsys.readouterr()
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "no space left on device writing" in err
        subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
        assert cli.main(argv) == 0
        assert cli.main(file_train(tmp_path, data=data)) == 0  # the same run, never interrupted
        assert (Workdir(disk / "w").results_json.read_text()
                == Workdir(tmp_path / "w").results_json.read_text())
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("how", ["deleted fingerprint", "changed data"])
def test_doing_what_the_refusal_says_starts_the_run_over(how, tmp_path, capsys, fast_compile):
    import re
    import shutil

    from embaug_jax.run.train import data_fingerprint

    change = (lambda w: w.fingerprint.unlink()) if how == "deleted fingerprint" else None
    argv = finished_run(tmp_path, change or (lambda w: None), other_data=True)
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    for path in map(Path, re.search(r"[Dd]elete (.+?) to start over", err).group(1)
                    .split(" and ")):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert cli.main(argv) == 0
    fingerprint = json.loads(Workdir(tmp_path / "w").fingerprint.read_text())
    assert fingerprint["data_content"] == data_fingerprint(load_embeddings(tmp_path / "other"))


@pytest.mark.parametrize("scale,same,words", [
    (1e35, False, "have an RMS of 2.0"), (1e-6, False, "divide them by 2.0"),
    (1.0, True, "every training row is the same vector"), (1.0, False, None)])
def test_embeddings_that_train_to_chance_are_warned_about(scale, same, words, tmp_path, capsys,
                                                         fast_compile):
    ds = make_synthetic(0, 160, 8, 4, class_sep=2.0)
    x = np.ones_like(ds.embeddings) if same else ds.embeddings * scale
    save_embeddings(tmp_path / "d", x.astype(np.float32), ds.labels, ds.class_names)
    capsys.readouterr()
    assert cli.main(file_train(tmp_path, data=tmp_path / "d")) == 0
    err = capsys.readouterr().err
    if words is None:  # ordinary embeddings: no warning
        assert "RMS of" not in err and "same vector" not in err
    else:
        assert words in err
    # Rows that never vary within a class leave no covariance for the Mahalanobis detector:
    # the report goes on without the embedding detectors, and says so.
    assert ("leaves out the embedding detectors" in err) == same


@pytest.mark.parametrize("damage,words", [
    (lambda p: p.write_bytes(p.read_bytes()[:-8]), "is truncated"),
    (lambda p: p.write_bytes(b"not a numpy file"), "is damaged"),
    (lambda p: np.save(p, np.zeros((2, 3), np.float32)), "not float32 (2, 4)"),
])
def test_a_damaged_kept_shard_is_embedded_again(damage, words, tmp_path, caplog):
    import shutil

    from embaug_jax.run import extract

    c = configlib.get_config(TABLE)
    c.source.path = str(table_csv(tmp_path))  # 6 rows in shards of 2: three shards
    c.source.text_columns, c.source.label_column, c.source.id_column = "title", "category", "sku"
    c.shard_size, c.progress, c.keep_shards = 2, False, True
    out = extract.run_extraction(c, tmp_path / "w", text_embedder=_DeviceFake(4))
    want = {p.name: p.read_bytes() for p in out.iterdir()}
    shutil.rmtree(out)
    damage(Workdir(tmp_path / "w").shards / "shard_00001.npy")
    again = _DeviceFake(4)
    caplog.clear()
    out = extract.run_extraction(c, tmp_path / "w", text_embedder=again)
    assert again.calls == 1 and words in caplog.text and "embedded again" in caplog.text
    assert {p.name: p.read_bytes() for p in out.iterdir()} == want


def test_every_config_key_a_message_suggests_exists():
    import re

    def keys(config, prefix=""):
        for k, v in config.items():
            yield prefix + k
            if hasattr(v, "items"):
                yield from keys(v, f"{prefix}{k}.")

    common = configlib.load_module(REPO / "configs" / "extract" / "common.py")
    known = {k for path in (DEFAULT, TABLE, DEMO) for k in keys(configlib.get_config(path))}
    known |= {f"source.{k}" for kind in ("table", "wordnet", "fashion_products", "tfds",
                                         "fashion_mnist") for k in keys(common.source(kind))}
    suggested = {k for f in (REPO / "embaug_jax").rglob("*.py")
                 for k in re.findall(r"--config\.([a-z_][a-z0-9_.]*[a-z0-9_])", f.read_text())}
    assert suggested - {"a.b"} and not suggested - {"a.b"} - known, suggested - known
