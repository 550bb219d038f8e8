"""The accelerator check (benchmarks/device_check.py): its test selection still names tests, and
in its reduced CPU form every step runs and one dated report says what passed."""

import os
import re
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STEPS = ("environment", "tests", "train_bench", "text_bench", "image_bench")


# The step limits' multiplier: the reduced check takes under 2 minutes on the quiet 2-core CPU
# (benchmarks/README.md, "device check"), and this test shares the machine with other jobs.
SLACK = 3


@pytest.mark.parametrize("variant", ["full", "reduced"])
def test_every_keyword_selects_a_test(variant):
    """A test renamed or removed would leave the check silently: each keyword of its -k
    selection names at least one test of the files it runs."""
    check = runpy.run_path(str(REPO / "benchmarks" / "device_check.py"), run_name="device_check")
    names = [name for f in check["TESTS"]
             for name in re.findall(r"^def (test_\w+)", (REPO / f).read_text(), re.M)]
    for keyword in check["KEYWORDS"][variant]:
        assert any(keyword in name for name in names), keyword


@pytest.mark.slow
def test_reduced_check_writes_one_report_of_every_step(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)  # the check's own subprocesses choose their devices
    start = time.monotonic()
    done = subprocess.run([sys.executable, "benchmarks/device_check.py", "--reduced",
                           f"--out={tmp_path}", f"--slack={SLACK}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120 * SLACK + 120)
    seconds = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-3000:]
    reports = list(tmp_path.glob("device_check_*_cpu_reduced.md"))
    assert len(reports) == 1, done.stdout
    text = reports[0].read_text()
    table = {line.split("|")[1].strip(): line.split("|")[2].strip()
             for line in text.splitlines() if line.startswith("| ") and "|---" not in line}
    for step in STEPS:
        assert table[step] == "passed", (step, table[step], text[-4000:])
        assert f"## {step}" in text
    # What each step is there to show: pytest's summary and every benchmark's table.
    tests = text.split("## tests")[1].split("## train_bench")[0]
    assert " passed" in tests and "failed" not in tests
    assert "| 5 | one E-Mixup member examples/s, 2 devices vs 1 |" in text
    assert "| 8 | all-reduce over 2 devices a step" in text
    assert "| minilm | long (16) |" in text and "variant" in text
    assert seconds < 120 * SLACK + 60, seconds
