"""Train/validation splits with unseen ("none") classes, equal-sized across trials so they vmap.

The paper (sec. 3.4) trains on a random 10% of the data and validates on the other 90%; classes
that land no example in the training split are the "none" category at validation time (sec. 2.5).
`holdout_classes` forces more classes out of training. Every trial has the same number of train
and validation rows, so the trial axis stacks into arrays and a sweep indexes it with a traced
trial id.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from embaug_jax.dataset import class_ids
from embaug_jax.util import UserError, check_seed


class Splits(NamedTuple):
    """Index arrays of `trials` random splits of one dataset.

    train_idx: int32 [T, n_train] row indices of the training examples of each trial.
    val_idx: int32 [T, n_val] row indices of the validation examples (everything not in train).
    seen_mask: bool [T, C] classes with at least one training example in that trial.
    holdout: bool [T, C] classes forced out of training in that trial.
    """

    train_idx: np.ndarray
    val_idx: np.ndarray
    seen_mask: np.ndarray
    holdout: np.ndarray

    @property
    def trials(self) -> int:
        return self.train_idx.shape[0]


def _resolve_holdout(holdout_classes, num_classes: int, class_names: Sequence[str] | None):
    """Returns (count, fixed_ids): a count of random classes per trial, or a fixed id list."""
    if isinstance(holdout_classes, (int, np.integer)) and not isinstance(holdout_classes, bool):
        count = int(holdout_classes)
        if not 0 <= count < num_classes:
            raise UserError(
                f"holdout_classes={count} must be in [0, {num_classes - 1}] (a count of classes "
                f"to hold out of training per trial), or a list of class names / ids.")
        return count, None
    ids = []
    for item in holdout_classes:
        if isinstance(item, str):
            if class_names is None:
                raise UserError(f"holdout class {item!r} is not a class name (no class_names "
                                "given).")
            ids.append(int(class_ids([item], class_names, what="holdout class")[0]))
        else:
            cid = int(item)
            if not 0 <= cid < num_classes:
                raise UserError(f"holdout class id {cid} is outside [0, {num_classes}).")
            ids.append(cid)
    if len(set(ids)) >= num_classes:
        raise UserError("holdout_classes would hold out every class; leave at least one to train.")
    return None, np.asarray(sorted(set(ids)), dtype=np.int64)


def make_splits(labels, num_classes: int, *, trials: int, train_fraction: float = 0.1,
                seed: int = 0, holdout_classes: int | Sequence[int | str] = 0,
                class_names: Sequence[str] | None = None) -> Splits:
    """Draws `trials` random train/validation splits.

    Args:
      labels: int [N] class ids in [0, num_classes).
      num_classes: C.
      trials: number of independent splits (the paper's repeated trials).
      train_fraction: fraction of ALL rows used for training, in (0, 1); round(f * N) rows.
      seed: the split seed; trial t uses numpy's generator seeded with (seed, t), so adding
        trials never changes the earlier ones.
      holdout_classes: a count k (k random classes per trial never train) or a list of class
        names / ids (the same ones in every trial). Training rows are drawn from the other classes.
      class_names: needed to resolve names in `holdout_classes`.

    Returns:
      Splits with equal sizes across trials; the validation split is every row not in training.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise UserError(f"labels must be a non-empty 1-D array, got shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"labels must be integers, got dtype {labels.dtype}.")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise UserError(f"labels must lie in [0, {num_classes}); found "
                         f"[{labels.min()}, {labels.max()}].")
    if int(trials) < 1:
        raise UserError(f"trials={trials} must be >= 1.")
    if not 0.0 < float(train_fraction) < 1.0:
        raise UserError(f"train_fraction={train_fraction} must be in (0, 1) (the paper uses 0.1).")
    check_seed(seed, "the split seed")
    n = labels.shape[0]
    n_train = int(round(float(train_fraction) * n))
    if n_train < 1 or n_train >= n:
        raise UserError(f"train_fraction={train_fraction} of {n} rows gives {n_train} training "
                        "rows; need at least 1 training and 1 validation row.")
    count, fixed = _resolve_holdout(holdout_classes, num_classes, class_names)

    train_idx = np.empty((trials, n_train), np.int32)
    val_idx = np.empty((trials, n - n_train), np.int32)
    seen = np.zeros((trials, num_classes), bool)
    holdout = np.zeros((trials, num_classes), bool)
    for t in range(trials):
        rng = np.random.default_rng([int(seed), t])
        if fixed is not None:
            held = fixed
        else:
            present = np.flatnonzero(np.bincount(labels, minlength=num_classes))
            held = rng.choice(present, size=min(count, len(present) - 1), replace=False)
        holdout[t, held] = True
        eligible = np.flatnonzero(~holdout[t, labels])
        if eligible.size < n_train:
            raise UserError(
                f"trial {t}: only {eligible.size} rows remain after holding out "
                f"{int(holdout[t].sum())} classes, fewer than the {n_train} training rows asked "
                "for; lower train_fraction or hold out fewer classes.")
        chosen = np.sort(rng.choice(eligible, size=n_train, replace=False))
        is_train = np.zeros(n, bool)
        is_train[chosen] = True
        train_idx[t] = chosen
        val_idx[t] = np.flatnonzero(~is_train)
        seen[t] = np.bincount(labels[chosen], minlength=num_classes) > 0
    return Splits(train_idx, val_idx, seen, holdout)
