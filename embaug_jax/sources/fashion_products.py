"""The Kaggle "Fashion Product Images" layout (the paper's data set)."""

from __future__ import annotations

import html
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from embaug_jax.sources.items import (
    ImageField,
    SourceData,
    add_count,
    sort_class_names,
)
from embaug_jax.sources.sampling import apply_sampling
from embaug_jax.sources.table_reader import decode_text
from embaug_jax.util import UserError, check_input

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def strip_html(text: str) -> str:
    """Plain text of an HTML fragment: tags become spaces, entities are unescaped."""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()


def _fashion_description(path: Path) -> str | None:
    try:
        check_input(path, "an item's description JSON")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        value = data["data"]["productDescriptors"]["description"]["value"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return strip_html(value) if isinstance(value, str) else None


def load_fashion_products(src: Any) -> SourceData:
    """Kaggle "Fashion Product Images": styles.csv, styles/<id>.json, images/<id>.jpg.

    Text fields "title" (productDisplayName) and "description" (the JSON's
    data.productDescriptors.description.value, HTML stripped); image field "image". Knobs:
    `root`; `label_column` (default "articleType"; any styles.csv column); `images` (default
    True); the shared sampling knobs. styles.csv rows with extra commas (product names with
    commas, as in the real file) are repaired by joining the surplus into productDisplayName and
    counted; rows without a label are dropped and counted; a missing or description-less JSON
    gives an empty description, counted.
    """
    import pandas as pd

    root = Path(str(src.root))
    styles = root / "styles.csv"
    check_input(styles, "the Kaggle styles table",
                missing=f"{styles} does not exist: config.source.root must be the folder holding "
                        "styles.csv, styles/ and images/ (the Kaggle layout).")
    notes: dict[str, int] = {}
    dropped: dict[str, int] = {}
    text = decode_text(styles.read_bytes(), styles, "utf-8", "strict")
    header = text.split("\n", 1)[0].strip().split(",")

    def repair(fields: list[str]) -> list[str] | None:
        # The real file has product names with commas: the name is the last column, so the
        # surplus fields belong to it.
        add_count(notes, "styles.csv rows with extra commas (repaired)")
        return fields[:len(header) - 1] + [",".join(fields[len(header) - 1:])]

    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False,
                        on_bad_lines=repair, engine="python")
    label_column = str(src.label_column)
    required = ["id", "productDisplayName", label_column]
    unknown = [c for c in required if c not in frame.columns]
    if unknown:
        raise UserError(f"{styles} has no column(s) {unknown}; its columns are "
                        f"{list(frame.columns)}.")
    labels = frame[label_column].str.strip().tolist()
    has_label = np.array([bool(v) for v in labels])
    add_count(dropped, "missing label", (~has_label).sum())
    frame = frame[has_label].reset_index(drop=True)
    labels = [v for v, k in zip(labels, has_label) if k]
    indices, sampled = apply_sampling(labels, src)
    frame = frame.iloc[indices].reset_index(drop=True)
    for reason, count in sampled.items():
        add_count(dropped, reason, count)
    ids = frame["id"].str.strip().tolist()
    titles = frame["productDisplayName"].str.strip().tolist()
    add_count(notes, "empty text 'title' (kept as '')", sum(1 for t in titles if not t))
    from tqdm.auto import tqdm

    descriptions = []
    for item_id in tqdm(ids, desc="read descriptions", unit="item", leave=False,
                        disable=len(ids) < 1000):
        description = _fashion_description(root / "styles" / f"{item_id}.json")
        if description is None:
            add_count(notes, "no description JSON / value (kept as '')")
        elif not description:
            add_count(notes, "empty text 'description' (kept as '')")
        descriptions.append(description or "")
    images = {}
    if src.images:
        images["image"] = ImageField(paths=tuple(str(root / "images" / f"{i}.jpg") for i in ids))
    labels = frame[label_column].str.strip().tolist()
    data = SourceData(ids=ids, labels=labels, class_names=sort_class_names(labels),
                      texts={"title": titles, "description": descriptions}, images=images,
                      dropped=dropped, notes=notes,
                      info={"kind": "fashion_products", "root": str(root.resolve()),
                            "label_column": label_column})
    if len(data) == 0:
        raise UserError(f"{styles}: no items left (dropped: {dropped}).")
    return data


