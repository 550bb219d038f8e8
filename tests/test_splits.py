"""Tests for embaug_jax.train.splits and embaug_jax.train.synthetic."""

import numpy as np
import pytest

from embaug_jax.train.splits import make_splits
from embaug_jax.train.synthetic import make_synthetic


def _labels(n=500, c=12, seed=0):
    return np.random.default_rng(seed).integers(0, c, size=n)


def test_partition_equal_sizes_and_seen_mask():
    labels = _labels()
    s = make_splits(labels, 12, trials=4, train_fraction=0.1, seed=3)
    assert s.train_idx.shape == (4, 50) and s.val_idx.shape == (4, 450)
    for t in range(4):
        both = np.concatenate([s.train_idx[t], s.val_idx[t]])
        np.testing.assert_array_equal(np.sort(both), np.arange(500))  # a partition
    # Trials differ, and the same seed reproduces them (adding trials keeps earlier ones).
    assert not np.array_equal(s.train_idx[0], s.train_idx[1])
    s6 = make_splits(labels, 12, trials=6, train_fraction=0.1, seed=3)
    np.testing.assert_array_equal(s6.train_idx[:4], s.train_idx)


def test_seen_mask_on_hand_checked_splits():
    # Class 3 has a single example (row 7): it is seen exactly in the trials that train on row 7.
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 3, 1, 2, 0, 1, 2, 0, 1, 2])
    s = make_splits(labels, 4, trials=8, train_fraction=0.25, seed=1)
    trains_on_7 = (s.train_idx == 7).any(axis=1)
    assert trains_on_7.any() and not trains_on_7.all()  # both cases occur
    np.testing.assert_array_equal(s.seen_mask[:, 3], trains_on_7)
    # One training row per trial: exactly one seen class, that row's.
    one = make_splits(labels, 4, trials=5, train_fraction=1 / 16, seed=2)
    assert one.train_idx.shape == (5, 1)
    for t in range(5):
        assert one.seen_mask[t].tolist() == [c == labels[one.train_idx[t, 0]] for c in range(4)]


def test_unseen_classes_arise_from_small_fraction():
    # Long-tailed classes: a 10% split misses rare ones, the paper's "none" category.
    data = make_synthetic(0, 2000, 8, 60, imbalance=1.5)
    s = make_splits(data.labels, 60, trials=3, train_fraction=0.1)
    assert (~s.seen_mask).sum(1).min() > 0
    for t in range(3):
        assert not np.isin(data.labels[s.train_idx[t]], np.flatnonzero(~s.seen_mask[t])).any()


@pytest.mark.parametrize("holdout", [3, ["c1", "c4"], [1, 4]])
def test_holdout_classes_never_train(holdout):
    labels = _labels()
    names = [f"c{i}" for i in range(12)]
    s = make_splits(labels, 12, trials=3, train_fraction=0.2, holdout_classes=holdout,
                    class_names=names)
    for t in range(3):
        held = np.flatnonzero(s.holdout[t])
        assert len(held) == (3 if holdout == 3 else 2)
        assert not np.isin(labels[s.train_idx[t]], held).any()
        assert not s.seen_mask[t, held].any()
    if holdout != 3:
        np.testing.assert_array_equal(np.flatnonzero(s.holdout[0]), [1, 4])


@pytest.mark.parametrize("kwargs,match", [
    (dict(train_fraction=0.0), "train_fraction"),
    (dict(train_fraction=1.5), "train_fraction"),
    (dict(trials=0), "trials"),
    (dict(holdout_classes=["nope"]), "not a class name"),
    (dict(holdout_classes=[99]), "outside"),
    (dict(holdout_classes=12), "holdout_classes"),
    (dict(holdout_classes=11, train_fraction=0.9), "fewer than"),
])
def test_bad_arguments(kwargs, match):
    args = dict(trials=2, train_fraction=0.1, class_names=[f"c{i}" for i in range(12)])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_splits(_labels(), 12, **args)


def test_bad_labels():
    with pytest.raises(ValueError, match="labels must lie"):
        make_splits(np.array([0, 1, 12]), 12, trials=1, train_fraction=0.5)
    with pytest.raises(ValueError, match="integers"):
        make_splits(np.array([0.0, 1.0]), 12, trials=1, train_fraction=0.5)


def test_synthetic_shapes_and_clusters():
    import jax

    d = make_synthetic(jax.random.key(1), 300, 16, 5, class_sep=3.0, segments=(10, 6))
    assert d.embeddings.shape == (300, 16) and d.embeddings.dtype == np.float32
    assert d.num_classes == 5 and len(d) == 300 and [s.size for s in d.segments] == [10, 6]
    # Points sit nearer their own class mean than any other (well separated clusters).
    means = np.stack([d.embeddings[d.labels == c].mean(0) for c in range(5)])
    dist = ((d.embeddings[:, None] - means[None]) ** 2).sum(-1)
    assert (dist.argmin(1) == d.labels).mean() > 0.99
    np.testing.assert_array_equal(make_synthetic(7, 50, 4, 3).embeddings,
                                  make_synthetic(7, 50, 4, 3).embeddings)
    with pytest.raises(ValueError, match="sum to"):
        make_synthetic(0, 10, 16, 2, segments=(10, 5))
