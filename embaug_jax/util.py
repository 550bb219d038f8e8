"""Small helpers every stage shares: atomic file output, checked input files, the workdir lock,
`UserError` (a mistake in input or configuration), `is_traced`, `list_first`.

The invariants: a reader (or a resumed run) never sees a half-written file, and no input is
opened that could not be read (a named pipe would wait forever, a pickle could run code).
"""

from __future__ import annotations

import contextlib
import errno
import json
import numbers
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:
    import numpy as np


class UserError(ValueError):
    """Bad input or configuration: the message says what was wrong, where, and how to fix it.

    `embaug` prints it without a traceback and exits with `exit_status` (`--verbose` shows the
    traceback). A ValueError, so `except ValueError` in callers keeps working.
    """

    exit_status = 2


class DamagedOutput(UserError):
    """A file embaug_jax wrote earlier cannot be read (truncated, overwritten): not the user's
    input, so `embaug` exits with status 1; the message says how to write the file again."""

    exit_status = 1


# errno values that mean "the disk cannot take this write" rather than a bug.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _disk_full_error(exc: OSError, path: Path) -> OSError | None:
    """`exc` as an ENOSPC OSError naming `path`, when a failed write means the disk is full.

    numpy's `ndarray.tofile` reports a short write as "61440 requested and 37856 written" with
    no errno; a short write with (almost) no free space left is a full disk.
    """
    if exc.errno in _DISK_FULL:
        return OSError(exc.errno, os.strerror(exc.errno), str(path))
    if exc.errno is None and "requested and" in str(exc) and "written" in str(exc):
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = 0
        if free < (64 << 20):
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


Replaceable = Callable[[Path], bool]


def check_replaceable(path: str | os.PathLike, replace: bool | Replaceable) -> None:
    """Raises UserError unless `path` is absent or may be replaced (see `atomic_path`): callers
    about to do long work for an output check it first."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    is_dir = path.is_dir() and not path.is_symlink()
    if callable(replace):
        try:
            ok = bool(replace(path))
        except (OSError, ValueError):
            ok = False
    else:
        ok = bool(replace) and not is_dir
    if not ok:
        what = "a folder" if is_dir else ("a symbolic link" if path.is_symlink() else "a file")
        raise UserError(f"{path} already exists and is {what} that embaug_jax did not write; it "
                        "is left untouched. Choose another output path, or move it away first.")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *,
                replace: bool | Replaceable = False) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds.

    Works for files and directories alike: write whatever you like at the yielded path. On an
    exception the temporary is removed and `path` is untouched.

    An existing `path` is replaced only when `replace` allows it, so a user's file or folder is
    never lost to a mistyped output path: True replaces a file (not a folder) that the caller
    owns by its location, such as a workdir's results; a predicate replaces what it recognises
    as written by this project (an embedding dataset by its meta.json, a converted weights file
    by its metadata). Anything else is refused with a UserError naming the path, both before the
    block runs and again before the rename. A replaced folder is moved aside, the new one moved
    in, and only then the old one deleted.
    """
    path = Path(path)
    check_replaceable(path, replace)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name  # same name, so writers that add an extension add none
    try:
        yield target
        check_replaceable(path, replace)
        if path.is_dir() and not path.is_symlink():
            old = tmp / f"{path.name}.old"
            os.replace(path, old)
            try:
                os.replace(target, path)
            except OSError:
                os.replace(old, path)
                raise
        else:
            os.replace(target, path)
    except OSError as e:
        full = _disk_full_error(e, path)
        if full is None:
            raise
        raise full from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str, *,
                      replace: bool | Replaceable = True) -> None:
    """Writes a text file atomically; by default it replaces a file (never a folder) at `path`,
    for the files a command keeps in a folder it owns (see `atomic_path`)."""
    with atomic_path(path, replace=replace) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 2,
                      replace: bool | Replaceable = True) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n",
                      replace=replace)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON document in the file `path`; a file that is not UTF-8 JSON is a ValueError
    naming it and where it breaks, not the parser's bare "Expecting value: line 1 column 1"."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        where = f"{e.msg} at line {e.lineno}, column {e.colno}"
    except UnicodeDecodeError as e:
        where = f"byte {e.start} is not UTF-8"
    raise ValueError(f"{path} is not a valid JSON file ({where}); restore it from where it "
                     "came from.")


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


def repeated_values(values: np.ndarray, *, chunk: int = 65536) -> np.ndarray:
    """The distinct values that occur more than once in `values`, sorted.

    Compares neighbours in sorted order a chunk at a time, so memory beyond `values` is one
    int64 order and a chunk's copies, not the sorted copies `np.unique` makes.
    """
    import numpy as np

    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    found = []
    for start in range(0, max(0, len(values) - 1), chunk):
        here = values[order[start:start + chunk + 1]]
        same = here[1:] == here[:-1]
        if same.any():
            found.append(here[1:][same])
    return np.unique(np.concatenate(found)) if found else values[:0]


# ---------------------------------------------------------------------------------------------
# Input files: only what can be read is opened, and numpy files are never unpickled.

# What a path holds instead of a regular file or a directory, tested in this order.
_OTHER_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"))


def check_input(path: str | os.PathLike, what: str, *, directory: bool = False,
                missing: str | None = None) -> Path:
    """`path` if it is a regular file (or, with `directory=True`, a directory), else an error
    saying what it is instead, before anything opens it.

    Opening a named pipe waits for a writer forever, a character device may never end and a
    symbolic link loop reads as "no such file"; each is named for what it is.

    Args:
      path: the input.
      what: its role, for the messages (e.g. "the table, config.source.path").
      directory: whether a directory is a valid input too.
      missing: the message when nothing is there (default: "PATH (WHAT) does not exist.").

    Raises:
      FileNotFoundError: nothing is there, or a symbolic link points nowhere.
      UserError: something else is there: a directory where a file is read, a named pipe, a
        socket, a device or a symbolic link loop.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        message = missing or f"{path} ({what}) does not exist."
        if path.is_symlink():
            message += f" (It is a symbolic link to {os.readlink(path)}, which does not exist.)"
        raise FileNotFoundError(message) from None
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise UserError(f"{path} ({what}) is a symbolic link loop: following its links leads "
                        "back to them, never to a file. Point the link at the real "
                        f"{'file or directory' if directory else 'file'}, or give that path "
                        "instead.") from None
    if stat.S_ISREG(mode) or (directory and stat.S_ISDIR(mode)):
        return path
    kind = next((name for test, name in _OTHER_KINDS if test(mode)), "not a regular file")
    wanted = "a regular file or a directory" if directory else "a regular file"
    if stat.S_ISDIR(mode):
        advice = "give the path of the file itself"
    else:
        advice = "copy the data into a regular file and give its path"
        if stat.S_ISFIFO(mode):
            advice = f"reading it would wait for a writer forever; {advice}"
    raise UserError(f"{path} ({what}) is {kind}, not {wanted}: {advice}.")


_PICKLE_PROTOCOL_2_AND_UP = b"\x80"  # every pickle protocol since Python 2.3 starts so


def _numpy_file_problem(head: bytes, expected: str) -> str | None:
    """Why a file starting with `head` is not the `expected` numpy format (".npy" or ".npz"),
    judged by its first bytes; None when it looks right."""
    if not head:
        return "is empty (0 bytes)"
    if head.startswith(_PICKLE_PROTOCOL_2_AND_UP):
        return ("is a Python pickle, not a file of numpy arrays; embaug_jax never unpickles "
                "(loading a pickle can run arbitrary code)")
    is_npy, is_zip = head.startswith(b"\x93NUMPY"), head.startswith(b"PK")
    if expected == ".npz" and is_npy:
        return "holds one numpy array (.npy format), not a .npz archive of named arrays"
    if expected == ".npy" and is_zip:
        return "is a zip archive (.npz or other), not one numpy array (.npy format)"
    if not (is_npy or is_zip):
        return f"is not a {expected} file (it starts with the bytes {head[:8]!r})"
    return None


def _numpy_load_error(file: Path, e: BaseException, remedy: str,
                      error: type[UserError]) -> UserError:
    """numpy's error reading `file` as one message; never numpy's advice to unpickle."""
    text = str(e)
    if "allow_pickle" in text or "Object arrays" in text:
        return error(f"{file} holds Python objects (an array of dtype object), which "
                     f"embaug_jax never unpickles (that can run arbitrary code). {remedy}")
    return error(f"{file} is corrupt or truncated ({type(e).__name__}: {text}); it cannot be "
                 f"read as numpy arrays. {remedy}")


# What numpy raises on a damaged file (an OSError with an errno is the system's, and passes).
_DAMAGED = (ValueError, EOFError, OSError, KeyError)


def _read_head(file: Path) -> bytes:
    with open(file, "rb") as f:
        return f.read(8)


def load_npy(file: str | os.PathLike, what: str, remedy: str, *, mmap_mode: str | None = None,
             error: type[UserError] = UserError) -> np.ndarray:
    """One `.npy` array, never unpickled; a missing, empty, truncated or pickled file (or one
    that is not a regular file) is one `error` naming `file` (its role `what`) and `remedy`."""
    import numpy as np

    file = check_input(file, what)
    problem = _numpy_file_problem(_read_head(file), ".npy")
    if problem:
        raise error(f"{file} {problem}. {remedy}")
    try:
        return np.load(file, mmap_mode=mmap_mode, allow_pickle=False)
    except _DAMAGED as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise _numpy_load_error(file, e, remedy, error) from e


def load_npz(file: str | os.PathLike, what: str, remedy: str, *,
             error: type[UserError] = UserError) -> dict[str, np.ndarray]:
    """Every array of a `.npz` archive, read now and never unpickled; a file that is not such
    an archive (empty, truncated, a single .npy, a pickle, a zip of other files) is one
    `error` naming `file` (its role `what`) and `remedy`."""
    import zipfile
    import zlib

    import numpy as np

    file = check_input(file, what)
    problem = _numpy_file_problem(_read_head(file), ".npz")
    if problem:
        raise error(f"{file} {problem}. {remedy}")
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (*_DAMAGED, zipfile.BadZipFile, zlib.error) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise _numpy_load_error(file, e, remedy, error) from e
    others = [name for name, value in arrays.items() if not isinstance(value, np.ndarray)]
    if others:  # numpy hands back the bytes of members that are not .npy files
        pickled = any(name.endswith((".pkl", ".pickle")) for name in others)
        note = " (it holds a pickle: a PyTorch checkpoint?)" if pickled else ""
        raise error(f"{file} is a zip archive of other files ({list_first(others, 3)}), not a "
                    f".npz of numpy arrays{note}. {remedy}")
    return arrays


LOCK_FILE = ".embaug.lock"


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike, command: str, *, take: bool = True) -> Iterator[None]:
    """Holds an exclusive lock on `workdir` for one run; a second run fails at once.

    The lock is an `flock` on `workdir/.embaug.lock`, so the operating system releases it when
    the holder exits or is killed (no stale locks); the file records the holder's command, pid
    and host for the error message. `take=False` (the non-zero processes of a multi-process
    run, whose process 0 holds the lock) makes this a no-op.

    Raises:
      UserError: another run holds the lock.
    """
    if not take:
        yield
        return
    import fcntl

    workdir = Path(workdir)
    check_workdir(workdir)
    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    lock = workdir / LOCK_FILE
    try:
        # O_NOFOLLOW: a lock file that links elsewhere is refused, never truncated through.
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{lock} is a symbolic link; embaug_jax keeps its lock in a plain "
                            "file there. Remove the link, or use another --workdir.") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"{lock} is not a regular file; remove it, or use another --workdir.")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another run"
            raise UserError(f"{workdir} is in use by {holder}; wait for it to finish (or stop "
                            "it), or use another --workdir.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"`embaug {command}` (pid {os.getpid()} on {socket.gethostname()})\n"
                  .encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            # A run that failed before writing anything leaves no folder it created.
            if created and [p.name for p in workdir.iterdir()] == [LOCK_FILE]:
                (workdir / LOCK_FILE).unlink()
                workdir.rmdir()
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def check_workdir(workdir: str | os.PathLike) -> Path:
    """`workdir` if a run may use it as its own folder, else a UserError saying why.

    A workdir is the run's: it gets a lock file, checkpoints and results beside whatever is
    already there, so the filesystem root and the home folder are refused, as is a file.
    """
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise UserError(f"--workdir {workdir} is a file; pass a folder (it is created if missing).")
    resolved = workdir.expanduser().resolve()
    home = Path.home().resolve()
    if resolved == Path(resolved.anchor) or resolved == home:
        what = "the home folder" if resolved == home else "the filesystem root"
        raise UserError(f"--workdir {workdir} is {what}; a run keeps its files in a folder of "
                        "its own, so pass a subfolder "
                        f"(e.g. --workdir={workdir.as_posix().rstrip('/')}/embaug_run).")
    return workdir


_MALLOC_TUNED = False


def reuse_freed_memory() -> bool:
    """Makes glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    XLA's CPU runtime allocates each call's buffers afresh (with BERT at 128-256 tokens, 100 MB
    to 1 GB per batch), and the sweep gathers each evaluation's validation rows into new arrays
    (at the paper's scale 4 GB per evaluation: 4.8 s with the defaults, 0.7 s with this, in
    benchmarks/README.md, section "train"). By default glibc serves blocks over 32 MB with
    fresh mmaps, unmaps them on free and drops whole per-thread heaps, so every batch faults its
    memory in again, in system time. One arena, no mmap and no trimming make later batches
    reuse the same pages (measured in benchmarks/README.md, section "text"). The process's RSS
    then stays at its high-water mark.

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


# The largest seed: member seeds are int32 arrays, and a JAX key of a larger seed wraps around
# without x64 (jax.random.key(2**32) is jax.random.key(0)).
MAX_SEED = 2**31 - 1


def check_seed(value: Any, name: str) -> int:
    """`value` as an int if it is a seed (a whole number in [0, MAX_SEED]), else a UserError
    naming `name` (e.g. "config.seed")."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{name}={value!r} must be a whole number in [0, {MAX_SEED}].")
    if not 0 <= int(value) <= MAX_SEED:
        raise UserError(f"{name}={value} must be in [0, 2^31 - 1 = {MAX_SEED}] (seeds are int32; "
                        "a larger one would wrap around onto a smaller one).")
    return int(value)


def check_cpu_devices(count) -> int:
    """`count` as an int if it is a valid `cpu_devices` value (0 or more), else a UserError."""
    count = int(count)
    if count < 0:
        raise UserError(f"config.cpu_devices={count}; use 0 (one per core) or a positive count.")
    return count


def split_cpu_into_devices(count: int = 0) -> bool:
    """Exposes the host's cores as `count` XLA CPU devices (0: one per core, at most 8), so the
    sweep engine shards its members, and the text embedder its batches, over them; True if
    this call set the count.

    One device's program gains little from XLA:CPU's threads at the paper's 64-row steps (one
    thread: 10% slower than two); two devices each stepping their own members keep both cores
    busy, and BERT batches split between two devices ran 10% faster than on one
    (benchmarks/README.md, sections "train" and "text"). Each device holds its own copy of the
    training rows and the model, so memory grows with the count. It must run before JAX
    starts its backend: afterwards, or when `XLA_FLAGS`
    (--xla_force_host_platform_device_count), the `JAX_NUM_CPU_DEVICES` variable or
    `jax_num_cpu_devices` already chose, it changes nothing.
    """
    import jax
    from jax._src import xla_bridge

    count = check_cpu_devices(count)
    chosen = ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
              or "JAX_NUM_CPU_DEVICES" in os.environ or jax.config.jax_num_cpu_devices >= 0)
    if chosen or xla_bridge.backends_are_initialized():
        return False
    jax.config.update("jax_num_cpu_devices", count or min(os.cpu_count() or 1, 8))
    return True


def on_cpus(devices) -> bool:
    """True when every one of `devices` is a CPU."""
    return all(d.platform == "cpu" for d in devices)


def large_dot_compiler_options(devices) -> dict | None:
    """`jax.jit(compiler_options=...)` for programs of large matrix products on `devices`.

    XLA:CPU hands dots to YNNPACK by default. For large products its own dot is faster on the
    2-core test machine: the sweep evaluation's [8192, 4864] x [4864, 250] ran at 152 GFLOP/s
    with YNNPACK and 182 without, and a MiniLM batch 4% faster (benchmarks/README.md, sections
    "train" and "text"). The training step's 64-row products are faster with YNNPACK, so it is
    not used there. None (the defaults) off the CPU.
    """
    return {"xla_cpu_experimental_ynn_fusion_type": ""} if on_cpus(devices) else None


_THREEFRY_UNROLLED = False


def unroll_cpu_threefry() -> bool:
    """Lowers `threefry2x32` on the CPU with its 20 rounds unrolled, as JAX does on GPU and TPU.

    JAX's CPU lowering keeps the rounds in a rolled `while` loop (smaller programs, quicker
    compiles): every random draw of a training step -- dropout masks, pairings, shuffles -- then
    runs five loop iterations, each writing its whole state array to memory. Unrolled, each draw
    is one fused pass; at the paper's shapes a training epoch takes about a fifth less time
    (benchmarks/README.md, section "train"). The bits are the same: only how XLA computes them
    changes (`tests/test_util.py` checks the Random123 known answers, and a key's bits against a
    process without this). Process-wide, for programs compiled after the call; idempotent.
    Returns False, changing nothing, if this JAX does not have the private lowering it reuses.
    """
    global _THREEFRY_UNROLLED
    if _THREEFRY_UNROLLED:
        return True
    try:
        from jax._src.random import threefry2x32 as impl
        from jax.extend.random import threefry2x32_p
        from jax.interpreters import mlir

        unrolled = impl._threefry2x32_lowering_rule  # the GPU/TPU default: use_rolled_loops=False
    except (ImportError, AttributeError):
        return False
    mlir.register_lowering(threefry2x32_p, unrolled, platform="cpu")
    _THREEFRY_UNROLLED = True
    return True
