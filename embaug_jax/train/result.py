"""What a sweep produced (`SweepResult`): numpy arrays the report reads without the engine."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from embaug_jax.util import list_first

# What every member record holds; its settings read 0 where absent (a method that does not read
# them, or a run from before a setting was registered).
MEMBER_KEYS = ("method", "trial", "seed")


@dataclasses.dataclass
class SweepResult:
    """What a sweep produced: all `report.write_report(workdir, result)` needs (numpy arrays;
    validated on construction).

    Attributes:
      members: per member {"method": str, "trial": int, "seed": int, and the value of each
        setting (`embaug_jax.registry`; one a member lacks reads 0)}, in the sweep's order.
      eval_epochs: int [E], the epochs at which `history` was recorded.
      history: "overall_accuracy", "none_accuracy", "seen_accuracy", "train_loss" (and anything
        else) float [M, E], accuracies at `threshold`; NaN where not trained yet.
      val_probs: float [M, Nv, C], each member's final probabilities on its trial's validation
        split; None when the sweep stopped before its last epoch.
      val_labels: int [T, Nv], the validation labels of each trial (all trials have equal size).
      seen_mask: bool [T, C], the classes in each trial's training split.
      class_names: [C].
      threshold: the confidence threshold of the accuracies (`config.threshold`); None where
        not recorded, and `write_report` then needs it.
      val_idx, train_idx: optional int [T, Nv] / [T, n_train], the dataset rows of each trial's
        validation and training split (saved with the predictions, so an analysis can go back to
        the embeddings).
      epochs_done: epochs trained (default: the last evaluation epoch).
      state: the members' final `train.program.TrainState` ([M] leading axis, numpy), when the
        engine made it.
      eval_block_rows: validation rows per trial in one streamed evaluation block.
      device_data_bytes: dataset bytes the engine placed on each device (the training rows of
        every trial and one evaluation block).
    """

    members: list[dict]
    eval_epochs: np.ndarray
    history: dict[str, np.ndarray]
    val_probs: np.ndarray | None
    val_labels: np.ndarray
    seen_mask: np.ndarray
    class_names: list[str]
    threshold: float | None = None
    val_idx: np.ndarray | None = None
    train_idx: np.ndarray | None = None
    epochs_done: int | None = None
    state: Any = None
    eval_block_rows: int | None = None
    device_data_bytes: int | None = None

    def __post_init__(self):
        self.eval_epochs = np.asarray(self.eval_epochs).reshape(-1)
        self.val_probs = None if self.val_probs is None else np.asarray(self.val_probs)
        self.val_labels = np.asarray(self.val_labels)
        self.seen_mask = np.asarray(self.seen_mask)
        self.history = {k: np.asarray(v) for k, v in dict(self.history).items()}
        self.class_names = [str(c) for c in self.class_names]
        self.members = [dict(m) for m in self.members]
        if self.epochs_done is None:
            self.epochs_done = int(self.eval_epochs[-1]) if self.eval_epochs.size else 0
        self._validate()

    @property
    def finished(self) -> bool:
        return self.val_probs is not None

    def _validate(self):
        m = len(self.members)
        if m == 0:
            raise ValueError("SweepResult: no members to report on.")
        for i, member in enumerate(self.members):
            missing = [k for k in MEMBER_KEYS if k not in member]
            if missing:
                raise ValueError(f"SweepResult.members[{i}] lacks {missing}; every member needs "
                                 f"{list(MEMBER_KEYS)}.")
        probs = self.val_probs
        if probs is not None and (probs.ndim != 3 or probs.shape[0] != m):
            raise ValueError(f"SweepResult: {m} members but val_probs holds "
                             f"{probs.shape[0] if probs.ndim else 0} (shape {probs.shape}; want "
                             "[M, Nv, C]).")
        if self.val_labels.ndim != 2:
            raise ValueError(f"SweepResult.val_labels must be [T, Nv], got shape "
                             f"{self.val_labels.shape}.")
        if not np.issubdtype(self.val_labels.dtype, np.integer):
            raise ValueError(f"SweepResult.val_labels must be integer, got "
                             f"{self.val_labels.dtype}.")
        t, nv = self.val_labels.shape
        c = probs.shape[2] if probs is not None else np.shape(self.seen_mask)[-1]
        if self.seen_mask.shape != (t, c):
            raise ValueError(f"SweepResult.seen_mask must be [T, C] = [{t}, {c}], got shape "
                             f"{self.seen_mask.shape}.")
        self.seen_mask = self.seen_mask.astype(bool)
        if len(self.class_names) != c:
            raise ValueError(f"SweepResult: {len(self.class_names)} class_names for C = {c}.")
        trials = np.array([int(mb["trial"]) for mb in self.members])
        bad = np.flatnonzero((trials < 0) | (trials >= t))
        if bad.size:
            raise ValueError(f"SweepResult: members {bad.tolist()} name trials "
                             f"{trials[bad].tolist()}, outside [0, {t}).")
        bad = np.argwhere((self.val_labels < 0) | (self.val_labels >= c))
        if bad.size:
            raise ValueError(f"SweepResult.val_labels must lie in [0, {c}); bad (trial, row) "
                             f"{list_first(bad.tolist(), 5)}.")
        for name, shape in (("val_idx", (t, nv)), ("train_idx", None)):
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value)
            setattr(self, name, value)
            if value.ndim != 2 or value.shape[0] != t or (shape and value.shape != shape):
                raise ValueError(f"SweepResult.{name} must be [T, rows] with T = {t}"
                                 + (f" and rows = {nv}" if shape else "")
                                 + f", got shape {value.shape}.")
        e = self.eval_epochs.shape[0]
        for name, values in self.history.items():
            if values.shape != (m, e):
                raise ValueError(f"SweepResult.history[{name!r}] must be [M, E] = [{m}, {e}], "
                                 f"got shape {values.shape}.")
        if self.val_probs is None:
            return
        if self.val_probs.shape != (m, nv, c):
            raise ValueError(f"SweepResult.val_probs must be [M, Nv, C] = [{m}, {nv}, {c}], got "
                             f"shape {self.val_probs.shape}.")
        bad = np.flatnonzero(~np.isfinite(self.val_probs).reshape(m, -1).all(axis=1))
        if bad.size:
            raise ValueError(f"SweepResult.val_probs has NaN/Inf for members {bad.tolist()} "
                             f"(e.g. {self.members[bad[0]]}): training diverged.")
