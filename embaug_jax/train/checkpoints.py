"""A sweep's orbax checkpoints: every group's training state and the learning curves so far.

Saved without the device padding, so a run resumes on any device and process count. Nothing
random is saved: every key is derived from the root key, the epoch and the step.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from absl import logging

from embaug_jax.train.members import Group

# Config keys whose change makes an existing checkpoint meaningless for this run.
FINGERPRINT_KEYS = ("data", "model", "optim", "augment", "sweep", "num_epochs", "batch_size",
                    "eval_every", "seed")


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[None]:
    """Orbax logs each save and restore step at INFO; the progress bar already tells the story."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


@contextlib.contextmanager
def checkpoint_manager(directory: str | os.PathLike | None) -> Iterator[Any]:
    """An orbax CheckpointManager of `directory` (created if missing; None: no checkpoints,
    yields None), which keeps the last two and is closed on exit."""
    if directory is None:
        yield None
        return
    import orbax.checkpoint as ocp

    with _quiet_orbax():
        manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                                 cleanup_tmp_directories=True,
                                                 enable_async_checkpointing=False))
    try:
        yield manager
    finally:
        with _quiet_orbax():
            manager.wait_until_finished()
            manager.close()


def save(manager, epoch: int, states: dict, history: dict[str, np.ndarray],
         groups: Sequence[Group]) -> None:
    """Writes the groups' states (by group name, without the device padding) and the history
    after `epoch`."""
    import orbax.checkpoint as ocp

    with _quiet_orbax():
        manager.save(epoch, args=ocp.args.StandardSave({
            "state": {g.name: jax.tree.map(lambda x: x[:len(g.members)], states[g.name])
                      for g in groups},
            "history": history}))


def restore(manager, epoch: int, states: dict, history: dict[str, np.ndarray],
            groups: Sequence[Group]) -> tuple[dict, dict[str, np.ndarray]]:
    """Restores the checkpoint of `epoch` into the shapes of `states` (this run's padded group
    states, placed) and `history`, each leaf placed as its counterpart in `states` is.

    Every process reads the whole (small) checkpoint into host memory and places its own shards
    from there, so a checkpoint written by any number of processes and devices restores onto any
    other number.
    """
    import orbax.checkpoint as ocp

    target = {"state": {g.name: jax.tree.map(
        lambda x: np.zeros((len(g.members), *x.shape[1:]), x.dtype), states[g.name])
        for g in groups}, "history": history}
    try:
        with _quiet_orbax():
            restored = manager.restore(epoch, args=ocp.args.StandardRestore(target))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"the checkpoint at {manager.directory} (epoch {epoch}) does not fit "
                         f"this run ({e}); use a new workdir or delete the checkpoints.") from e
    # Padded on the host: device_put then places only this process's shards.
    states = {g.name: jax.tree.map(lambda x, padded: jax.device_put(np.concatenate(
        [x, np.repeat(x[-1:], padded.shape[0] - x.shape[0], 0)]), padded.sharding),
        restored["state"][g.name], states[g.name]) for g in groups}
    return states, {k: np.asarray(restored["history"][k]) for k in history}
