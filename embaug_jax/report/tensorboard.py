"""A sweep's learning curves as TensorBoard event files, written chunk by chunk as it trains.

`TensorBoardLog(directory, members, eval_epochs, steps_per_epoch).write(history, epochs_done)`
keeps one TensorBoard run per variant (`group_variants`: a method at its settings, e.g.
`directory/e_mixup/alpha=0.2/softness=0`), whose step is the epoch and whose values are the
mean over the variant's trials and seeds:

  train/loss             the mean training loss of each evaluation period, at its last epoch
  train/learning_rate    after each epoch (the rate of the next epoch's first update)
  validation/<metric>    each metric the engine evaluates (overall, "none" and seen accuracy)

and the variant's method and settings as TensorBoard hparams, by which the HParams dashboard
filters and compares the variants. `tensorboard --logdir=WORKDIR/tensorboard` shows them.

Each event is written once. Every write covers the epochs that no earlier one covered, in an
event file of its own named after them (`events.out.tfevents.<first>-<last>.embaug`), written
aside and moved into place whole: a resumed run, which trains again the epochs after its last
checkpoint, finds them covered and writes only the epochs after them, whatever the chunking. The
files sort in epoch order, as TensorBoard reads a run's files. The writer is tensorboardX (a
protobuf writer without TensorFlow).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from embaug_jax.report.results import group_variants, nanreduce, variant_settings
from embaug_jax.train.optim import learning_rates

_FILE = re.compile(r"events\.out\.tfevents\.(\d{6})-(\d{6})\.embaug\Z")
_LEARNING_RATE = ("lr_min", "lr_max", "half_cycle_epochs")


class TensorBoardLog:
    """A sweep's TensorBoard runs, one per variant, under `directory`.

    Args:
      directory: the folder of the runs (`Workdir.tensorboard`); created when first written.
      members: the sweep's member records (`sweep_members`), in the order of the history's rows.
      eval_epochs: int [E], the epochs of the history's columns.
      steps_per_epoch: updates per epoch (for the learning rate after each epoch).
    """

    def __init__(self, directory: str | os.PathLike, members: Sequence[Mapping],
                 eval_epochs, steps_per_epoch: int):
        self.directory = Path(directory)
        self.eval_epochs = np.asarray(eval_epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.variants = group_variants(members)
        self._members = [dict(m) for m in members]

    def clear(self) -> None:
        """Removes every run: what a run that starts from epoch 0 does, so that no event of an
        earlier run in the workdir stands among its own."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def write(self, history: Mapping[str, np.ndarray], epochs_done: int) -> None:
        """Writes every variant's events of the epochs up to `epochs_done` that no file of its
        run covers yet (the history holds NaN where nothing was evaluated)."""
        for name, variant in self.variants.items():
            run = self.directory / name
            covered = _covered(run)
            epochs = [e for e in range(epochs_done + 1) if e not in covered]
            if epochs:
                self._write_run(run, name, variant, history, epochs)

    def _write_run(self, run: Path, name: str, variant: dict, history, epochs: list[int]):
        import tensorboardX
        from tensorboardX.summary import hparams

        idx = variant["members"]
        member = self._members[idx[0]]
        lrs = {}
        if all(k in member for k in _LEARNING_RATE):
            lrs = dict(zip(epochs, np.asarray(learning_rates(
                member, np.asarray(epochs), self.steps_per_epoch), np.float64).tolist()))
        columns = {int(e): c for c, e in enumerate(self.eval_epochs)}
        run.mkdir(parents=True, exist_ok=True)
        path = run / f"events.out.tfevents.{epochs[0]:06d}-{epochs[-1]:06d}.embaug"
        # Written aside (outside the runs, which TensorBoard scans) and moved in whole.
        with tempfile.TemporaryDirectory(dir=self.directory.parent,
                                         prefix=".tensorboard-") as aside:
            writer = tensorboardX.SummaryWriter(aside)
            if epochs[0] == 0:
                _, start, _ = hparams(dict(method=variant["method"], variant=name,
                                           **variant_settings(variant)), {})
                writer.file_writer.add_summary(start)
            for epoch in epochs:
                if epoch in lrs:
                    writer.add_scalar("train/learning_rate", lrs[epoch], epoch)
                if epoch not in columns:
                    continue
                for key, values in history.items():
                    value = nanreduce(np.nanmean, np.asarray(values)[idx, columns[epoch]])
                    if np.isfinite(value):
                        tag = "train/loss" if key == "train_loss" else f"validation/{key}"
                        writer.add_scalar(tag, float(value), epoch)
            writer.close()
            (written,) = Path(aside).glob("events.out.tfevents.*")
            os.replace(written, path)


def _covered(run: Path) -> set[int]:
    """The epochs the event files of `run` cover (none if it does not exist)."""
    out: set[int] = set()
    if run.is_dir():
        for f in run.iterdir():
            match = _FILE.match(f.name)
            if match:
                out.update(range(int(match[1]), int(match[2]) + 1))
    return out
