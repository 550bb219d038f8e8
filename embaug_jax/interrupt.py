"""SIGINT and SIGTERM end a command cleanly; a second one ends it at once.

Inside `handling_signals()` (the `embaug` command runs in it) the first SIGINT or SIGTERM raises
`Interrupted` in the main thread. It is a KeyboardInterrupt, so `except Exception` in a library
does not swallow it, and it unwinds like one: every `with` block exits on the way out, so an
atomic write removes its temporary and leaves the last complete file (orbax its last complete
checkpoint), and the workdir lock is released. The command then prints one line and exits
with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM); rerunning it resumes.

The exception is raised only when the main thread runs Python again, which a long XLA call can
delay. Python ignores an exception raised in a garbage-collection callback or a finalizer (it
prints "Exception ignored in ..." and goes on), and JAX runs one at each collection; so a signal
that arrives during a collection is held, not raised, and the next `check()` raises it. The long
loops (the sweep's chunks, the embedders' batches) call `check()`. A signal that arrives within
`deferred()`, around a library call that would swallow it (orbax's checkpoint save), is held
until the block ends. A second signal does not wait: Python's low-level handler writes each
signal to a pipe (`signal.set_wakeup_fd`) at once, and a small thread reading it ends the
process (`os._exit`) on the second.

A signal ignored when the command starts stays ignored, as for any command: a shell script's
background job (`embaug train ... &`) ignores SIGINT.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The command was asked to stop by a signal (`signum`)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return exit_status(self.signum)


def exit_status(signum: int) -> int:
    """The shell's status for a command ended by signal `signum`: 128 + its number."""
    return 128 + int(signum)


def signal_of(error: KeyboardInterrupt) -> int:
    """The signal behind a KeyboardInterrupt: its own for `Interrupted`, else SIGINT (Python's
    own handler raised it)."""
    return error.signum if isinstance(error, Interrupted) else signal.SIGINT


class _State:
    """The command's signal state while `handling_signals` is active."""

    collecting = False  # inside a garbage collection: an exception raised now would be lost
    deferring = 0  # the depth of `deferred()` blocks, where an exception would be swallowed
    held: int | None = None  # a signal that arrived then, for `check()`
    received: int | None = None  # the first signal, raised or not, for `received()`


_state = _State()


def _on_gc_start(phase: str, info: dict) -> None:
    if phase == "start":
        _state.collecting = True


def _on_gc_stop(phase: str, info: dict) -> None:
    if phase == "stop":
        _state.collecting = False


def check() -> None:
    """Raises `Interrupted` for a signal that arrived while it could not be raised (during a
    garbage collection or a `deferred()` block); a no-op otherwise. Long loops call it once
    per step."""
    signum, _state.held = _state.held, None
    if signum is not None:
        raise Interrupted(signum)


def _in_gc_callback(frame) -> bool:
    """Whether `frame` runs in a garbage-collection callback: one that lands before
    `_on_gc_start` has marked the collection (in its own first line, say)."""
    callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    while frame is not None:
        if frame.f_code in callbacks:
            return True
        frame = frame.f_back
    return False


def received() -> int | None:
    """The first SIGINT or SIGTERM the command received (None: none), whether or not Python
    has raised it yet.

    The operating system's delivery is recorded at once (by the thread that reads the wakeup
    pipe), so it is known even while the main thread is blocked in a call that then fails
    because of it: a collective whose peer process stopped on the same signal.
    """
    return _state.received


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block, a first SIGINT or SIGTERM is held and raised as `Interrupted` when the
    block ends; a second still ends the process at once.

    For library calls that catch BaseException: orbax's wait for its checkpoint-finishing
    thread logs one and carries on, so a signal during a save would be lost and the run go on
    to its end. Blocks nest.
    """
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    if not _state.deferring:
        check()


@contextlib.contextmanager
def handling_signals(label: str = "embaug") -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted`; a second one exits at once,
    printing "LABEL: SIGINT again: stopped at once; ..." to stderr.

    A no-op outside the main thread, where Python cannot install signal handlers. On exit the
    previous handlers are restored, so a notebook or test calling the command stays as it was.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen = 0

    def on_signal(signum, frame):
        nonlocal seen
        seen += 1
        if _state.received is None:
            _state.received = signum
        if seen > 1:
            _exit_now(signum, label)
        if _state.collecting or _state.deferring or _in_gc_callback(frame):
            _state.held = signum
        else:
            raise Interrupted(signum)

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    # None is a handler installed outside Python, which cannot be put back; the default is.
    previous = {s: signal.SIG_DFL if h is None else h for s, h in previous.items()}
    handled = [s for s in SIGNALS if previous[s] is not signal.SIG_IGN]
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # the C handler must never block on a full pipe
    watcher = threading.Thread(target=_watch, args=(read_end, set(handled), label),
                               name="embaug-signals", daemon=True)
    old_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    # First and last in gc.callbacks: a collection is marked for every other callback.
    gc.callbacks.insert(0, _on_gc_start)
    gc.callbacks.append(_on_gc_stop)
    try:
        for s in handled:
            signal.signal(s, on_signal)
        watcher.start()
        yield
        check()  # a signal held until the end still ends the command as interrupted
    finally:
        for s in handled:
            signal.signal(s, previous[s])
        gc.callbacks.remove(_on_gc_start)
        gc.callbacks.remove(_on_gc_stop)
        signal.set_wakeup_fd(old_wakeup)
        os.close(write_end)  # the watcher reads end-of-file and returns
        watcher.join()
        os.close(read_end)
        _state.collecting, _state.held, _state.received = False, None, None


def _watch(read_end: int, signals: set[int], label: str) -> None:
    """Counts the handled signals the operating system delivers; exits at the second."""
    seen = 0
    while True:
        try:
            data = os.read(read_end, 64)
        except InterruptedError:
            continue
        if not data:
            return
        for signum in data:
            if signum in signals:
                if _state.received is None:
                    _state.received = signum
                seen += 1
                if seen >= 2:
                    _exit_now(signum, label)


def _exit_now(signum: int, label: str) -> None:
    """Ends the process at once with the signal's status, skipping every clean-up."""
    try:
        sys.stderr.write(f"{label}: {signal.Signals(signum).name} again: stopped at once; rerun "
                         "the same command to resume from its last checkpoint.\n")
        sys.stderr.flush()
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    os._exit(exit_status(signum))
