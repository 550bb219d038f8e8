"""The embedding dataset format: the contract between extraction and training.

A dataset is a directory (or, for convenience, a single `.npz` file) holding

- `embeddings.npy`  float [N, D]   one row per item (memory-mapped on load)
- `labels.npy`      int   [N]      class ids in [0, C)
- `ids.npy`         str   [N]      optional item ids (unique)
- `meta.json`       {"format_version": 1, "class_names": [C names],
                     "segments": [{"name": "title", "size": 768}, ...] | null, "info": {...}}

`segments` names the concatenated parts of each embedding (title | description | image), in
order; their sizes sum to D. `info` is free-form provenance (the extraction fingerprint, the
models used, counts of dropped items).

Everything is validated on save and on load: NaN or Inf rows, labels outside [0, C), ragged or
empty arrays, mismatched lengths, duplicate ids or class names, segments that do not add up.
Files are written atomically, so an interrupted save leaves no partial dataset behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from embaug_jax.util import atomic_path, list_first

FORMAT_VERSION = 1
_EMBEDDINGS, _LABELS, _IDS, _META = "embeddings.npy", "labels.npy", "ids.npy", "meta.json"
# Rows checked for NaN/Inf per chunk, so validating a memory-mapped file stays within memory.
_CHUNK_ROWS = 65536


@dataclasses.dataclass(frozen=True)
class Segment:
    """One named part of a concatenated embedding."""

    name: str
    size: int


@dataclasses.dataclass
class EmbeddingDataset:
    """Embeddings with labels, in memory or memory-mapped."""

    embeddings: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    ids: np.ndarray | None = None
    segments: list[Segment] | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def segment_sizes(self) -> tuple[int, ...] | None:
        return None if self.segments is None else tuple(s.size for s in self.segments)

    def validate(self, *, where: str = "dataset") -> "EmbeddingDataset":
        """Raises ValueError describing every problem found; returns self when valid."""
        _validate(self, where)
        return self


def class_ids(names: Sequence[str], class_names: Sequence[str], *,
              what: str = "label") -> np.ndarray:
    """int64 [N]: the index of each of `names` in `class_names` (labels are stored as these ids).

    A name that is not a class is a ValueError naming it (as `what`) and the known classes.
    """
    lookup = {c: i for i, c in enumerate(class_names)}
    unknown = sorted({str(n) for n in names if n not in lookup})
    if unknown:
        raise ValueError(f"{what} {list_first(repr(n) for n in unknown)} is not a class name "
                         f"(known: {list_first(class_names)}).")
    return np.array([lookup[n] for n in names], np.int64).reshape(len(names))


def _as_segments(segments: Any) -> list[Segment] | None:
    if segments is None:
        return None
    out = []
    for s in segments:
        if isinstance(s, Segment):
            out.append(s)
        elif isinstance(s, Mapping):
            out.append(Segment(str(s["name"]), int(s["size"])))
        else:
            name, size = s
            out.append(Segment(str(name), int(size)))
    return out


def _nonfinite_rows(embeddings: np.ndarray) -> np.ndarray:
    bad = []
    for start in range(0, embeddings.shape[0], _CHUNK_ROWS):
        chunk = np.asarray(embeddings[start:start + _CHUNK_ROWS])
        rows = np.nonzero(~np.isfinite(chunk).all(axis=1))[0]
        bad.append(rows + start)
    return np.concatenate(bad) if bad else np.zeros((0,), np.int64)


def _validate(ds: EmbeddingDataset, where: str) -> None:
    emb, labels = ds.embeddings, ds.labels
    if not isinstance(emb, np.ndarray) or emb.ndim != 2:
        raise ValueError(f"{where}: `embeddings` must be a 2-D array [N, D]; got shape "
                         f"{getattr(emb, 'shape', None)} ({type(emb).__name__}).")
    if emb.shape[0] == 0 or emb.shape[1] == 0:
        raise ValueError(f"{where}: `embeddings` is empty (shape {emb.shape}); a dataset needs "
                         "at least one row and one column.")
    if not np.issubdtype(emb.dtype, np.floating):
        raise ValueError(f"{where}: `embeddings` must be floating point; got dtype {emb.dtype}.")
    if not isinstance(labels, np.ndarray) or labels.ndim != 1:
        raise ValueError(f"{where}: `labels` must be a 1-D array [N] of class ids; got shape "
                         f"{getattr(labels, 'shape', None)}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: `labels` must be integer class ids; got dtype {labels.dtype}. "
                         "Map class names to ids with their index in `class_names`.")
    n = emb.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"{where}: mismatched lengths: `embeddings` has {n} rows but `labels` "
                         f"has {labels.shape[0]}.")
    names = list(ds.class_names)
    if not names:
        raise ValueError(f"{where}: `class_names` is empty.")
    if not all(isinstance(c, str) and c for c in names):
        raise ValueError(f"{where}: every class name must be a non-empty string.")
    if len(set(names)) != len(names):
        dups = sorted({c for c in names if names.count(c) > 1})
        raise ValueError(f"{where}: duplicate class names: {list_first(dups)}.")
    bad = np.nonzero((labels < 0) | (labels >= len(names)))[0]
    if bad.size:
        raise ValueError(f"{where}: labels outside [0, {len(names)}) in rows {list_first(bad)} "
                         f"(values {list_first(np.unique(labels[bad]))}).")
    bad = _nonfinite_rows(emb)
    if bad.size:
        raise ValueError(f"{where}: NaN or Inf embeddings in {bad.size} row(s): {list_first(bad)}. "
                         "Re-extract those items or drop them before saving.")
    if ds.ids is not None:
        ids = ds.ids
        if ids.ndim != 1 or ids.shape[0] != n:
            raise ValueError(f"{where}: mismatched lengths: `ids` has shape {ids.shape} but there "
                             f"are {n} embeddings.")
        uniq, counts = np.unique(ids, return_counts=True)
        if uniq.size != n:
            raise ValueError(f"{where}: duplicate ids: {list_first(uniq[counts > 1])}.")
    if ds.segments is not None:
        seg_names = [s.name for s in ds.segments]
        if not ds.segments or any(s.size <= 0 for s in ds.segments):
            raise ValueError(f"{where}: segments must be a non-empty list of positive sizes; "
                             f"got {ds.segments}.")
        if len(set(seg_names)) != len(seg_names):
            raise ValueError(f"{where}: duplicate segment names {seg_names}.")
        total = sum(s.size for s in ds.segments)
        if total != emb.shape[1]:
            raise ValueError(f"{where}: segment sizes {[s.size for s in ds.segments]} sum to "
                             f"{total}, but the embeddings have D={emb.shape[1]} columns.")


def _meta(ds: EmbeddingDataset) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "class_names": list(ds.class_names),
        "segments": None if ds.segments is None else [dataclasses.asdict(s) for s in ds.segments],
        "info": ds.info,
    }


def save_embeddings(
    path: str | os.PathLike,
    embeddings: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    ids: Iterable | None = None,
    segments: Sequence[Segment | Mapping | tuple[str, int]] | None = None,
    info: Mapping[str, Any] | None = None,
) -> EmbeddingDataset:
    """Validates and writes a dataset atomically; `path` ending in `.npz` writes one file.

    Returns the dataset as written (in memory).
    """
    ds = EmbeddingDataset(
        embeddings=np.asarray(embeddings),
        labels=np.asarray(labels),
        class_names=[str(c) for c in class_names],
        ids=None if ids is None else np.asarray([str(i) for i in ids]),
        segments=_as_segments(segments),
        info=dict(info or {}),
    )
    ds.validate(where=f"save_embeddings({path})")
    try:
        json.dumps(ds.info)
    except TypeError as e:
        raise ValueError(f"save_embeddings({path}): `info` must be JSON-serialisable: {e}") from e
    path = Path(path)
    if path.suffix == ".npz":
        with atomic_path(path) as tmp:  # tmp keeps the .npz name, so savez adds none
            arrays = {"embeddings": ds.embeddings, "labels": ds.labels,
                      "meta": np.asarray(json.dumps(_meta(ds)))}
            if ds.ids is not None:
                arrays["ids"] = ds.ids
            np.savez(tmp, **arrays)
        return ds
    if path.exists() and not path.is_dir():
        raise ValueError(f"save_embeddings: {path} exists and is not a directory.")
    with atomic_path(path) as tmp:
        tmp.mkdir()
        np.save(tmp / _EMBEDDINGS, ds.embeddings)
        np.save(tmp / _LABELS, ds.labels)
        if ds.ids is not None:
            np.save(tmp / _IDS, ds.ids)
        (tmp / _META).write_text(json.dumps(_meta(ds), indent=2) + "\n")
    return ds


def _from_meta(meta: Any, where: str) -> tuple[list[str], list[Segment] | None, dict]:
    if not isinstance(meta, dict) or "class_names" not in meta:
        raise ValueError(f"{where}: metadata has no `class_names`; is this an embaug_jax dataset?")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{where}: unsupported format_version {version!r} (this code reads "
                         f"{FORMAT_VERSION}).")
    try:
        segments = _as_segments(meta.get("segments"))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: malformed `segments` in metadata: {e}") from e
    return list(meta["class_names"]), segments, dict(meta.get("info") or {})


def load_embeddings(path: str | os.PathLike, *, mmap: bool = True,
                    validate: bool = True) -> EmbeddingDataset:
    """Reads a dataset directory or `.npz`; large directory arrays are memory-mapped."""
    path = Path(path)
    where = f"load_embeddings({path})"
    if not path.exists():
        raise FileNotFoundError(f"{where}: no such file or directory. Create one with "
                                "`embaug extract` or `embaug_jax.save_embeddings`.")
    if not path.is_dir() and path.suffix != ".npz":
        raise ValueError(f"{where}: expected a dataset directory (embeddings.npy, labels.npy, "
                         "meta.json) or a .npz file written by save_embeddings.")
    if path.is_dir():
        missing = [f for f in (_EMBEDDINGS, _LABELS, _META) if not (path / f).exists()]
        if missing:
            raise FileNotFoundError(f"{where}: missing {', '.join(missing)}; a dataset "
                                    f"directory holds {_EMBEDDINGS}, {_LABELS}, {_META} and "
                                    f"optionally {_IDS}.")
    try:
        if path.is_dir():
            mode = "r" if mmap else None
            embeddings = np.load(path / _EMBEDDINGS, mmap_mode=mode, allow_pickle=False)
            labels = np.load(path / _LABELS, allow_pickle=False)
            ids = (np.load(path / _IDS, allow_pickle=False)
                   if (path / _IDS).exists() else None)
            meta = json.loads((path / _META).read_text())
        else:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in ("embeddings", "labels", "meta") if k not in z.files]
                if missing:
                    raise ValueError(f"{where}: missing arrays {missing}; found {z.files}.")
                embeddings, labels = z["embeddings"], z["labels"]
                ids = z["ids"] if "ids" in z.files else None
                meta = json.loads(str(z["meta"]))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: unreadable or corrupt dataset: {e}") from e
    class_names, segments, info = _from_meta(meta, where)
    ds = EmbeddingDataset(embeddings, labels, class_names, ids, segments, info)
    return ds.validate(where=where) if validate else ds
