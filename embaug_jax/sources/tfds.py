"""Any TensorFlow Datasets set through `tfds.data_source` (no TensorFlow needed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from embaug_jax.sources.items import (
    ImageField,
    SourceData,
    add_count,
    split_names,
    to_rgb,
)
from embaug_jax.sources.sampling import finish
from embaug_jax.util import UserError


def load_tfds(src: Any) -> SourceData:
    """A TFDS split through `tfds.data_source` (ArrayRecord; no TensorFlow needed).

    Knobs: `name`, `split` (default "train"), `data_dir` ("" = TFDS's default), `text_features`,
    `image_feature` ("" = none), `label_feature` (a ClassLabel feature; default "label"),
    `id_feature` ("" = the record index), plus the shared sampling knobs. Images are read lazily,
    record by record; grey images become RGB.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("The tfds source needs tensorflow-datasets and array-record: "
                          "pip install 'embaug_jax[tfds]'.") from e
    name = str(src.name)
    if not name:
        raise UserError("config.source.name is required for a tfds source (e.g. 'imdb_reviews').")
    split = str(src.split)
    data_dir = str(src.data_dir) or None
    try:
        records = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except (NotImplementedError, AssertionError, FileNotFoundError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"TFDS {name!r} (split {split!r}, data_dir {data_dir or 'default'}) cannot be opened: "
            f"{first_line} tfds.data_source reads sets prepared in ArrayRecord format: run "
            f"`tfds build {name} --file_format=array_record` once, or point "
            "config.source.data_dir at a prepared copy.") from e
    features = records.dataset_info.features
    text_features = split_names(src.text_features)
    image_feature = str(src.image_feature)
    label_feature = str(src.label_feature)
    id_feature = str(src.id_feature)
    wanted = [*text_features, *([image_feature] if image_feature else []), label_feature,
              *([id_feature] if id_feature else [])]
    unknown = [f for f in wanted if f not in features]
    if unknown:
        raise UserError(f"TFDS {name} has no feature(s) {unknown}; its features are "
                        f"{list(features)}.")
    if not text_features and not image_feature:
        raise UserError("Set config.source.text_features and/or config.source.image_feature.")
    class_names = getattr(features[label_feature], "names", None)
    if not class_names:
        raise UserError(f"TFDS feature {label_feature!r} is not a ClassLabel; pick one that is.")

    def as_text(value: Any) -> str:
        if isinstance(value, np.ndarray):
            value = value.item()
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)

    # Text and labels are small: read them in one pass (without decoding images).
    n = len(records)
    scalar_keys = [*text_features, label_feature, *([id_feature] if id_feature else [])]
    columns: dict[str, list[Any]] = {k: [] for k in scalar_keys}
    from tqdm.auto import tqdm

    for i in tqdm(range(n), desc=f"read {name}", unit="record", leave=False, disable=n < 1000):
        record = records[i]
        for k in scalar_keys:
            columns[k].append(record[k])
    labels = [class_names[int(v)] for v in columns[label_feature]]
    ids = [as_text(v) for v in columns[id_feature]] if id_feature else [str(i) for i in range(n)]
    texts = {k: [as_text(v) for v in columns[k]] for k in text_features}
    notes: dict[str, int] = {}
    for k, values in texts.items():
        add_count(notes, f"empty text '{k}' (kept as '')",
                  sum(1 for v in values if not v.strip()))
    images = {}
    if image_feature:
        def load_images(indices: np.ndarray) -> np.ndarray:
            arrays = [np.asarray(records[int(i)][image_feature]) for i in indices]
            return np.stack([to_rgb(a) for a in arrays])

        images[image_feature] = ImageField(loader=load_images, count=n)
    data = SourceData(ids=ids, labels=labels, class_names=list(class_names), texts=texts,
                      images=images, notes=notes,
                      info={"kind": "tfds", "name": name, "split": split})
    return finish(data, src)


