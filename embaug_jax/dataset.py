"""The embedding dataset format: the contract between extraction and training.

A dataset is a directory (or, for convenience, a single `.npz` file) holding

- `embeddings.npy`  float [N, D]   one row per item (memory-mapped on load)
- `labels.npy`      int   [N]      class ids in [0, C)
- `ids.npy`         str   [N]      optional item ids (unique)
- `meta.json`       {"format_version": 1, "class_names": [C names],
                     "segments": [{"name": "title", "size": 768}, ...] | null, "info": {...}}

A `.npz` holds the same arrays, with the metadata as a JSON string `meta`; a plain `.npz` of
`embeddings`, `labels` and `class_names` (optionally `ids`, and `segments` as integer sizes with
optional `segment_names`) is a dataset too, as `np.savez` writes it.

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

from embaug_jax.util import (
    UserError,
    atomic_path,
    check_input,
    list_first,
    load_npy,
    load_npz,
    repeated_values,
)

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
        """Raises UserError (a ValueError) naming every problem found; returns self if valid."""
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
        raise UserError(f"{what} {list_first(repr(n) for n in unknown)} is not a class name "
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


def _validate(ds: EmbeddingDataset, where: str, *, values: bool = True) -> None:
    """Checks shapes, labels, ids and segments; `values=False` skips the NaN/Inf scan (done
    block by block by the caller)."""
    emb, labels = ds.embeddings, ds.labels
    if not isinstance(emb, np.ndarray) or emb.ndim != 2:
        raise UserError(f"{where}: `embeddings` must be a 2-D array [N, D]; got shape "
                        f"{getattr(emb, 'shape', None)} ({type(emb).__name__}).")
    if emb.shape[0] == 0 or emb.shape[1] == 0:
        raise UserError(f"{where}: `embeddings` is empty (shape {emb.shape}); a dataset needs "
                        "at least one row and one column.")
    if not np.issubdtype(emb.dtype, np.floating):
        raise UserError(f"{where}: `embeddings` must be floating point; got dtype {emb.dtype}.")
    if not isinstance(labels, np.ndarray) or labels.ndim != 1:
        raise UserError(f"{where}: `labels` must be a 1-D array [N] of class ids; got shape "
                        f"{getattr(labels, 'shape', None)}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{where}: `labels` must be integer class ids; got dtype {labels.dtype}. "
                        "Map class names to ids with their index in `class_names`.")
    n = emb.shape[0]
    if labels.shape[0] != n:
        raise UserError(f"{where}: mismatched lengths: `embeddings` has {n} rows but `labels` "
                        f"has {labels.shape[0]}.")
    names = list(ds.class_names)
    if not names:
        raise UserError(f"{where}: `class_names` is empty.")
    if not all(isinstance(c, str) and c for c in names):
        raise UserError(f"{where}: every class name must be a non-empty string.")
    if len(set(names)) != len(names):
        dups = sorted({c for c in names if names.count(c) > 1})
        raise UserError(f"{where}: duplicate class names: {list_first(dups)}.")
    bad = np.nonzero((labels < 0) | (labels >= len(names)))[0]
    if bad.size:
        raise UserError(f"{where}: labels outside [0, {len(names)}) in rows {list_first(bad)} "
                         f"(values {list_first(np.unique(labels[bad]))}).")
    bad = _nonfinite_rows(emb) if values else np.zeros((0,), np.int64)
    if bad.size:
        raise UserError(f"{where}: NaN or Inf embeddings in {bad.size} row(s): {list_first(bad)}. "
                        "Re-extract those items or drop them before saving.")
    if ds.ids is not None:
        ids = ds.ids
        if ids.ndim != 1 or ids.shape[0] != n:
            raise UserError(f"{where}: mismatched lengths: `ids` has shape {ids.shape} but there "
                            f"are {n} embeddings.")
        repeated = repeated_values(ids)  # no sorted copy of the ids, unlike np.unique
        if repeated.size:
            raise UserError(f"{where}: duplicate ids: {list_first(repeated)}.")
    if ds.segments is not None:
        seg_names = [s.name for s in ds.segments]
        if not ds.segments or any(s.size <= 0 for s in ds.segments):
            raise UserError(f"{where}: segments must be a non-empty list of positive sizes; "
                            f"got {ds.segments}.")
        if len(set(seg_names)) != len(seg_names):
            raise UserError(f"{where}: duplicate segment names {seg_names}.")
        total = sum(s.size for s in ds.segments)
        if total != emb.shape[1]:
            raise UserError(f"{where}: segment sizes {[s.size for s in ds.segments]} sum to "
                            f"{total}, but the embeddings have D={emb.shape[1]} columns.")


def _as_class_names(class_names: Any, where: str) -> list[str]:
    """A list of class names; one string (which would split into characters) is an error."""
    if isinstance(class_names, (str, bytes)) or (isinstance(class_names, np.ndarray)
                                                 and class_names.ndim != 1):
        raise UserError(f"{where}: `class_names` must be a list of names, one per class; got "
                        f"one {type(class_names).__name__} {str(class_names)[:60]!r}. Pass "
                        "e.g. ['cat', 'dog'].")
    names = list(class_names)
    if any(c is None for c in names):
        raise UserError(f"{where}: `class_names` holds None; every class needs a name.")
    return [c.decode() if isinstance(c, bytes) else str(c) for c in names]


def _as_ids(ids: Any, where: str) -> np.ndarray:
    """Item ids as strings; None ids (which would all become "None") are an error."""
    if isinstance(ids, (str, bytes)):
        raise UserError(f"{where}: `ids` must be one id per row, not one string {ids[:60]!r}.")
    ids = list(ids)
    missing = [i for i, v in enumerate(ids) if v is None or (isinstance(v, float) and np.isnan(v))]
    if missing:
        raise UserError(f"{where}: `ids` is None in {len(missing)} row(s) "
                        f"({list_first(missing)}); give every row an id, or pass "
                        "ids=None for no ids at all.")
    return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in ids])


def _meta(ds: EmbeddingDataset) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "class_names": list(ds.class_names),
        "segments": None if ds.segments is None else [dataclasses.asdict(s) for s in ds.segments],
        "info": ds.info,
    }


def is_saved_dataset(path: str | os.PathLike) -> bool:
    """Whether `path` is an embedding dataset that `save_embeddings` wrote, and nothing more.

    A folder qualifies when it holds only the format's files and its meta.json carries the
    format version; a `.npz` when it carries the `meta` record. This is what a new save may
    replace: anything else at the path (a user's folder, a plain `np.savez` file) is refused.
    """
    path = Path(path)
    if path.is_symlink():
        return False
    try:
        if path.is_dir():
            names = {p.name for p in path.iterdir()}
            if not ({_EMBEDDINGS, _LABELS, _META} <= names <= {_EMBEDDINGS, _LABELS, _IDS, _META}):
                return False
            return "format_version" in json.loads((path / _META).read_text())
        if path.is_file() and path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return "meta" in z.files and "format_version" in json.loads(str(z["meta"]))
    except (OSError, ValueError, TypeError, KeyError):  # unreadable: not ours to replace
        return False
    return False


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

    `embeddings` is an array [N, D], or a list of `.npy` files of row blocks [n_i, D] (an
    extraction's shards), which are concatenated into the dataset directory one block at a time:
    memory stays bounded by the largest block however large N is.

    Returns the dataset as written (in memory; memory-mapped when given blocks).
    """
    if isinstance(embeddings, (list, tuple)) and embeddings and all(
            isinstance(b, (str, os.PathLike)) for b in embeddings):
        return _save_blocks(path, [Path(b) for b in embeddings], labels, class_names, ids=ids,
                            segments=segments, info=info)
    where = f"save_embeddings({path})"
    ds = EmbeddingDataset(
        embeddings=np.asarray(embeddings),
        labels=np.asarray(labels),
        class_names=_as_class_names(class_names, where),
        ids=None if ids is None else _as_ids(ids, where),
        segments=_as_segments(segments),
        info=dict(info or {}),
    )
    ds.validate(where=where)
    try:
        json.dumps(ds.info)
    except TypeError as e:
        raise UserError(f"save_embeddings({path}): `info` must be JSON-serialisable: {e}") from e
    path = Path(path)
    if path.suffix == ".npz":
        # tmp keeps the .npz name, so savez adds none.
        with atomic_path(path, replace=is_saved_dataset) as tmp:
            arrays = {"embeddings": ds.embeddings, "labels": ds.labels,
                      "meta": np.asarray(json.dumps(_meta(ds)))}
            if ds.ids is not None:
                arrays["ids"] = ds.ids
            np.savez(tmp, **arrays)
        return ds
    if path.exists() and not path.is_dir():
        raise UserError(f"save_embeddings: {path} exists and is not a directory.")
    with atomic_path(path, replace=is_saved_dataset) as tmp:
        tmp.mkdir()
        np.save(tmp / _EMBEDDINGS, ds.embeddings)
        np.save(tmp / _LABELS, ds.labels)
        if ds.ids is not None:
            np.save(tmp / _IDS, ds.ids)
        (tmp / _META).write_text(json.dumps(_meta(ds), indent=2) + "\n")
    return ds


def _save_blocks(path: Path, blocks: list[Path], labels, class_names, *, ids, segments,
                 info) -> EmbeddingDataset:
    """`save_embeddings` from row blocks stored as .npy files: same bytes, one block in memory."""
    where = f"save_embeddings({path})"
    path = Path(path)
    if path.suffix == ".npz":  # a zip member cannot be streamed block by block
        return save_embeddings(path, np.concatenate([np.load(b) for b in blocks]), labels,
                               class_names, ids=ids, segments=segments, info=info)
    shapes = [np.load(b, mmap_mode="r") for b in blocks]  # headers only
    dims = {m.shape[1:] for m in shapes}
    dtypes = {m.dtype for m in shapes}
    if any(m.ndim != 2 for m in shapes) or len(dims) != 1 or len(dtypes) != 1:
        raise ValueError(f"{where}: the blocks must be 2-D with equal widths and dtypes; got "
                         f"{[(str(b), m.shape, str(m.dtype)) for b, m in zip(blocks, shapes)]}.")
    n, dim, dtype = sum(m.shape[0] for m in shapes), shapes[0].shape[1], shapes[0].dtype
    del shapes
    # A zero-stride stand-in of the right shape for the checks that need no values.
    ds = EmbeddingDataset(
        embeddings=np.broadcast_to(np.zeros((1, dim), dtype), (n, dim)),
        labels=np.asarray(labels), class_names=[str(c) for c in class_names],
        ids=None if ids is None else _str_array(ids),
        segments=_as_segments(segments), info=dict(info or {}))
    _validate(ds, where, values=False)
    try:
        json.dumps(ds.info)
    except TypeError as e:
        raise ValueError(f"{where}: `info` must be JSON-serialisable: {e}") from e
    if path.exists() and not path.is_dir():
        raise ValueError(f"save_embeddings: {path} exists and is not a directory.")
    with atomic_path(path, replace=is_saved_dataset) as tmp:
        tmp.mkdir()
        with open(tmp / _EMBEDDINGS, "wb") as f:
            # The header np.save writes for the whole array, then the rows block after block.
            np.lib.format.write_array_header_1_0(f, {
                "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                "shape": (n, dim)})
            start = 0
            for block_path in blocks:
                block = np.ascontiguousarray(np.load(block_path))
                bad = _nonfinite_rows(block)
                if bad.size:
                    raise ValueError(
                        f"{where}: NaN or Inf embeddings in {bad.size} row(s): "
                        f"{list_first(bad + start)}. Re-extract those items or drop them before "
                        "saving.")
                f.write(block.data)
                start += block.shape[0]
                del block
        np.save(tmp / _LABELS, ds.labels)
        if ds.ids is not None:
            np.save(tmp / _IDS, ds.ids)
        (tmp / _META).write_text(json.dumps(_meta(ds), indent=2) + "\n")
    return dataclasses.replace(ds, embeddings=np.load(path / _EMBEDDINGS, mmap_mode="r"))


def _str_array(ids: Iterable) -> np.ndarray:
    """Ids as a str array as wide as the longest (as `np.asarray` of their strings makes it);
    a str array is narrowed in place of a round trip through a list of Python strings, its
    lengths measured a chunk at a time."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "U" and ids.size:
        flat = ids.reshape(-1)
        width = max(int(np.char.str_len(flat[i:i + _CHUNK_ROWS]).max())
                    for i in range(0, flat.size, _CHUNK_ROWS))
        return ids.astype(f"<U{max(1, width)}", copy=False)
    return np.asarray([str(i) for i in ids])


def _from_meta(meta: Any, where: str) -> tuple[list[str], list[Segment] | None, dict]:
    if not isinstance(meta, dict) or "class_names" not in meta:
        raise UserError(f"{where}: metadata has no `class_names`; is this an embaug_jax dataset?")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(f"{where}: unsupported format_version {version!r} (this code reads "
                        f"{FORMAT_VERSION}).")
    try:
        segments = _as_segments(meta.get("segments"))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{where}: malformed `segments` in metadata: {e}") from e
    if not isinstance(meta["class_names"], list):
        raise UserError(f"{where}: `class_names` in the metadata must be a list of names; got "
                        f"{type(meta['class_names']).__name__} {str(meta['class_names'])[:60]!r}.")
    info = meta.get("info")
    if info is not None and not isinstance(info, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean"}.get(type(info), "a number")
        raise UserError(f"{where}: `info` in the metadata must be a JSON object (name -> value) "
                        f"or null; got {kind}, {json.dumps(info)[:60]}. Fix it in {_META}, or "
                        f"re-create the dataset ({_RECREATE}).")
    return list(meta["class_names"]), segments, dict(info or {})


def load_embeddings(path: str | os.PathLike, *, mmap: bool = True,
                    validate: bool = True) -> EmbeddingDataset:
    """Reads a dataset directory or `.npz`; large directory arrays are memory-mapped."""
    path = Path(path)
    where = f"load_embeddings({path})"
    check_input(path, "the dataset", directory=True,
                missing=f"{where}: no such file or directory. Create one with `embaug extract` "
                        "or `embaug_jax.save_embeddings`.")
    if not path.is_dir() and path.suffix != ".npz":
        raise UserError(f"{where}: expected a dataset directory (embeddings.npy, labels.npy, "
                        "meta.json) or a .npz file written by save_embeddings.")
    if path.is_dir():
        missing = [f for f in (_EMBEDDINGS, _LABELS, _META) if not os.path.lexists(path / f)]
        if missing:
            raise FileNotFoundError(f"{where}: missing {', '.join(missing)}; a dataset "
                                    f"directory holds {_EMBEDDINGS}, {_LABELS}, {_META} and "
                                    f"optionally {_IDS}.")
        embeddings = _load_npy(path / _EMBEDDINGS, "r" if mmap else None)
        labels = _load_npy(path / _LABELS, None)
        ids = _load_npy(path / _IDS, None) if os.path.lexists(path / _IDS) else None
        meta_file = check_input(path / _META, "the dataset's metadata")
        try:
            meta = json.loads(meta_file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{where}: {meta_file} is corrupt (not valid JSON: {e}); rewrite "
                            "the dataset with save_embeddings or `embaug extract`.") from e
    else:
        embeddings, labels, ids, meta = _load_npz(path, where)
    class_names, segments, info = _from_meta(meta, where)
    if ids is not None:
        ids = np.asarray(ids).astype(str)
    ds = EmbeddingDataset(embeddings, labels, class_names, ids, segments, info)
    return ds.validate(where=where) if validate else ds


_RECREATE = "`embaug extract`, or save_embeddings"


def _load_npy(file: Path, mmap_mode: str | None) -> np.ndarray:
    """One `.npy` of a dataset directory; an empty, truncated or pickled file names itself."""
    return load_npy(file, "a dataset array", f"Re-create the dataset ({_RECREATE}).",
                    mmap_mode=mmap_mode)


def _load_npz(path: Path, where: str) -> tuple[np.ndarray, np.ndarray, Any, dict]:
    """(embeddings, labels, ids, meta) of a `.npz`, with or without its `meta` string."""
    arrays = load_npz(path, "the dataset",
                      "It is not a dataset embaug_jax reads: a .npz dataset holds the arrays "
                      "embeddings, labels and class_names, or is written by save_embeddings; "
                      f"re-create it ({_RECREATE}).")
    missing = [k for k in ("embeddings", "labels") if k not in arrays]
    if "meta" not in arrays and "class_names" not in arrays:
        missing.append("class_names")
    if missing:
        raise UserError(f"{where}: missing arrays {missing}; found {sorted(arrays)}. A .npz "
                        "dataset holds embeddings, labels and class_names (optionally ids, "
                        "segments), or is written by save_embeddings.")
    if "meta" in arrays:
        try:
            meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: its `meta` record is corrupt (not valid JSON: {e}); "
                            f"re-create the dataset ({_RECREATE}).") from e
    else:
        meta = _plain_npz_meta(arrays, where)
    return arrays["embeddings"], arrays["labels"], arrays.get("ids"), meta


def _plain_npz_meta(z: dict[str, np.ndarray], where: str) -> dict:
    """The metadata of a plain `np.savez(embeddings=, labels=, class_names=, ...)` file."""
    names = z["class_names"]
    if names.ndim != 1:
        raise UserError(f"{where}: `class_names` must be a 1-D array of names, one per class; got "
                        f"shape {names.shape} (one string is not a list of names).")
    segments = None
    if "segments" in z:
        sizes = z["segments"]
        if sizes.ndim != 1 or not np.issubdtype(sizes.dtype, np.integer):
            raise UserError(f"{where}: `segments` must be a 1-D array of integer sizes; got "
                            f"{sizes.dtype} of shape {sizes.shape}.")
        seg_names = (z["segment_names"].astype(str).tolist() if "segment_names" in z
                     else [f"segment_{i}" for i in range(len(sizes))])
        if len(seg_names) != len(sizes):
            raise UserError(f"{where}: {len(seg_names)} segment_names for {len(sizes)} segments.")
        segments = [{"name": n, "size": int(s)} for n, s in zip(seg_names, sizes.tolist())]
    return {"format_version": FORMAT_VERSION, "class_names": names.astype(str).tolist(),
            "segments": segments, "info": {}}
