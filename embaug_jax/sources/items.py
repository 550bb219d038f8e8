"""What every source returns: items (id, text fields, image fields, label) and their fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from embaug_jax.util import UserError, list_first, repeated_values


# Values read from a streamed column at a time when it is iterated.
_STREAM_CHUNK = 4096


class StreamedColumn(Sequence):
    """A field's values read from where they are stored when asked, not held in memory: the
    text or image-path column of a table too large to hold.

    `store.values(name, rows)` returns the values at `rows`, ascending row numbers of the
    store (repeats allowed); the column holds only its items' row numbers. Reading the items
    in order (iterating, or `take` of ascending indices, shard after shard) reads the store
    once, front to back. A column equals any sequence of the same values.
    """

    def __init__(self, store: Any, name: str, rows: np.ndarray):
        self.store, self.name, self.rows = store, name, np.asarray(rows, np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.take(range(*index.indices(len(self))))
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} values")
        return self.take([index % len(self)])[0]

    def take(self, indices: Sequence[int] | np.ndarray) -> list:
        """The values at `indices` (positions in this column), in that order."""
        positions = self.rows[np.asarray(indices, np.int64)]
        if len(positions) < 2 or np.all(positions[1:] >= positions[:-1]):
            return list(self.store.values(self.name, positions))
        order = np.argsort(positions, kind="stable")
        out: list = [None] * len(positions)
        for k, value in zip(order.tolist(), self.store.values(self.name, positions[order])):
            out[k] = value
        return out

    def __iter__(self) -> Iterator:
        for start in range(0, len(self), _STREAM_CHUNK):
            yield from self.take(np.arange(start, min(start + _STREAM_CHUNK, len(self))))

    def subset(self, indices: np.ndarray, shared: dict | None = None) -> StreamedColumn:
        """The column of the items at `indices`; columns of one `shared` dict that had the same
        row numbers share the new ones too."""
        shared = {} if shared is None else shared
        key = id(self.rows)
        if key not in shared:
            shared[key] = (self.rows, self.rows[np.asarray(indices, np.int64)])
        return StreamedColumn(self.store, self.name, shared[key][1])

    def __eq__(self, other) -> bool:
        if isinstance(other, (str, bytes)) or not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        return f"StreamedColumn({self.name!r}, {len(self)} values)"


def take(values: Sequence, indices: Sequence[int] | np.ndarray) -> list:
    """`[values[i] for i in indices]`; a streamed column reads them in one pass."""
    if isinstance(values, StreamedColumn):
        return values.take(indices)
    return [values[i] for i in np.asarray(indices, np.int64).tolist()]


def _subset_values(values: Sequence, indices: np.ndarray, shared: dict) -> Sequence:
    if isinstance(values, StreamedColumn):
        return values.subset(indices, shared)
    return [values[i] for i in indices.tolist()]


@dataclasses.dataclass(frozen=True)
class ImageField:
    """One image per item: file paths (decoded lazily) or an in-memory uint8 array loader.

    Exactly one of `paths` / `loader` is set. `paths[i]` is None when the item names no image
    (an empty cell): the pipeline treats it as a missing image. `paths` is a tuple, or a
    `StreamedColumn` for a table's image column.
    """

    paths: Sequence[str | None] | None = None
    loader: Callable[[np.ndarray], np.ndarray] | None = None  # indices -> uint8 [n, H, W, 3]
    count: int = 0

    def __post_init__(self):
        if (self.paths is None) == (self.loader is None):
            raise UserError("ImageField needs exactly one of `paths` or `loader`.")

    def __len__(self) -> int:
        return len(self.paths) if self.paths is not None else self.count

    def subset(self, indices: np.ndarray, shared: dict | None = None) -> ImageField:
        indices = np.asarray(indices, np.int64)
        if isinstance(self.paths, StreamedColumn):
            return ImageField(paths=self.paths.subset(indices, shared))
        if self.paths is not None:
            return ImageField(paths=tuple(self.paths[i] for i in indices))
        parent = self.loader
        return ImageField(loader=lambda idx: parent(indices[np.asarray(idx, np.int64)]),
                          count=len(indices))


class SourceData:
    """Items of a data source, all fields aligned on the item axis.

    Attributes:
      ids: [N] str, unique.
      label_ids: int32 [N], each item's index into `class_names` (`labels` names them).
      class_names: the classes, in the source's canonical order.
      texts: {field name: N strings}, in the source's field order: lists, or `StreamedColumn`s
        read from a table when asked.
      images: {field name: ImageField}, in the source's field order.
      dropped: reason -> number of items the source left out.
      notes: reason -> number of items kept but worth knowing about (e.g. empty texts).
      info: free-form description of where the items came from (stored in the dataset's info).

    Built from label names (`labels=`, each one of `class_names`) or from their indices
    (`label_ids=`); memory then grows with the items' ids and the classes, not their labels.
    """

    def __init__(self, *, ids: Sequence[str] | np.ndarray, class_names: Sequence[str],
                 texts: dict[str, Sequence[str]], images: dict[str, ImageField],
                 labels: Sequence[str] | np.ndarray | None = None,
                 label_ids: np.ndarray | None = None, dropped: dict[str, int] | None = None,
                 notes: dict[str, int] | None = None, info: dict[str, Any] | None = None):
        self.ids = np.asarray(ids, dtype=str)
        self.class_names = list(class_names)
        self.texts, self.images = dict(texts), dict(images)
        self.dropped, self.notes = dict(dropped or {}), dict(notes or {})
        self.info = dict(info or {})
        if (labels is None) == (label_ids is None):
            raise UserError("SourceData needs exactly one of `labels` or `label_ids`.")
        if labels is not None:
            lookup = {c: i for i, c in enumerate(self.class_names)}
            labels = np.asarray(labels, dtype=str).tolist()
            unknown = sorted({label for label in labels if label not in lookup})
            if unknown:
                raise UserError(f"Labels {list_first(unknown)} are not among class_names.")
            label_ids = np.array([lookup[label] for label in labels], np.int32)
        self.label_ids = np.asarray(label_ids, np.int32).reshape(-1)
        n = len(self.ids)
        lengths = {"labels": len(self.label_ids),
                   **{f"text {k!r}": len(v) for k, v in self.texts.items()},
                   **{f"image {k!r}": len(v) for k, v in self.images.items()}}
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise UserError(f"Source fields disagree on the number of items: ids has {n}, {bad}.")
        if len(self.label_ids) and not (0 <= self.label_ids.min()
                                        and self.label_ids.max() < len(self.class_names)):
            raise UserError(f"label_ids must index class_names (0..{len(self.class_names) - 1}).")
        repeated = repeated_values(self.ids)
        if len(repeated):
            raise UserError(f"Item ids must be unique; repeated: {list_first(repeated)}. "
                            "Pick another id column (or none: row numbers are used).")
        overlap = set(self.texts) & set(self.images)
        if overlap:
            raise UserError(f"Field names used for both text and images: {sorted(overlap)}.")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labels(self) -> np.ndarray:
        """[N] str: each item's class name."""
        return np.asarray(self.class_names, dtype=str)[self.label_ids]

    @property
    def fields(self) -> list[str]:
        return [*self.texts, *self.images]

    def subset(self, indices: np.ndarray) -> SourceData:
        """The items at `indices` (in that order); counts and info carry over."""
        indices = np.asarray(indices, np.int64)
        shared: dict = {}
        return SourceData(
            ids=self.ids[indices], label_ids=self.label_ids[indices],
            class_names=list(self.class_names),
            texts={k: _subset_values(v, indices, shared) for k, v in self.texts.items()},
            images={k: v.subset(indices, shared) for k, v in self.images.items()},
            dropped=dict(self.dropped), notes=dict(self.notes), info=dict(self.info))

    def drop_empty_classes(self) -> None:
        """Removes the classes no item has from `class_names` (in place), keeping their order."""
        counts = np.bincount(self.label_ids, minlength=len(self.class_names))
        new_index = np.cumsum(counts > 0, dtype=np.int32) - 1
        self.class_names = [c for c, n in zip(self.class_names, counts) if n]
        self.label_ids = new_index[self.label_ids]


def add_count(counter: dict[str, int], reason: str, n: int = 1) -> None:
    """Adds `n` items to `counter[reason]` (a source's dropped / notes counts); 0 adds no key."""
    if n:
        counter[reason] = counter.get(reason, 0) + int(n)


def split_names(value: Any) -> list[str]:
    """A config list knob: a comma-separated string, a list/tuple, or empty/None."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value]


def sort_class_names(labels: Sequence[str]) -> list[str]:
    """The distinct labels in natural order: "2" before "10", then case-insensitive text."""
    def key(name: str):
        return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name.casefold())

    return sorted(set(labels), key=lambda name: (key(name), name))


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """`value` if it is one of `choices`, else a UserError naming `config.source.<name>`."""
    if value not in choices:
        raise UserError(f"config.source.{name}={value!r} is not one of {list(choices)}.")
    return value


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] -> uint8 [H, W, 3]."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise UserError(f"Expected uint8 images, got {image.dtype}.")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise UserError(f"Expected an image [H, W, 1|3|4], got shape {image.shape}.")
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    return image[..., :3]


