"""A run folder's layout: the one place that names the files and sub-folders a command keeps there.

Every command runs in a workdir (`--workdir=DIR`) and resumes from what an earlier run left in
it, so these names are a contract with every workdir already written: rename one and old runs
no longer resume or re-report.

A training run (`embaug train`)::

    config.json        the config as run
    fingerprint.json   what the checkpoints depend on (training config keys, data content)
    metrics.jsonl      one row per member per evaluation, rewritten after every chunk
    tensorboard/       TensorBoard event files, a run per variant, written after every chunk
    profile/           a jax.profiler trace of the first training steps (--config.profile=N)
    checkpoints/       orbax checkpoints; a rerun resumes from the last one
    predictions.npz    the final validation probabilities: a finished run re-reports from them
    results.json       the report's numbers
    results.md         the report as tables and sentences
    *.png              the report's figures (FIGURES)

An extraction (`embaug extract`)::

    embeddings/           the embedding dataset (an extract config's `output` may move it)
    skipped_images.json   beside the dataset, when items with bad images were left out
    shards/               the finished shards of an unfinished extraction
    models/               image checkpoints converted to safetensors (kept, reused)

The demo (`embaug demo`) keeps an extraction in `extract/` and a training run in `train/`.

What is inside a sub-folder belongs to the format that writes it: `checkpoints/` to orbax,
`tensorboard/` to `embaug_jax.report.tensorboard`, `profile/` to `jax.profiler`, `embeddings/`
to `embaug_jax.dataset`, `shards/` to the extraction driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Iterator

from embaug_jax import util

# The report's figures, by what they show, in the order the report draws (and lists) them.
FIGURES = {
    "threshold_sweep": "fig3_threshold_sweep.png",
    "roc": "fig4_roc.png",
    "training_curves": "fig5_training_curves.png",
    "softness": "fig6_softness.png",
    "reliability": "reliability.png",
    "auc_decomposition": "auc_decomposition.png",
    "oscr": "oscr.png",
    "settings": "settings.png",
}


def _file(name: str, doc: str) -> property:
    """A Workdir property: the path of `name` in the workdir."""
    return property(lambda self: self.path / name, doc=doc)


@dataclasses.dataclass(frozen=True)
class Workdir(os.PathLike):
    """A run folder and the path of each file a command keeps in it.

    `Workdir(path)` names files and creates nothing; `check()` and `lock()` are the checks and
    the lock a command takes before it writes. A Workdir is a path-like (`Path(workdir)` and
    `open(workdir.results_json)` work), so functions that take a folder take either.
    """

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def check(self) -> Workdir:
        """This workdir if a run may use it as its own folder, else a UserError saying why
        (`util.check_workdir`: a file, the filesystem root and the home folder are refused)."""
        util.check_workdir(self.path)
        return self

    @contextlib.contextmanager
    def lock(self, command: str, *, take: bool = True) -> Iterator[Workdir]:
        """Holds the workdir for one run of `command` (`util.workdir_lock`): a second run fails
        at once; `take=False` (processes other than 0 of a multi-process run) takes nothing."""
        with util.workdir_lock(self.path, command, take=take):
            yield self

    lock_file = _file(util.LOCK_FILE, "Locked (`flock`) while a command runs here.")

    # A training run.
    config = _file("config.json", "The config as run.")
    fingerprint = _file("fingerprint.json", "What the checkpoints depend on.")
    metrics = _file("metrics.jsonl", "One row per member per evaluation.")
    tensorboard = _file("tensorboard", "TensorBoard event files: a run per variant.")
    profile = _file("profile", "A jax.profiler trace of training steps (config.profile).")
    checkpoints = _file("checkpoints", "The sweep's orbax checkpoints.")
    predictions = _file("predictions.npz", "The final validation probabilities.")
    results_json = _file("results.json", "The report's numbers.")
    results_md = _file("results.md", "The report as tables and sentences.")

    def figure(self, name: str) -> Path:
        """The file of the report's figure `name` (a key of FIGURES)."""
        if name not in FIGURES:
            raise KeyError(f"no figure {name!r}; the report draws {', '.join(FIGURES)}.")
        return self.path / FIGURES[name]

    def figures(self) -> list[Path]:
        """The report's figures present in this workdir, in FIGURES order."""
        return [p for p in map(self.figure, FIGURES) if p.is_file()]

    def has_checkpoints(self) -> bool:
        """Whether a sweep has written a checkpoint here (an empty folder is none)."""
        return self.checkpoints.is_dir() and any(self.checkpoints.iterdir())

    def run_state(self) -> list[Path]:
        """What a rerun of `embaug train` here resumes or re-reports from, where present: the
        checkpoints and the saved predictions. `fingerprint.json` says whose they are; deleting
        these starts the run over."""
        return [path for path, present in ((self.checkpoints, self.has_checkpoints()),
                                           (self.predictions, self.predictions.exists()))
                if present]

    # An extraction.
    embeddings = _file("embeddings", "The dataset, when the extract config names no other output.")
    shards = _file("shards", "The finished shards of an unfinished extraction.")
    models = _file("models", "Image checkpoints converted to safetensors.")

    def skipped_images(self, output: str | os.PathLike | None = None) -> Path:
        """The list of items left out for bad images: beside the extraction's `output`
        (default: this workdir's `embeddings`)."""
        return Path(output if output is not None else self.embeddings).parent / (
            "skipped_images.json")

    # The demo's stages.
    extract = property(lambda self: Workdir(self.path / "extract"), doc="The demo's extraction.")
    train = property(lambda self: Workdir(self.path / "train"), doc="The demo's training run.")
