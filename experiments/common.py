"""What every study script shares: train a config on a dataset (resuming), then read its outputs.

Each script takes the same flags:
  --data=PATH        an embedding dataset (`embaug extract` output or `save_embeddings`);
                     omitted: the config's synthetic clusters
  --workdir=DIR      where the sweep, checkpoints, results and figures go
  --smoke            the config's `:smoke` variant (seconds; synthetic data unless --data)
  --config.a.b=V     any override of the config, as for `embaug train`
A finished workdir is not retrained: the sweep resumes from its last checkpoint, so a script
run again (or another script on the same workdir and config) only re-reads and re-reports.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Sequence

from embaug_jax.workdir import Workdir

REPO_ROOT = Path(__file__).resolve().parent.parent  # where configs/ is


def parse(argv: Sequence[str], description: str,
          extra: Sequence[tuple[str, dict]] = ()) -> tuple[argparse.Namespace, list[str]]:
    """The shared flags, plus `extra` (flag, argparse keywords) of one script."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", help="embedding dataset (directory or .npz)")
    parser.add_argument("--workdir", required=True, help="output directory")
    parser.add_argument("--smoke", action="store_true", help="the config's :smoke variant")
    for flag, kwargs in extra:
        parser.add_argument(flag, **kwargs)
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        parser.error(f"unrecognised arguments {bad}; overrides look like --config.a.b=value")
    return args, overrides


def run_study(config_file: str, args: argparse.Namespace, overrides: Sequence[str],
              variant: str | None = None) -> dict:
    """Trains (or resumes) `configs/<config_file>` in args.workdir; returns results.json."""
    from embaug_jax import cli

    arg = ",".join(filter(None, ["smoke" if args.smoke else None, variant]))
    config = str(REPO_ROOT / "configs" / config_file) + (f":{arg}" if arg else "")
    argv = ["embaug", "train", f"--config={config}", f"--workdir={args.workdir}", *overrides]
    if args.data:
        argv += ["--config.data.source=file", f"--config.data.path={args.data}"]
    code = cli.main(argv)
    if code:
        raise SystemExit(code)
    return load_results(args.workdir)


def load_results(workdir: str | Path) -> dict:
    path = Workdir(workdir).results_json
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the sweep in {workdir} has not finished.")
    return json.loads(path.read_text())


def load_metrics(workdir: str | Path) -> list[dict]:
    """metrics.jsonl: one row per member per evaluation."""
    path = Workdir(workdir).metrics
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    from embaug_jax.util import atomic_path

    path = Path(path)
    with atomic_path(path, replace=True) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def fmt(x, digits=4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
