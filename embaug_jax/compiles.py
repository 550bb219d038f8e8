"""How long JAX spends compiling: `clock()`, a clock over `jax.monitoring`'s compile events, and
`summary(clock)`, the line a command prints of it ("12.3 s, 1.4 s of it (11.4%) compiling 2
XLA programs")."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterable, Mapping

import jax
import numpy as np

# The events JAX records the time of for each compile: tracing, lowering, XLA's compile.
_COMPILE_EVENTS = "/jax/core/compile/"
_XLA_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def clock():
    """A clock of the time JAX spends compiling inside the block (tracing, lowering and XLA's
    compile, from `jax.monitoring`): yields a dict whose "seconds" (the wall time during which
    some compile ran: compiles running at once, in several threads, count once) and "programs"
    (XLA compiles) grow as compiles finish, and whose "start" is the block's start."""
    times = {"seconds": 0.0, "programs": 0, "start": time.perf_counter()}
    spans, lock = [], threading.Lock()

    def record(event: str, duration: float, **_) -> None:
        if event.startswith(_COMPILE_EVENTS):
            end = time.perf_counter()  # JAX records an event as it ends
            with lock:  # compiles may finish in several threads
                spans.append((end - duration, end))
                times["seconds"] = covered_seconds(spans)
                times["programs"] += event == _XLA_COMPILE

    jax.monitoring.register_event_duration_secs_listener(record)
    try:
        yield times
    finally:
        jax.monitoring.unregister_event_duration_listener(record)


def covered_seconds(spans: Iterable[tuple[float, float]]) -> float:
    """The length of the union of (start, end) intervals: overlapping time counts once."""
    total, reached = 0.0, -np.inf
    for start, end in sorted(spans):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


def summary(clock: Mapping[str, float]) -> str:
    """"123.4 s, 5.6 s of it (4.5%) compiling 7 XLA programs": the time since the clock
    started, and the time in it during which some compile ran."""
    spent = time.perf_counter() - clock["start"]
    return (f"{spent:.1f} s, {clock['seconds']:.1f} s of it ({clock['seconds'] / spent:.1%}) "
            f"compiling {clock['programs']} XLA programs")
