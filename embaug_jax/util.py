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


_MALLOC_TUNED = False


def reuse_freed_memory() -> bool:
    """Makes glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    XLA's CPU runtime allocates each call's buffers afresh (with BERT at 128-256 tokens, 100 MB
    to 1 GB per batch). By default glibc serves blocks over 32 MB with fresh mmaps, unmaps them
    on free and drops whole per-thread heaps, so every batch faults its memory in again, in
    system time. One arena, no mmap and no trimming make later batches reuse the same pages
    (measured in benchmarks/README.md, section "text"). The process's RSS then stays at its
    high-water mark.

    Process-wide, and fully effective only before JAX starts its CPU backend (its threads keep
    the arenas they already have); a no-op returning False off glibc. Idempotent.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8  # from glibc's malloc.h
    ok = (libc.mallopt(m_arena_max, 1) == 1 and libc.mallopt(m_mmap_max, 0) == 1
          and libc.mallopt(m_trim_threshold, 2**31 - 1) == 1)
    _MALLOC_TUNED = ok
    return ok
