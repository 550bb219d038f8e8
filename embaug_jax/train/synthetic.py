"""Synthetic embedding sets: Gaussian class clusters, for smoke configs, tests and timing.

`make_synthetic(0, 44_000, 4864, 171, imbalance=1.5)` has the shape of the paper's Fashion
Product Images embeddings (two 1536-d BERT vectors and one 1792-d EfficientNet-B4 vector); with
a long-tailed class distribution many rare classes land no example in a 10% training split and
become the "none" category, as in the paper.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from embaug_jax.dataset import EmbeddingDataset, Segment
from embaug_jax.util import UserError


def _seed_of(key_or_seed) -> int:
    if isinstance(key_or_seed, (int, np.integer)):
        return int(key_or_seed)
    import jax  # only when a key is passed

    data = np.asarray(jax.random.key_data(key_or_seed)).ravel()
    return int.from_bytes(data.astype(np.uint32).tobytes(), "little")


def make_synthetic(key_or_seed, n: int, dim: int, num_classes: int, *, class_sep: float = 1.0,
                   noise: float = 1.0, imbalance: float = 0.0,
                   segments: Sequence[int] | None = None, chunk: int = 4096,
                   dtype=np.float32) -> EmbeddingDataset:
    """Draws `n` points around `num_classes` Gaussian centres in `dim` dimensions.

    Args:
      key_or_seed: an int seed or a JAX PRNG key (the draw itself is NumPy: fast and exact).
      class_sep: centres are N(0, class_sep^2 I), so two centres lie about class_sep * sqrt(2 dim)
        apart against a within-class spread of noise * sqrt(2 dim): the ratio class_sep / noise
        sets how hard the task is, whatever the dimension.
      noise: per-coordinate standard deviation around the centre.
      imbalance: class frequencies are proportional to 1 / (rank + 1) ** imbalance (0: uniform).
      segments: sizes of named parts (e.g. (1536, 1536, 1792)); must sum to dim.
      chunk: rows drawn at a time, to bound peak memory at paper scale.

    Returns:
      An in-memory EmbeddingDataset (`save_embeddings` writes it), classes "class_000", ...
    """
    if n < 1 or dim < 1 or num_classes < 1:
        raise UserError(f"need n, dim, num_classes >= 1; got {n}, {dim}, {num_classes}.")
    if segments is not None and sum(segments) != dim:
        raise UserError(f"segment sizes {tuple(segments)} sum to {sum(segments)}, not dim={dim}.")
    rng = np.random.default_rng(_seed_of(key_or_seed))
    freq = 1.0 / np.arange(1, num_classes + 1) ** float(imbalance)
    labels = rng.choice(num_classes, size=n, p=freq / freq.sum()).astype(np.int32)
    centres = rng.standard_normal((num_classes, dim), dtype=np.float32) * np.float32(class_sep)
    x = np.empty((n, dim), dtype)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        x[start:stop] = centres[labels[start:stop]] + np.float32(noise) * rng.standard_normal(
            (stop - start, dim), dtype=np.float32)
    width = len(str(num_classes - 1))
    names = [f"class_{i:0{max(3, width)}d}" for i in range(num_classes)]
    segs = None if segments is None else [
        Segment(f"part{i}", int(s)) for i, s in enumerate(segments)]
    info = dict(source="synthetic", seed=_seed_of(key_or_seed), class_sep=class_sep, noise=noise,
                imbalance=imbalance)
    return EmbeddingDataset(x, labels, names, ids=None, segments=segs, info=info).validate(
        where="synthetic dataset")
