"""Multi-process runs on one machine: `embaug train/extract --distributed` as 2 processes x 2 CPU
devices (jax.distributed over localhost, gloo collectives) against 1-process runs of the same
command; resumes across process counts; a process that dies or never joins; SIGTERM.

Each process is a subprocess of the checkout's own code (cwd and PYTHONPATH = the repository
root), bounded by a timeout. Commands that must stop part-way run through a hook that registers
a test command in `embaug_jax.cli` (train stopped by `on_chunk` after one chunk; extract with an
embedder that fails after some calls), so the CLI's whole `--distributed` path still runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from embaug_jax.workdir import Workdir

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 400  # per launch; a hang fails the test instead of stalling the suite
HEARTBEAT_S = 10

# Three members (padded to four) over all four devices; 12 epochs in three checkpointed chunks.
TRAIN = ["--config=configs/default.py:smoke", "--config.data.trials=1",
         "--config.sweep.methods=('control','e_mixup','soft_e_stitchup')",
         "--config.num_epochs=12", "--config.chunk_epochs=4", "--config.checkpoint_every=4"]

# The CLI plus two test commands: training that stops after one chunk (as if killed) and
# extraction whose text embedder raises after FAIL_AFTER calls in the processes FAIL_IN.
HOOK = r"""
import os, signal, sys
# SIGINT and SIGTERM as a shell's command finds them, even where the tests run with them ignored
# (a script's background job), which the command would respect.
for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, signal.SIG_DFL)
from embaug_jax import cli
from embaug_jax.embed import extraction
from embaug_jax.run import extract
from embaug_jax.run import train as run_train


def train_one_chunk(config, workdir):
    run_train.train_and_evaluate(config, workdir, on_chunk=lambda history, epochs_done: True)


class Failing:
    def __init__(self, inner, after):
        self.inner, self.after, self.calls = inner, after, 0

    def __getattr__(self, name):  # dim, fingerprint, devices: the real embedder's
        return getattr(self.inner, name)

    def embed(self, texts, **kw):
        if self.calls >= self.after:
            raise RuntimeError("test: embedder killed")
        self.calls += 1
        return self.inner.embed(texts, **kw)


def failing_extract(config, workdir):
    import jax
    embedder = extraction.build_text_embedder(config.text_model, extraction.config_devices(config))
    if str(jax.process_index()) in os.environ["FAIL_IN"].split(","):
        embedder = Failing(embedder, int(os.environ["FAIL_AFTER"]))
    extract.run_extraction(config, workdir, text_embedder=embedder)


cli.COMMANDS["train_one_chunk"] = cli.COMMANDS["train"]._replace(target="__main__:train_one_chunk")
cli.COMMANDS["failing_extract"] = cli.COMMANDS["extract"]._replace(
    target="__main__:failing_extract")
sys.exit(cli.main(["embaug", *sys.argv[1:]]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: str, args: list[str], workdir: Path, *, processes: int,
          env: dict | None = None, missing: tuple = (), init_timeout: int = 120,
          own_args: dict[int, list[str]] | None = None):
    """Starts `embaug command args` as `processes` processes of 2 CPU devices each; returns
    ({process id: Popen}, the folder of their stdout and stderr files). Processes numbered in
    `missing` are not started (they never join); `own_args[i]` are added to process i's.
    They share the session's compilation cache (conftest.py): a launch compiles only what no
    earlier one with the same process count did."""
    full_env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
                    JAX_DISABLE_MOST_OPTIMIZATIONS="1", JAX_PLATFORMS="cpu",
                    PYTHONPATH=str(REPO), **(env or {}))
    port = _free_port()
    logs = Path(tempfile.mkdtemp(prefix="logs.", dir=workdir.parent))
    procs = {}
    for i in range(processes):
        if i in missing:
            continue
        dist = ([] if processes == 1 else
                ["--distributed", f"--coordinator_address=127.0.0.1:{port}",
                 f"--num_processes={processes}", f"--process_id={i}",
                 f"--heartbeat_timeout={HEARTBEAT_S}", f"--initialization_timeout={init_timeout}"])
        # Output to files, not pipes: a full pipe would block a process nobody reads yet.
        with open(logs / f"{i}.out", "w") as out, open(logs / f"{i}.err", "w") as err:
            procs[i] = subprocess.Popen(
                [sys.executable, "-c", HOOK, command, *args, *(own_args or {}).get(i, []),
                 f"--workdir={workdir}", *dist],
                cwd=REPO, env=full_env, stdout=out, stderr=err, text=True)
    return procs, logs


def launch(command: str, args: list[str], workdir: Path, *, processes: int,
           env: dict | None = None, timeout: float = TIMEOUT_S, missing: tuple = (),
           init_timeout: int = 120, own_args: dict[int, list[str]] | None = None):
    """Runs `embaug command args` as `processes` processes of 2 CPU devices each (`start`);
    returns [(returncode, stdout, stderr, seconds until it exited)] per process."""
    start_time = time.monotonic()
    procs, logs = start(command, args, workdir, processes=processes, env=env, missing=missing,
                        init_timeout=init_timeout, own_args=own_args)
    ended = {}
    while len(ended) < len(procs) and time.monotonic() - start_time < timeout:
        for i, p in procs.items():
            if i not in ended and p.poll() is not None:
                ended[i] = time.monotonic() - start_time
        time.sleep(0.2)
    read = {i: ((logs / f"{i}.out").read_text(), (logs / f"{i}.err").read_text()) for i in procs}
    if len(ended) < len(procs):
        for p in procs.values():
            p.kill()
            p.wait()
        tails = "\n".join(f"--- process {i}:\n{read[i][1][-3000:]}" for i in procs)
        pytest.fail(f"embaug {command} on {processes} processes ran over {timeout} s:\n{tails}")
    return [(procs[i].returncode, *read[i], ended[i]) for i in procs]


def ok(results):
    for i, (code, _, err, _) in enumerate(results):
        assert code == 0, f"process {i} exited {code}:\n{err[-4000:]}"
    return results


def _leaves(obj, path=""):
    """Flattens a JSON document to {path: value}."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _leaves(val, f"{path}/{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in _leaves(val, f"{path}/{i}").items()}
    return {path: obj}


def _assert_close(got, want) -> int:
    """Equal JSON documents, floats to float32 rounding; returns how many floats were compared."""
    got, want = _leaves(got), _leaves(want)
    assert got.keys() == want.keys()
    floats = 0
    for k, v in want.items():
        if isinstance(v, float):
            floats += 1
            assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-6, nan_ok=True), k
        else:
            assert got[k] == v, k
    return floats


def assert_same_results(workdir: Path, reference: Path):
    got, want = (json.loads(Workdir(w).results_json.read_text()) for w in (workdir, reference))
    assert _assert_close(got, want) > 100
    got, want = ([json.loads(line) for line in Workdir(w).metrics.read_text().splitlines()]
                 for w in (workdir, reference))
    assert len(want) == 3 * 3  # members x evaluations
    _assert_close(got, want)


@pytest.fixture(scope="module")
def train_reference(tmp_path_factory):
    """The uninterrupted 1-process run every multi-process run must match, each member on one
    device (the members-only layout, the automatic one on CPU devices)."""
    workdir = tmp_path_factory.mktemp("train") / "one"
    (_, _, err, _), = ok(launch("train", TRAIN, workdir, processes=1))
    assert "control: 1 member(s) on a 2 x 1 (members x features) mesh" in err
    return workdir


def test_train_two_processes_equal_one(train_reference, tmp_path):
    split = [*TRAIN, "--config.devices_per_member=4"]  # every member over both processes
    results = ok(launch("train", split, tmp_path / "two", processes=2))
    assert_same_results(tmp_path / "two", train_reference)
    (_, out0, err0, _), (_, out1, err1, _) = results
    # Every process trains its share of the four devices; process 0 alone reports. Each of the
    # three groups has one member, split over all four devices: all-reduces across processes.
    assert re.search(r"training 3 members .*on 4 device\(s\)", err0) and "Soft E-Stitchup" in out0
    for err in (err0, err1):
        assert "stitchup: 1 member(s) on a 1 x 4 (members x features) mesh" in err
    assert "process 1 of 2 joined; 2 local of 4 devices" in err1
    assert "Soft E-Stitchup" not in out1 and "training 3 members" not in err1
    assert sorted(p.name for p in Workdir(tmp_path / "two").checkpoints.iterdir()) == ["12", "8"]
    # The same command on the finished workdir re-reports (it used to hang in the restore).
    (_, out0, _, _), (_, out1, _, _) = ok(launch("train", split, tmp_path / "two", processes=2))
    assert "Soft E-Stitchup" in out0 and "Soft E-Stitchup" not in out1
    assert_same_results(tmp_path / "two", train_reference)


def test_train_killed_resumes_on_another_process_count(train_reference, tmp_path):
    # One chunk on 1 process, the next on 2 (resumed 1 -> 2), the last on 1 (resumed 2 -> 1).
    workdir = tmp_path / "run"
    ok(launch("train_one_chunk", TRAIN, workdir, processes=1))
    assert not Workdir(workdir).results_json.exists()
    results = ok(launch("train_one_chunk", TRAIN, workdir, processes=2))
    assert all("resumed from" in err and "at epoch 4" in err for _, _, err, _ in results)
    assert not Workdir(workdir).results_json.exists()
    assert sorted(p.name for p in Workdir(workdir).checkpoints.iterdir()) == ["4", "8"]
    (_, _, err, _), = ok(launch("train", TRAIN, workdir, processes=1))
    assert "resumed from" in err and "at epoch 8" in err
    assert_same_results(workdir, train_reference)


def test_sigterm_stops_every_process_in_one_line_and_a_rerun_resumes(tmp_path):
    # What `timeout` or a scheduler sends; JAX's preemption service used to swallow it.
    args = [*TRAIN[:2], "--config.num_epochs=400", "--config.chunk_epochs=4",
            "--config.checkpoint_every=4"]
    workdir = tmp_path / "run"
    checkpoints = Workdir(workdir).checkpoints
    procs, logs = start("train", args, workdir, processes=2)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        # A finished orbax checkpoint is a folder named by its epoch.
        while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
            assert all(p.poll() is None for p in procs.values()), "a process ended early"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        codes = {i: p.wait(timeout=60) for i, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, code in codes.items():
        err = (logs / f"{i}.err").read_text()
        lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
        assert code == 128 + signal.SIGTERM and "Traceback" not in err, err[-3000:]
        assert lines[-1] == (f"embaug train: process {i} of 2 interrupted by SIGTERM (the other "
                             f"processes stop within --heartbeat_timeout={HEARTBEAT_S} s); rerun "
                             "the same command to resume.")
    last = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert last < 400
    (_, out, err, _), = ok(launch("train", args, workdir, processes=1))
    assert f"resumed from {checkpoints} at epoch {last}" in err
    assert Workdir(workdir).results_json.exists() and "Soft E-Stitchup" in out


def _extract_args(table: Path) -> list[str]:
    # 10 rows in shards of 2: five shards, shared 3 + 2 between two processes.
    return ["--config=configs/extract/table.py", f"--config.source.path={table}",
            "--config.source.text_columns=title,description",
            "--config.source.label_column=category", "--config.source.id_column=sku",
            "--config.text_model.path=builtin:minilm", "--config.text_model.max_length=16",
            "--config.text_model.batch_size=4", "--config.shard_size=2", "--config.progress=False"]


def dir_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def extract_reference(tmp_path_factory, make_table):
    root = tmp_path_factory.mktemp("extract")
    table = make_table(root, n=10)
    ok(launch("extract", _extract_args(table), root / "one", processes=1))
    return table, dir_bytes(root / "one" / "embeddings")


def test_extract_two_processes_byte_identical(extract_reference, tmp_path):
    table, want = extract_reference
    (_, _, err0, _), (_, _, err1, _) = ok(
        launch("extract", _extract_args(table), tmp_path / "two", processes=2))
    assert "process 0 of 2 embeds shards [0, 2, 4] (5 unfinished of 5)" in err0
    assert "process 1 of 2 embeds shards [1, 3] (5 unfinished of 5)" in err1
    assert dir_bytes(tmp_path / "two" / "embeddings") == want
    assert not Workdir(tmp_path / "two").shards.exists()


def test_extract_process_dies_others_stop_then_resume_on_one(extract_reference, tmp_path):
    table, want = extract_reference
    workdir = tmp_path / "run"
    # Process 1 fails at its first embedding; process 0 embeds its three shards, then waits
    # for process 1 at the barrier until the heartbeat timeout stops it.
    (code0, _, err0, t0), (code1, _, err1, t1) = launch(
        "failing_extract", _extract_args(table), workdir, processes=2,
        env={"FAIL_IN": "1", "FAIL_AFTER": "0"})
    assert code1 == 1 and "process 1 of 2 failed (RuntimeError: test: embedder killed)" in err1
    # XLA words the missed heartbeat by where it surfaces: its error poll, or the barrier.
    assert code0 != 0 and re.search(r"stopped sending heartbeats|Task 1 heartbeat timeout",
                                    err0), err0[-3000:]
    assert t1 < t0 < t1 + HEARTBEAT_S + 60, (t0, t1)
    shards = sorted(p.name for p in Workdir(workdir).shards.glob("shard_*.npy"))
    assert shards == ["shard_00000.npy", "shard_00002.npy", "shard_00004.npy"]
    ok(launch("extract", _extract_args(table), workdir, processes=1))
    assert dir_bytes(workdir / "embeddings") == want


def test_extract_killed_on_one_resumes_on_two(extract_reference, tmp_path):
    table, want = extract_reference
    workdir = tmp_path / "run"
    # Two text fields: four calls are two shards.
    (code, _, err, _), = launch("failing_extract", _extract_args(table), workdir, processes=1,
                                env={"FAIL_IN": "0", "FAIL_AFTER": "4"})
    assert code != 0 and "test: embedder killed" in err
    assert len(list(Workdir(workdir).shards.glob("shard_*.npy"))) == 2
    (_, _, err0, _), (_, _, err1, _) = ok(
        launch("extract", _extract_args(table), workdir, processes=2))
    assert "process 0 of 2 embeds shards [2, 4] (3 unfinished of 5)" in err0
    assert "process 1 of 2 embeds shards [3] (3 unfinished of 5)" in err1
    assert dir_bytes(workdir / "embeddings") == want


def test_consecutive_two_process_runs_all_finish(tmp_path):
    # benchmarks/distributed_bench.py, one run instead of its 20 (benchmarks/README.md has
    # that figure; the other 2-process trainings here are more runs): processes that issue
    # their collectives in different orders deadlock. Its logs go to tmp_path, and it uses the
    # session's compilation cache.
    runs = 1
    done = subprocess.run([sys.executable, "benchmarks/distributed_bench.py", f"--runs={runs}",
                           f"--timeout={TIMEOUT_S}", f"--logs={tmp_path / 'logs'}"], cwd=REPO,
                          capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)),
                          timeout=runs * (TIMEOUT_S + 30))
    assert done.returncode == 0 and f"{runs} of {runs} runs finished" in done.stdout, (
        done.stdout + done.stderr[-3000:])


@pytest.mark.parametrize("difference", ["config", "data"])
def test_processes_started_with_different_configs_refuse_together(difference, tmp_path):
    from embaug_jax.dataset import save_embeddings
    from embaug_jax.train.synthetic import make_synthetic

    if difference == "config":
        args, own = TRAIN, {1: ["--config.num_epochs=16", "--config.optim.lr_max=0.01"]}
        words = ("process 1 differs from process 0 in num_epochs, optim.lr_max",
                 "num_epochs: 12 on process 0, 16 on process 1")
    else:  # the same path on two hosts, other files behind it
        for i in (0, 1):
            ds = make_synthetic(i, 160, 8, 4, class_sep=2.0)
            save_embeddings(tmp_path / f"data{i}", ds.embeddings, ds.labels, ds.class_names)
        args, own = TRAIN, {i: [f"--config.data.path={tmp_path / f'data{i}'}"] for i in (0, 1)}
        words = ("different datasets", "differs from process 0 in data_content",)
    results = launch("train", args, tmp_path / "w", processes=2, own_args=own, timeout=200)
    for code, _, err, seconds in results:
        assert code == 2 and "Traceback" not in err, err[-3000:]
        assert all(w in err for w in words) and "the same command" in err, err[-3000:]
        assert seconds < 120  # at once, not after a heartbeat or barrier timeout
    # Nothing written (process 0 exits at once, leaving its lock file where it took one).
    assert not (tmp_path / "w").exists() or [p.name for p in (tmp_path / "w").iterdir()] == [
        ".embaug.lock"]


def test_a_process_that_never_joins_stops_the_others(tmp_path):
    # Process 1 is never started: process 0 gives up after --initialization_timeout.
    (code, _, err, seconds), = launch("train", TRAIN, tmp_path / "w", processes=2, missing=(1,),
                                      init_timeout=5, timeout=120)
    assert code != 0 and "waiting up to 5 s for every process" in err and seconds < 5 + 60
    assert "DEADLINE_EXCEEDED" in err, err[-3000:]
    assert not (tmp_path / "w").exists()


def test_distributed_flags_errors(tmp_path, capsys):
    from embaug_jax import cli

    assert cli.main(["embaug", "train", "--config=configs/default.py:smoke",
                     f"--workdir={tmp_path}", "--distributed", "--heartbeat_timeout=0"]) == 2
    assert "--heartbeat_timeout=0 must be >= 1" in capsys.readouterr().err
    # No cluster to detect and no coordinator given: told which flags to pass, before any work.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR", "KUBERNETES"))}
    done = subprocess.run([sys.executable, "-m", "embaug_jax", "train",
                           "--config=configs/default.py:smoke", f"--workdir={tmp_path / 'w'}",
                           "--distributed"], cwd=REPO, env=dict(env, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "pass --coordinator_address=HOST:PORT" in done.stderr
    assert not (tmp_path / "w").exists()
