"""Several processes running one command (`--distributed`): joining, roles and barriers.

One process per host (or, for tests, several on one machine) runs the same `embaug` command.
`initialize` joins them through `jax.distributed`; afterwards `jax.devices()` lists every
process's devices, so a sweep's member axis spans them all. Process 0 is the primary: it alone
writes the workdir's files, checkpoints included. `check_same` refuses processes started with
different configs before they issue any collective.

Failures are bounded in time, never a hang: a process that does not join within
`initialization_timeout` seconds, or stops sending heartbeats for `heartbeat_timeout` seconds
(killed, crashed), makes JAX's coordination service stop every other process, naming the
missing one; `barrier` raises after its timeout; and a process whose command raises exits at
once (`abandon`) instead of waiting for the others at JAX's shutdown barrier.

JAX's preemption service is off: it would install a SIGTERM handler that only records the
notice (for `multihost_utils.reached_preemption_sync_point`, which nothing here calls), so
`timeout`, `kill` or a scheduler's SIGTERM could not stop a process. Each process stops on
SIGINT or SIGTERM itself (`embaug_jax.interrupt`), and a rerun resumes from its checkpoints.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from typing import Any, Sequence

import jax
from absl import logging

from embaug_jax.util import UserError


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, initialization_timeout: int = 300,
               heartbeat_timeout: int = 100) -> None:
    """`jax.distributed.initialize` with bounded waits, logging what a failure will look like.

    Args:
      coordinator_address / num_processes / process_id: as `jax.distributed.initialize`; None
        lets JAX detect them (Cloud TPU, SLURM, Open MPI, Kubernetes).
      initialization_timeout: seconds to wait for every process to join.
      heartbeat_timeout: seconds without a heartbeat after which a process counts as dead and
        every process is stopped.
    """
    for name, value in (("initialization_timeout", initialization_timeout),
                        ("heartbeat_timeout", heartbeat_timeout)):
        if int(value) < 1:
            raise ValueError(f"--{name}={value} must be >= 1 (seconds).")
    where = coordinator_address or "the cluster's coordinator (auto-detected)"
    logging.info("distributed: process %s of %s joining at %s; waiting up to %d s for every "
                 "process (--initialization_timeout); a process silent for %d s "
                 "(--heartbeat_timeout) stops them all.",
                 "?" if process_id is None else process_id,
                 "?" if num_processes is None else num_processes, where,
                 initialization_timeout, heartbeat_timeout)
    jax.config.update("jax_enable_preemption_service", False)
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=int(initialization_timeout),
                                   heartbeat_timeout_seconds=int(heartbeat_timeout))
    except ValueError as e:  # nothing detected and something not given
        raise ValueError(
            f"--distributed: {e} No cluster (Cloud TPU, SLURM, Open MPI, Kubernetes) was "
            "detected, so pass --coordinator_address=HOST:PORT (process 0's host), "
            "--num_processes and --process_id to every process.") from e
    logging.info("distributed: process %d of %d joined; %d local of %d devices.",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())


def is_primary() -> bool:
    """Whether this process writes the shared outputs (process 0; always true in one process)."""
    return jax.process_index() == 0


def patient_timeout(started: float) -> float:
    """A barrier's timeout after work that began at `started` (`time.monotonic()`): 600 s plus
    4x the time spent so far, as the processes wait for the slowest of them at the end of
    similar work. A dead process is caught sooner, by the heartbeat."""
    return 600 + 4 * (time.monotonic() - started)


def barrier(name: str, timeout_s: float) -> None:
    """Waits until every process reaches the barrier `name` (unique per use); no-op alone.

    Raises TimeoutError, naming the barrier, if the others do not arrive within `timeout_s`.
    """
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost

    try:
        multihost.get_barrier_sync_fn()(key=name, timeout_ms=int(timeout_s * 1000))
    except Exception as e:  # the client raises XlaRuntimeError (DEADLINE_EXCEEDED and others)
        # Past the timeout the service answers DEADLINE_EXCEEDED; sooner, it fails the barrier
        # for a process that stopped sending heartbeats.
        why = (f"not every process arrived within {timeout_s:g} s"
               if "DEADLINE_EXCEEDED" in str(e) else "the barrier failed")
        raise TimeoutError(
            f"process {jax.process_index()} of {jax.process_count()} waited at barrier "
            f"{name!r} and {why} ({e}); check the other processes' logs for the one that "
            "failed or is stuck.") from e


_CHECKS = itertools.count()  # every process checks in the same order: the keys match
# Keys `abandon` posts just before this process exits, after its message is printed.
_FAREWELLS: list[str] = []


def check_same(what: str, value: Any, *, ignore: Sequence[str] = (),
               timeout_s: float = 600) -> None:
    """Goes on only if `value` (a JSON document: a config, a fingerprint) is the same on every
    process; otherwise every process raises the same UserError. A no-op alone.

    Processes started with different configs would issue different collectives and wait for
    each other forever. Each process posts `value` to JAX's coordination service (no
    collective) and compares every process's with process 0's.

    Args:
      what: what `value` is, for the message ("config").
      ignore: dotted keys left out (e.g. "data.path": a location that may differ by host).
      timeout_s: how long to wait for the others' values (a dead process is caught sooner,
        by the heartbeat).

    Raises:
      UserError: naming each process that differs and the dotted keys whose values differ.
      TimeoutError: a process did not post its value within `timeout_s`.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed as jax_distributed  # the coordination service's client

    client = jax_distributed.global_state.client
    key = f"embaug/check_same/{next(_CHECKS)}/{what}"
    flat = {k: v for k, v in _flatten(value).items()
            if not any(k == i or k.startswith(f"{i}.") for i in ignore)}
    client.key_value_set(f"{key}/{jax.process_index()}", json.dumps(flat, sort_keys=True))
    posted = []
    for i in range(jax.process_count()):
        try:
            posted.append(json.loads(client.blocking_key_value_get(f"{key}/{i}",
                                                                   int(timeout_s * 1000))))
        except Exception as e:  # the client raises XlaRuntimeError (DEADLINE_EXCEEDED)
            raise TimeoutError(f"process {i} of {jax.process_count()} did not post its {what} "
                               f"within {timeout_s:g} s ({e}); check its log.") from e
    differences = []
    for i, other in enumerate(posted[1:], 1):
        keys = sorted(k for k in set(posted[0]) | set(other) if posted[0].get(k) != other.get(k))
        if keys:
            shown = "; ".join(f"{k}: {_short(posted[0].get(k))} on process 0, "
                              f"{_short(other.get(k))} on process {i}" for k in keys[:5])
            more = f"; and {len(keys) - 5} more" if len(keys) > 5 else ""
            differences.append(f"process {i} differs from process 0 in {', '.join(keys)} "
                               f"({shown}{more})")
    if not differences:
        return
    if jax.process_index() == 0:
        # Process 0 hosts the coordination service: were it gone before another process has
        # printed this message and exited, that one would die of the lost connection instead
        # (XLA aborts a process whose service is gone).
        _wait_for_the_others(client, f"{key}/read", timeout_s=30)
    else:  # posted as this process exits (`abandon`, which the command line calls)
        _FAREWELLS.append(f"{key}/read/{jax.process_index()}")
    raise UserError(f"the {jax.process_count()} processes were started with different "
                    f"{what}s: {'; '.join(differences)}. Start every process with the same "
                    "command and files (only --process_id differs).")


def _wait_for_the_others(client, key: str, timeout_s: float) -> None:
    """Waits (up to `timeout_s`) until every other process has posted `key/<its index>`."""
    deadline = time.monotonic() + timeout_s
    for i in range(1, jax.process_count()):
        left = max(1, int((deadline - time.monotonic()) * 1000))
        try:
            client.blocking_key_value_get(f"{key}/{i}", left)
        except Exception:  # gone already: process 0 goes on regardless
            return


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A JSON document as {dotted key: leaf}."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items()
                for k, v in _flatten(item, f"{prefix}{key}.").items()}
    return {prefix[:-1]: value}


def _short(value: Any) -> str:
    text = "absent" if value is None else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def abandon(exit_code: int) -> None:
    """Exits this process now, skipping JAX's shutdown barrier.

    After an error in one process the others may be blocked in a collective, so waiting for them
    at the shutdown barrier would only delay the exit; they are stopped by the coordination
    service within the heartbeat timeout instead. A process that `check_same` found different
    first posts that it is leaving: process 0 waits for it before it exits and takes the
    coordination service down.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if _FAREWELLS:  # process 0 waits for these before it takes the coordination service down
        from jax._src import distributed as jax_distributed

        for key in _FAREWELLS:
            try:
                jax_distributed.global_state.client.key_value_set(key, "1")
            except Exception:  # the service is gone already: nothing waits
                pass
    os._exit(exit_code)
