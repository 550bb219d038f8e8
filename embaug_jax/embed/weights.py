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

from embaug_jax.util import atomic_path

_MAX_LISTED = 20


def flatten_tree(tree: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """{"a": {"b": x}} -> {"a/b": x}. Accepts dicts and Flax FrozenDicts."""
    flat: dict[str, Any] = {}

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            if not node and prefix:
                return
            for k, v in node.items():
                if sep in str(k):
                    raise ValueError(f"key {k!r} under {prefix!r} contains the separator {sep!r}")
                visit(v, f"{prefix}{sep}{k}" if prefix else str(k))
        else:
            flat[prefix] = node

    visit(tree, "")
    return flat


def unflatten_tree(flat: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """{"a/b": x} -> {"a": {"b": x}}."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split(sep)
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"{path!r} nests under a leaf")
        if leaf in node:
            raise ValueError(f"duplicate path {path!r}")
        node[leaf] = value
    return tree


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f"\n    ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"  {title} ({len(items)}):\n" + "\n".join(f"    {s}" for s in shown) + more


def merge_strict(expected_tree: Mapping[str, Any], loaded_flat: Mapping[str, Any], *,
                 source: str = "checkpoint", sep: str = "/") -> dict[str, Any]:
    """Returns `loaded_flat` arranged as `expected_tree`, cast to its dtypes.

    Every expected leaf must be present with the expected shape and nothing may be left over;
    otherwise a ValueError lists each missing, unexpected and misshapen leaf by its path.
    `expected_tree` leaves need only `.shape` and `.dtype` (arrays or jax.ShapeDtypeStruct).
    """
    expected = flatten_tree(expected_tree, sep)
    missing = sorted(set(expected) - set(loaded_flat))
    unexpected = sorted(set(loaded_flat) - set(expected))
    misshapen = sorted(
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(np.shape(loaded_flat[k]))}"
        for k in set(expected) & set(loaded_flat)
        if tuple(expected[k].shape) != tuple(np.shape(loaded_flat[k])))
    if missing or unexpected or misshapen:
        parts = [f"{source} does not match the model's parameters:"]
        if missing:
            parts.append(_listing("missing from the checkpoint", missing))
        if unexpected:
            parts.append(_listing("unexpected in the checkpoint", unexpected))
        if misshapen:
            parts.append(_listing("shape mismatch", misshapen))
        parts.append("Check that the model config (variant, sizes) matches the checkpoint.")
        raise ValueError("\n".join(parts))
    return unflatten_tree(
        {k: np.asarray(loaded_flat[k]).astype(expected[k].dtype, copy=False) for k in expected},
        sep)


def save_safetensors(path: str | os.PathLike, tree_or_flat: Mapping[str, Any],
                     metadata: Mapping[str, str] | None = None) -> None:
    """Writes a tree (or an already flat dict) of arrays to a safetensors file, atomically."""
    from safetensors.numpy import save_file

    nested = any(isinstance(v, Mapping) for v in tree_or_flat.values())
    flat = flatten_tree(tree_or_flat) if nested else dict(tree_or_flat)
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in flat.items()}
    bad = [f"{k}: dtype {a.dtype}" for k, a in arrays.items() if a.dtype.kind not in "biufc"]
    if bad:
        raise ValueError("only numeric arrays can be saved as safetensors; got " + ", ".join(bad))
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata=meta)


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
