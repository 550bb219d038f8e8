"""Parameter trees <-> flat named tensors: strict merging, safetensors files, content hashes.

Converters for pretrained checkpoints (BERT, EfficientNet) produce a flat `{"a/b/c": array}`
dict; `merge_strict` places it into the tree a model's `init` (or `jax.eval_shape`) expects and
fails loudly, naming every leaf, when anything is missing, extra or misshapen.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from flax import traverse_util

from embaug_jax.util import atomic_path, list_first


def listing(title: str, items: list[str]) -> str:
    """A block of an error message: "  title (N):", then the first 20 items, one per line."""
    return f"  {title} ({len(items)}):\n    " + list_first(items, 20, sep="\n    ")


def merge_strict(expected_tree: Mapping[str, Any], loaded_flat: Mapping[str, Any], *,
                 source: str = "checkpoint", sep: str = "/") -> dict[str, Any]:
    """Returns `loaded_flat` arranged as `expected_tree`, cast to its dtypes.

    Every expected leaf must be present with the expected shape and nothing may be left over;
    otherwise a ValueError lists each missing, unexpected and misshapen leaf by its path.
    `expected_tree` leaves need only `.shape` and `.dtype` (arrays or jax.ShapeDtypeStruct).
    """
    expected = traverse_util.flatten_dict(expected_tree, sep=sep)
    missing = sorted(set(expected) - set(loaded_flat))
    unexpected = sorted(set(loaded_flat) - set(expected))
    misshapen = sorted(
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(np.shape(loaded_flat[k]))}"
        for k in set(expected) & set(loaded_flat)
        if tuple(expected[k].shape) != tuple(np.shape(loaded_flat[k])))
    if missing or unexpected or misshapen:
        parts = [f"{source} does not match the model's parameters:"]
        if missing:
            parts.append(listing("missing from the checkpoint", missing))
        if unexpected:
            parts.append(listing("unexpected in the checkpoint", unexpected))
        if misshapen:
            parts.append(listing("shape mismatch", misshapen))
        parts.append("Check that the model config (variant, sizes) matches the checkpoint.")
        raise ValueError("\n".join(parts))
    return traverse_util.unflatten_dict(
        {k: np.asarray(loaded_flat[k]).astype(expected[k].dtype, copy=False) for k in expected},
        sep=sep)


def save_safetensors(path: str | os.PathLike, tree_or_flat: Mapping[str, Any],
                     metadata: Mapping[str, str] | None = None) -> None:
    """Writes a tree (or an already flat dict) of arrays to a safetensors file, atomically."""
    from safetensors.numpy import save_file

    nested = any(isinstance(v, Mapping) for v in tree_or_flat.values())
    flat = traverse_util.flatten_dict(tree_or_flat, sep="/") if nested else dict(tree_or_flat)
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in flat.items()}
    bad = [f"{k}: dtype {a.dtype}" for k, a in arrays.items() if a.dtype.kind not in "biufc"]
    if bad:
        raise ValueError("only numeric arrays can be saved as safetensors; got " + ", ".join(bad))
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta[WRITER_KEY] = WRITER
    with atomic_path(path, replace=written_here) as tmp:
        save_file(arrays, str(tmp), metadata=meta)


# Every safetensors file this project writes says so in its metadata: a later save may replace
# it, and nothing else (see `util.atomic_path`).
WRITER_KEY, WRITER = "written_by", "embaug_jax"


def written_here(path: str | os.PathLike) -> bool:
    """Whether `path` is a safetensors file this project wrote (a converted checkpoint): its
    metadata names the writer, or, for files converted before that marker, the padding rule."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file() or path.is_symlink():
        return False
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception:  # safetensors' own error types for a file that is not one
        return False
    return meta.get(WRITER_KEY) == WRITER or "padding" in meta


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Reads a safetensors file -> (flat dict of numpy arrays, metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no safetensors file at {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            flat = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from e
    return flat, metadata


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def hash_files(paths: Iterable[str | os.PathLike]) -> str:
    """sha256 over the contents of `paths` in the given order (names do not count).

    Digests are memoised per (path, size, mtime) in this process, so fingerprinting the same
    weights file repeatedly reads it once.
    """
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"cannot hash {p}: no such file")
        h.update(_file_digest(p).encode())
    return h.hexdigest()
