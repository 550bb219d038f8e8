"""Debian's dataset-fashion-mnist IDX files."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from embaug_jax.sources.items import ImageField, SourceData, check_choice
from embaug_jax.sources.sampling import finish
from embaug_jax.util import UserError, check_input

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array (uint8 data only, as MNIST uses)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of uint8 data.")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: header says {shape}, found {body.size} values.")
    return body.reshape(shape)


def load_fashion_mnist(src: Any) -> SourceData:
    """Fashion-MNIST from IDX gz files: 28x28 grey images as RGB uint8, the 10 class names.

    Knobs: `root` (default /usr/share/datasets/fashion-mnist), `split` ("train" or "test"),
    plus the shared sampling knobs (e.g. `max_items`). Ids are "train.00042" style.
    """
    root = Path(str(src.root))
    split = check_choice("split", str(src.split), ("train", "test"))
    prefix = "train" if split == "train" else "t10k"
    image_path = root / f"{prefix}-images-idx3-ubyte.gz"
    label_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    for p in (image_path, label_path):
        check_input(p, "a Fashion-MNIST file",
                    missing=f"{p} is missing: install Fashion-MNIST with `sudo apt-get install "
                            "dataset-fashion-mnist` (or set config.source.root).")
    pixels, label_ids = read_idx(image_path), read_idx(label_path)
    if pixels.ndim != 3 or label_ids.ndim != 1 or len(pixels) != len(label_ids):
        raise UserError(f"{root}: images {pixels.shape} and labels {label_ids.shape} disagree.")
    if label_ids.max(initial=0) >= len(FASHION_MNIST_CLASSES):
        raise UserError(f"{label_path}: labels outside 0..9.")

    def load_images(indices: np.ndarray) -> np.ndarray:
        return np.repeat(pixels[np.asarray(indices, np.int64)][..., None], 3, axis=-1)

    labels = [FASHION_MNIST_CLASSES[i] for i in label_ids]
    data = SourceData(ids=[f"{split}.{i:05d}" for i in range(len(labels))], labels=labels,
                      class_names=list(FASHION_MNIST_CLASSES), texts={},
                      images={"image": ImageField(loader=load_images, count=len(labels))},
                      info={"kind": "fashion_mnist", "root": str(root), "split": split})
    return finish(data, src)


