"""Small helpers every stage shares: atomic file output, `is_traced`, `list_first`.

The invariant: a reader (or a resumed run) never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds.

    Works for files and directories alike: write whatever you like at the yielded path. On an
    exception the temporary is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name  # same name, so writers that add an extension add none
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def is_traced(value: Any) -> bool:
    """True for a value under `jax.jit` / `jax.vmap` tracing, whose contents cannot be checked."""
    import jax

    return isinstance(value, jax.core.Tracer)


def list_first(items: Iterable[Any], n: int = 10, *, sep: str = ", ") -> str:
    """The first `n` items joined by `sep`, then "... and K more": error messages name a few
    offenders, not thousands. numpy arrays list their Python values."""
    items = [str(v) for v in (items.tolist() if hasattr(items, "tolist") else items)]
    shown = sep.join(items[:n])
    return shown + (f"{sep}... and {len(items) - n} more" if len(items) > n else "")
