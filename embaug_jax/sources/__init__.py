"""Data sources: turn a data set on disk into items (id, text fields, image fields, label).

`load_source(config)` dispatches on `config.source.kind`:

- "table": a CSV, TSV, JSONL or Parquet file -- how users bring their own data.
- "wordnet": Debian's `wordnet-base` (one item per synset, labelled by lexicographer file).
- "fashion_products": the Kaggle "Fashion Product Images" layout (the paper's data set).
- "tfds": any TensorFlow Datasets set through `tfds.data_source` (no TensorFlow needed).
- "fashion_mnist": Debian's `dataset-fashion-mnist` IDX files.

Every source returns a `SourceData`. What a source drops, and what it keeps but flags, is counted
in `SourceData.dropped` / `SourceData.notes` (reason -> count) rather than silently absorbed;
the extraction pipeline logs both and stores them in the dataset's `info`.

A table is read in batches, never whole: its items' texts and image paths are
`StreamedColumn`s, read from the file again when asked (`take(column, indices)` reads a shard's
in one pass), so a table larger than memory can be embedded.

Every source also takes the same sampling knobs, applied after loading and before anything
expensive (reading descriptions, decoding images): `min_class_size` (drop classes with fewer
items), `per_class` (keep at most this many per class) and `max_items` (then keep this many in
all, spread evenly over the classes -- a small class keeps all its items and its unused share
goes to the others), drawn with `seed`. Kept items stay in source order.
"""
from __future__ import annotations

from typing import Any

from embaug_jax.sources.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from embaug_jax.sources.fashion_products import load_fashion_products
from embaug_jax.sources.items import (
    ImageField,
    SourceData,
    StreamedColumn,
    sort_class_names,
    split_names,
    take,
)
from embaug_jax.sources.sampling import select_items
from embaug_jax.sources.table import load_table
from embaug_jax.sources.tfds import load_tfds
from embaug_jax.sources.wordnet import WORDNET_LEXNAMES, load_wordnet
from embaug_jax.util import UserError

SOURCE_KINDS = ("table", "wordnet", "fashion_products", "tfds", "fashion_mnist")
__all__ = ["FASHION_MNIST_CLASSES", "ImageField", "SOURCE_KINDS", "SourceData", "StreamedColumn",
           "WORDNET_LEXNAMES", "load_fashion_mnist", "load_fashion_products", "load_source",
           "load_table", "load_tfds", "load_wordnet", "select_items", "sort_class_names",
           "split_names", "take"]

_LOADERS = {"table": load_table, "wordnet": load_wordnet,
            "fashion_products": load_fashion_products, "tfds": load_tfds,
            "fashion_mnist": load_fashion_mnist}


def load_source(config: Any) -> SourceData:
    """Loads `config.source` (a ConfigDict with `kind` and that kind's knobs)."""
    if "source" not in config:
        raise UserError("The config has no `source` section (see configs/extract/common.py).")
    src = config.source
    kind = str(src.kind)
    if kind not in _LOADERS:
        raise UserError(f"config.source.kind={kind!r} is not a known source; choose one of "
                        f"{list(_LOADERS)}.")
    return _LOADERS[kind](src)
