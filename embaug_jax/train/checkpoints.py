"""A sweep's orbax checkpoints: every group's training state and the learning curves so far.

Saved without the device padding, so a run resumes on any device and process count. Nothing
random is saved: every key is derived from the root key, the epoch and the step. Each checkpoint
folder also holds the sha256 of its files (`DIGESTS`), checked before a restore: a damaged file
is named in one message, never read half-way (tensorstore's failed reads print tracebacks from
its threads) nor resumed from.

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
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from absl import logging

from embaug_jax import interrupt
from embaug_jax.train.members import Group
from embaug_jax.util import DamagedOutput, list_first, read_json, write_json_atomic

# The file in each checkpoint's folder that records the sha256 of the folder's other files.
DIGESTS = "embaug_sha256.json"

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
    with _quiet_orbax(logging.FATAL):
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

    # A signal during the save is raised once the checkpoint and its digests are written:
    # orbax's wait for its finishing thread would log and drop it.
    with interrupt.deferred():
        try:
            with _quiet_orbax(logging.FATAL):
                manager.save(epoch,
                             args=ocp.args.StandardSave({"state": states, "history": history}))
        except Exception as e:  # tensorstore reports a full disk as a ValueError with its errno
            code = _os_error_code(e)
            if code is None:
                raise
            raise OSError(code, os.strerror(code), str(manager.directory)) from e
        folder = _folder(manager, epoch)
        write_json_atomic(folder / DIGESTS, _digests(folder))


def _folder(manager, epoch: int) -> Path:
    return Path(manager.directory) / str(epoch)


def _digests(folder: Path) -> dict[str, str]:
    """{path relative to `folder`: sha256} of every file in it but the digests themselves."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != DIGESTS):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[str(path.relative_to(folder))] = h.hexdigest()
    return out


def _damage(folder: Path) -> str | None:
    """What is wrong with a checkpoint's files against its recorded digests (None: nothing,
    or no digests recorded, as by an earlier embaug_jax)."""
    if not (folder / DIGESTS).exists():
        return None
    try:
        recorded = read_json(folder / DIGESTS)
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict):
        return f"its {DIGESTS} is damaged"
    found = _digests(folder)
    missing = [p for p in recorded if p not in found]
    changed = [p for p in recorded if p in found and found[p] != recorded[p]]
    parts = ([f"{len(missing)} file(s) missing ({list_first(missing, 3)})"] if missing else []) + (
        [f"{len(changed)} file(s) changed since it was written ({list_first(changed, 3)})"]
        if changed else [])
    return "; ".join(parts) or None


def latest_step(manager) -> int | None:
    """The epoch of the newest checkpoint in `manager`'s folder (None: none)."""
    with _quiet_orbax(logging.FATAL):
        return manager.latest_step()


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
    with _quiet_orbax(logging.FATAL):
        return sorted(int(s) for s in manager.all_steps())


def restore(manager, epoch: int, states: dict[str, Any], history: dict[str, np.ndarray],
            groups: Sequence[Group]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The checkpoint of `epoch` in the shapes of `states` (this run's padded group states,
    whose member axis it fills by repeating the last member), each leaf placed as its
    counterpart in `states` is, and `history`.

    Every process reads the whole (small) checkpoint into host memory and places its own shards
    from there, so a checkpoint written by any number of processes and devices restores onto any
    other number.

    Raises:
      DamagedOutput: the checkpoint's files are damaged (or hold another sweep: `embaug train`
        refuses those earlier, by their fingerprint); the message names what to delete.
    """
    import orbax.checkpoint as ocp

    target = {"state": {g.name: jax.tree.map(
        lambda x: np.zeros((len(g.members), *x.shape[1:]), x.dtype), states[g.name])
        for g in groups}, "history": history}
    where, folder = Path(manager.directory), _folder(manager, epoch)
    damage = _damage(folder)
    if damage is None:
        try:
            with _quiet_orbax(logging.FATAL):
                restored = manager.restore(epoch, args=ocp.args.StandardRestore(target))
        except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
            damage = f"its files are damaged or hold another sweep: {_first_line(e)}"
    if damage:
        earlier = [s for s in steps(manager) if s < epoch]
        remedy = (f"Delete {folder} to resume from epoch {earlier[-1]}, or delete {where} to "
                  "start over" if earlier else f"Delete {where} to start over")
        raise DamagedOutput(f"the checkpoint {folder} (epoch {epoch}) cannot be restored "
                            f"({damage}). {remedy}, or use a new --workdir.")
    # Padded on the host: device_put then places only this process's shards.
    states = {g.name: jax.tree.map(lambda x, padded: jax.device_put(np.concatenate(
        [x, np.repeat(x[-1:], padded.shape[0] - x.shape[0], 0)]), padded.sharding),
        restored["state"][g.name], states[g.name]) for g in groups}
    return states, {k: np.asarray(restored["history"][k]) for k in history}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"
