"""What every source returns: items (id, text fields, image fields, label) and their fields."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from embaug_jax.util import UserError, list_first


@dataclasses.dataclass(frozen=True)
class ImageField:
    """One image per item: file paths (decoded lazily) or an in-memory uint8 array loader.

    Exactly one of `paths` / `loader` is set. `paths[i]` is None when the item names no image
    (an empty cell): the pipeline treats it as a missing image.
    """

    paths: tuple[str | None, ...] | None = None
    loader: Callable[[np.ndarray], np.ndarray] | None = None  # indices -> uint8 [n, H, W, 3]
    count: int = 0

    def __post_init__(self):
        if (self.paths is None) == (self.loader is None):
            raise UserError("ImageField needs exactly one of `paths` or `loader`.")

    def __len__(self) -> int:
        return len(self.paths) if self.paths is not None else self.count

    def subset(self, indices: np.ndarray) -> ImageField:
        indices = np.asarray(indices, np.int64)
        if self.paths is not None:
            return ImageField(paths=tuple(self.paths[i] for i in indices))
        parent = self.loader
        return ImageField(loader=lambda idx: parent(indices[np.asarray(idx, np.int64)]),
                          count=len(indices))


@dataclasses.dataclass
class SourceData:
    """Items of a data source, all fields aligned on the item axis.

    Attributes:
      ids: [N] str, unique.
      labels: [N] str, each one of `class_names`.
      class_names: the classes, in the source's canonical order.
      texts: {field name: N strings}, in the source's field order.
      images: {field name: ImageField}, in the source's field order.
      dropped: reason -> number of items the source left out.
      notes: reason -> number of items kept but worth knowing about (e.g. empty texts).
      info: free-form description of where the items came from (stored in the dataset's info).
    """

    ids: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    texts: dict[str, list[str]]
    images: dict[str, ImageField]
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    notes: dict[str, int] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=str)
        self.labels = np.asarray(self.labels, dtype=str)
        n = len(self.ids)
        lengths = {"labels": len(self.labels),
                   **{f"text {k!r}": len(v) for k, v in self.texts.items()},
                   **{f"image {k!r}": len(v) for k, v in self.images.items()}}
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise UserError(f"Source fields disagree on the number of items: ids has {n}, {bad}.")
        unique, counts = np.unique(self.ids, return_counts=True)
        if len(unique) != n:
            raise UserError(f"Item ids must be unique; repeated: {list_first(unique[counts > 1])}. "
                            "Pick another id column (or none: row numbers are used).")
        unknown = sorted(set(self.labels.tolist()) - set(self.class_names))
        if unknown:
            raise UserError(f"Labels {list_first(unknown)} are not among class_names.")
        overlap = set(self.texts) & set(self.images)
        if overlap:
            raise UserError(f"Field names used for both text and images: {sorted(overlap)}.")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def fields(self) -> list[str]:
        return [*self.texts, *self.images]

    def subset(self, indices: np.ndarray) -> SourceData:
        """The items at `indices` (in that order); counts and info carry over."""
        indices = np.asarray(indices, np.int64)
        return SourceData(
            ids=self.ids[indices], labels=self.labels[indices], class_names=list(self.class_names),
            texts={k: [v[i] for i in indices] for k, v in self.texts.items()},
            images={k: v.subset(indices) for k, v in self.images.items()},
            dropped=dict(self.dropped), notes=dict(self.notes), info=dict(self.info))


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


