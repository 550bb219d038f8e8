"""When a sweep evaluates, ends a chunk and writes a checkpoint: the config's cadence, resolved.

Every knob may be None, and is then derived from `config.num_epochs` (N):

  eval_every        the largest power of two <= sqrt(N): between sqrt(N) and 2 sqrt(N) points
                    on the learning curves (576 -> 16, 96 -> 8, 16 -> 4);
  chunk_epochs      eval_every (a progress tick and a metrics.jsonl rewrite per evaluation);
  checkpoint_every  three chunks (576 -> 48).

A derived value also divides the values that are set, so that setting any one knob, or only
num_epochs, always works. Evaluations fall every eval_every epochs and after the last epoch,
chunks end every chunk_epochs epochs and after the last, a checkpoint is written every
checkpoint_every epochs and after the last: N need not be a multiple of any of them (a shorter
last period compiles one more program). Values that are set must nest -- chunk_epochs a multiple
of eval_every (a chunk ends with an evaluation), checkpoint_every a multiple of chunk_epochs
(checkpoints are written between chunks) -- or `Cadence.from_config` names the conflict.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from embaug_jax.util import UserError

_KNOBS = ("eval_every", "chunk_epochs", "checkpoint_every")


@dataclasses.dataclass(frozen=True)
class Cadence:
    """A config's resolved cadence, in epochs."""

    num_epochs: int
    eval_every: int
    chunk_epochs: int
    checkpoint_every: int

    @classmethod
    def from_config(cls, config) -> Cadence:
        """Resolves `config`'s knobs (None: derived, see the module docstring); a UserError
        names a value that cannot work."""
        n = int(config.num_epochs)
        if n < 1:
            raise UserError(f"bad config: config.num_epochs={n} must be >= 1.")
        given = {k: config.get(k) for k in _KNOBS}
        for k, v in given.items():
            if v is not None and int(v) < 1:
                raise UserError(f"bad config: config.{k}={v} must be >= 1 (or None: derived "
                                "from num_epochs).")
        every, chunk, ckpt = (None if v is None else int(v) for v in given.values())
        if every is None:
            every = 1 << (math.isqrt(n).bit_length() - 1)
            for later in (chunk, ckpt):
                every = every if later is None else math.gcd(every, later)
        if chunk is None:
            chunk = every
        if ckpt is None:
            ckpt = 3 * chunk
        for inner, outer, why in (("eval_every", "chunk_epochs", "a chunk ends with an "
                                   "evaluation"),
                                  ("chunk_epochs", "checkpoint_every", "checkpoints are "
                                   "written between chunks")):
            a, b = (dict(eval_every=every, chunk_epochs=chunk, checkpoint_every=ckpt)[k]
                    for k in (inner, outer))
            if b % a:
                derived = [k for k in (inner, outer) if given[k] is None]
                note = (f"; {' and '.join(f'config.{k}' for k in derived)} derived from "
                        f"config.num_epochs={n}") if derived else ""
                raise UserError(f"bad config: config.{outer}={b} must be a multiple of "
                                f"config.{inner}={a} ({why}{note}); change one, or set it to "
                                "None to derive it.")
        return cls(n, every, chunk, ckpt)

    @property
    def eval_epochs(self) -> np.ndarray:
        """int [E]: the epochs after which the members are evaluated (every eval_every, and
        the last)."""
        return np.union1d(np.arange(self.eval_every, self.num_epochs + 1, self.eval_every),
                          [self.num_epochs]).astype(np.int64)

    def period_end(self, done: int) -> int:
        """The epoch of the first evaluation after epoch `done`."""
        return min(self.num_epochs, (done // self.eval_every + 1) * self.eval_every)

    def chunk_end(self, done: int) -> int:
        """The epoch at which the chunk that starts after epoch `done` ends (a resume under
        another chunk length first realigns)."""
        return min(self.num_epochs, (done // self.chunk_epochs + 1) * self.chunk_epochs)

    def checkpoints_at(self, epoch: int) -> bool:
        """Whether a checkpoint is written after `epoch` (at the end of a chunk)."""
        return epoch % self.checkpoint_every == 0 or epoch == self.num_epochs
