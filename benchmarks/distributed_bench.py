"""Consecutive 2-process `embaug train --distributed` runs: does every one finish?

  python benchmarks/distributed_bench.py                      # 20 runs
  python benchmarks/distributed_bench.py --runs=1             # what the tests run

Each run starts 2 processes of 2 CPU devices each (jax.distributed over localhost, gloo
collectives) on a fresh workdir: the smoke config's three programs (control, E-Mixup, Soft
E-Stitchup) over all four devices, 8 epochs checkpointed every 2, so a run crosses 4 checkpoint
saves and 4 evaluations. Processes that issue their collectives in different orders deadlock;
the driver issues them in one fixed order (train/driver.py, train/checkpoints.py). A run that
has not finished within `--timeout` seconds counts as hung: its processes dump every thread's
stack (faulthandler, SIGUSR1) into the run's log folder and are killed. Prints a line per run
and "N of M runs finished"; the exit status is 1 unless all did.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAIN = ["--config=configs/default.py:smoke", "--config.data.trials=1",
         "--config.sweep.methods=('control','e_mixup','soft_e_stitchup')",
         "--config.num_epochs=8", "--config.eval_every=2", "--config.chunk_epochs=2",
         "--config.checkpoint_every=2"]
# `embaug` with every thread's stack dumped on SIGUSR1 (what a hung run shows).
HOOK = ("import faulthandler, signal, sys\n"
        "faulthandler.register(signal.SIGUSR1, all_threads=True)\n"
        "from embaug_jax import cli\n"
        "sys.exit(cli.main(['embaug', *sys.argv[1:]]))\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(root: Path, env: dict, timeout: float) -> tuple[str, float]:
    """Runs the 2-process training in `root`; ("finished" / "failed" / "hung", seconds)."""
    port, procs = _free_port(), []
    for i in range(2):
        # Output to files, not pipes: a full pipe would block a process nobody reads yet.
        with open(root / f"{i}.err", "w") as err:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", HOOK, "train", *TRAIN, f"--workdir={root / 'w'}",
                 "--distributed", f"--coordinator_address=127.0.0.1:{port}",
                 "--num_processes=2", f"--process_id={i}", "--heartbeat_timeout=30"],
                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err))
    start = time.monotonic()
    while any(p.poll() is None for p in procs) and time.monotonic() - start < timeout:
        time.sleep(0.2)
    seconds = time.monotonic() - start
    if all(p.poll() is not None for p in procs):
        return ("finished" if all(p.returncode == 0 for p in procs) else "failed"), seconds
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGUSR1)
    time.sleep(2)
    for p in procs:
        p.kill()
        p.wait()
    return "hung", seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds after which a run counts as hung")
    parser.add_argument("--logs", type=Path, default=None,
                        help="an empty folder for the runs' workdirs and logs (default: a new "
                             "one in the system's temporary folder, kept for inspection)")
    args = parser.parse_args(argv)
    if args.logs is not None and args.logs.exists() and any(args.logs.iterdir()):
        parser.error(f"--logs={args.logs} is not empty; name a new or empty folder.")
    logs = args.logs or Path(tempfile.mkdtemp(prefix="distributed_bench."))
    logs.mkdir(parents=True, exist_ok=True)
    # One compilation cache for every run (the caller's, if it has one): after the first, a
    # run compiles nothing.
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1", PYTHONPATH=str(REPO),
               JAX_COMPILATION_CACHE_DIR=os.environ.get("JAX_COMPILATION_CACHE_DIR")
               or str(logs / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    finished = 0
    for run in range(args.runs):
        root = logs / f"run_{run:02d}"
        root.mkdir()
        outcome, seconds = one_run(root, env, args.timeout)
        finished += outcome == "finished"
        print(f"run {run + 1:2d}: {outcome} in {seconds:.0f} s"
              + ("" if outcome == "finished" else f" (stderr of both processes in {root})"),
              flush=True)
    print(f"{finished} of {args.runs} runs finished (logs in {logs})")
    return 0 if finished == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
