"""The main job end to end: extract (cached) -> one compiled sweep -> Table 1 + figures."""

from __future__ import annotations

import os
import time

import ml_collections

from embaug_jax.report import format_summary
from embaug_jax.run.extract import run_extraction
from embaug_jax.run.train import train_and_evaluate, validate_config
from embaug_jax.util import UserError
from embaug_jax.workdir import Workdir


def run_demo(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Runs `config.extract` in the workdir's extraction folder, then `config.train` on its
    output in the training folder (`Workdir.extract`, `Workdir.train`).

    Both stages cache: a second run finds the embeddings (same fingerprint) and the finished
    checkpoints, and only rewrites the report. Returns the results dict of the sweep.
    """
    workdir = Workdir(workdir).check()
    if config.train.data.get("path"):
        raise UserError(f"config.train.data.path={config.train.data.path!r}: the demo trains on "
                        "its own extraction; to train on other data run `embaug train "
                        "--config.data.path=...`.")
    train_config = config.train.copy_and_resolve_references()
    train_config.data.source = "file"
    train_config.data.path = str(config.extract.get("output") or workdir.extract.embeddings)
    validate_config(train_config)  # before the extraction: a bad train config fails at once
    start = time.perf_counter()
    print(f"[1/2] embeddings: {config.extract.source.kind} -> {config.extract.text_model.path}",
          flush=True)
    embeddings = run_extraction(config.extract, workdir.extract)
    extracted = time.perf_counter()
    train_config.data.path = str(embeddings)
    print(f"[2/2] training: {embeddings}", flush=True)
    results = train_and_evaluate(train_config, workdir.train)
    done = time.perf_counter()
    print(format_summary(results))

    figures = sorted(p.name for p in workdir.train.figures())
    print(f"\nembeddings: {embeddings} ({extracted - start:.0f} s)")
    print(f"results:    {workdir.train.results_md} ({done - extracted:.0f} s training)")
    print(f"figures:    {', '.join(figures)} in {workdir.train}")
    print(f"total:      {done - start:.0f} s")
    return results
