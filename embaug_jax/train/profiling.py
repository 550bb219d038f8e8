"""A `jax.profiler` trace of a sweep's training steps (`--config.profile=N`).

A compiled call trains a whole evaluation period (`train.cadence`), so the trace holds whole
periods (and the evaluations between them): from the second one the process runs (the first
compiles its programs, which would fill the trace) until it holds at least N steps of each
member; a process that runs one period traces that one, its compilation included. The trace
(`jax.profiler.start_trace`) is an XPlane file for TensorBoard's profile plugin and a Perfetto
trace (`perfetto_trace.json.gz`, for ui.perfetto.dev), under `<directory>/plugins/profile/<date>/`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
from absl import logging


class StepTrace:
    """Traces the first `steps` training steps after the first compiled call (0: none); a
    context manager that ends a trace still open.

    Args:
      directory: where the trace goes (`Workdir.profile`); None traces nothing.
      steps: training steps of each member to capture, rounded up to whole periods.
      steps_per_epoch: updates per epoch.
    """

    def __init__(self, directory: str | os.PathLike | None, steps: int, steps_per_epoch: int):
        if int(steps) < 0:
            raise ValueError(f"profile={steps} must be >= 0 (training steps to trace; 0: none).")
        self.directory = None if directory is None or not steps else Path(directory)
        self.steps, self.steps_per_epoch = int(steps), int(steps_per_epoch)
        self.traced = 0
        self._periods = 0
        self._open = False

    def __enter__(self) -> StepTrace:
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    @contextlib.contextmanager
    def period(self, epochs: int, last: bool, outputs: Callable[[], Any]) -> Iterator[None]:
        """Around one evaluation period's training calls (`epochs` epochs; `last`: the last
        this process runs): traced from the second period on (or a last first one) until
        `steps` are. `outputs()` gives the calls' results, awaited before the trace ends."""
        self._periods += 1
        if (self.directory is not None and not self._open and self.traced < self.steps
                and (self._periods > 1 or last)):
            self.directory.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.directory), create_perfetto_trace=True)
            self._open = True
        yield
        if self._open:
            self.traced += epochs * self.steps_per_epoch
            if self.traced >= self.steps or last:
                jax.block_until_ready(outputs())
                self._stop()

    def _stop(self) -> None:
        if self._open:
            self._open = False
            jax.profiler.stop_trace()
            logging.info("traced %d training steps of each member into %s", self.traced,
                         self.directory)
