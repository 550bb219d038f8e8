"""A sweep's orbax checkpoints: every group's training state and the learning curves so far.

Saved without the device padding, so a run resumes on any device and process count. Nothing
random is saved: every key is derived from the root key, the epoch and the step.

Several processes (`--distributed`). A checkpoint holds host (numpy) arrays, which the driver
gathers from every process at a fixed point of its loop; process 0 alone writes them, and the
other processes only read (at the start of a run). Each process's orbax manager therefore
coordinates with no other: orbax's own barriers are device collectives, and one issued while
another process is in the driver's gather of the evaluation rows deadlocks both. The folder
must be one that every process sees (a shared file system), as for the workdir's other files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from absl import logging

from embaug_jax.train.members import Group
from embaug_jax.util import UserError

# Config keys whose change makes an existing checkpoint meaningless for this run.
FINGERPRINT_KEYS = ("data", "model", "optim", "augment", "sweep", "num_epochs", "batch_size",
                    "eval_every", "seed")


@contextlib.contextmanager
def _quiet_orbax(level: int = logging.WARNING) -> Iterator[None]:
    """Orbax logs each save and restore step at INFO; the progress bar already tells the story.
    A failed write is logged again (with tracebacks) by each of its threads: `save` raises it
    once, as one message."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(level)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


@contextlib.contextmanager
def checkpoint_manager(directory: str | os.PathLike | None, *,
                       writer: bool = True) -> Iterator[Any]:
    """An orbax CheckpointManager of `directory` (None: no checkpoints, yields None), which
    keeps the last two and is closed on exit.

    `writer=True` (process 0) creates the folder and writes; `writer=False` (the other
    processes of a multi-process run) opens it read-only. Either way the manager coordinates
    with no other process (see the module docstring).
    """
    if directory is None:
        yield None
        return
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    if writer:
        directory.mkdir(parents=True, exist_ok=True)
    alone = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(),
                                               active_processes={jax.process_index()})
    with _quiet_orbax():
        manager = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(
                max_to_keep=2 if writer else None, create=False,
                cleanup_tmp_directories=writer, read_only=not writer,
                enable_async_checkpointing=False, multiprocessing_options=alone))
    try:
        yield manager
    finally:
        with _quiet_orbax():
            manager.wait_until_finished()
            manager.close()


def save(manager, epoch: int, states: dict[str, Any], history: dict[str, np.ndarray]) -> None:
    """Writes the groups' states (host arrays by group name, without the device padding) and
    the history after `epoch`.

    Raises:
      OSError: ENOSPC naming the checkpoint folder, when the disk is full; the checkpoint is
        then absent (orbax writes it to a temporary folder first) and the one before is kept.
    """
    import orbax.checkpoint as ocp

    try:
        with _quiet_orbax(logging.FATAL):
            manager.save(epoch, args=ocp.args.StandardSave({"state": states, "history": history}))
    except Exception as e:  # tensorstore reports a full disk as a ValueError with its errno
        code = _os_error_code(e)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(manager.directory)) from e


def _os_error_code(e: BaseException) -> int | None:
    """The errno of a failed write that orbax reports without one (ENOSPC or EDQUOT only)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return e.errno
    text = str(e)
    match = re.search(r"os_error_code='?(\d+)", text)
    code = int(match.group(1)) if match else None
    if code in (errno.ENOSPC, errno.EDQUOT):
        return code
    if "No space left on device" in text:
        return errno.ENOSPC
    return None


def steps(manager) -> list[int]:
    """The epochs of the checkpoints in `manager`'s folder, oldest first."""
    with _quiet_orbax():
        return sorted(int(s) for s in manager.all_steps())


def restore(manager, epoch: int, states: dict[str, Any], history: dict[str, np.ndarray],
            groups: Sequence[Group]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The checkpoint of `epoch` as host arrays in the shapes of `states` (this run's padded
    group states, whose member axis it fills by repeating the last member) and `history`.

    Every process reads the whole (small) checkpoint into host memory and places its own shards
    from there, so a checkpoint written by any number of processes and devices restores onto any
    other number.

    Raises:
      UserError: the checkpoint is of another sweep (other members or shapes), or its files are
        damaged; the message names the folder to delete.
    """
    import orbax.checkpoint as ocp

    target = {"state": {g.name: jax.tree.map(
        lambda x: np.zeros((len(g.members), *x.shape[1:]), x.dtype), states[g.name])
        for g in groups}, "history": history}
    where = Path(manager.directory)
    try:
        with _quiet_orbax(logging.FATAL):
            restored = manager.restore(epoch, args=ocp.args.StandardRestore(target))
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
        earlier = [s for s in steps(manager) if s < epoch]
        remedy = (f"Delete {where / str(epoch)} to resume from epoch {earlier[-1]}, or delete "
                  f"{where} to start over" if earlier else f"Delete {where} to start over")
        raise UserError(
            f"the checkpoint {where / str(epoch)} (epoch {epoch}) cannot be restored into this "
            f"run: its files are damaged or hold another sweep ({_first_line(e)}). {remedy}, "
            "or use a new --workdir.") from e
    # Padded on the host: device_put then places only this process's shards.
    states = {g.name: jax.tree.map(lambda x, padded: np.concatenate(
        [x, np.repeat(x[-1:], padded.shape[0] - x.shape[0], 0)]), restored["state"][g.name],
        states[g.name]) for g in groups}
    return states, {k: np.asarray(restored["history"][k]) for k in history}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"
