"""End-to-end rate of the extraction pipeline on WordNet with MiniLM, beside the bare embedder.

    python benchmarks/extract_bench.py [--items 2000] [--shard-size 1000] [--num-devices 0]

Measured in one process, on the same items (WordNet noun synsets, fields lemmas + gloss):
  1. the pipeline, cold: source loading, model loading, compiling, embedding, shards, assembly;
  2. the pipeline again in a fresh workdir, warm (programs compiled);
  3. the bare `TextEmbedder.embed` on the same texts, warm: what the pipeline adds is 2 vs 3;
  4. a re-run on the finished workdir ("cached, skipping").
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from embaug_jax import configlib
from embaug_jax.embed import extraction
from embaug_jax.run import extract
from embaug_jax.sources import load_source

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--num-devices", type=int, default=0)
    args = parser.parse_args()

    import jax

    config = configlib.get_config(REPO / "configs" / "extract" / "wordnet_minilm.py")
    config.source.max_items = args.items
    config.shard_size = args.shard_size
    config.num_devices = args.num_devices
    config.progress = False
    n = len(load_source(config))

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        extract.run_extraction(config, Path(tmp) / "cold")
        cold = time.perf_counter() - t0

        # The same embedder object for the warm pipeline run and the bare calls: both reuse
        # the programs compiled above only if they share it.
        embedder = extraction.build_text_embedder(config.text_model,
                                                  extraction.config_devices(config))
        data = load_source(config)
        for field in ("lemmas", "gloss"):  # compile every bucket once
            embedder.embed(data.texts[field])
        t0 = time.perf_counter()
        extract.run_extraction(config, Path(tmp) / "warm", text_embedder=embedder)
        warm = time.perf_counter() - t0

        t0 = time.perf_counter()
        for field in ("lemmas", "gloss"):
            embedder.embed(data.texts[field])
        bare = time.perf_counter() - t0

        t0 = time.perf_counter()
        extract.run_extraction(config, Path(tmp) / "cold")
        cached = time.perf_counter() - t0

    print(f"WordNet nouns, {n} items x 2 fields (lemmas, gloss), MiniLM, max_length "
          f"{config.text_model.max_length}, batch {config.text_model.batch_size}, shards of "
          f"{args.shard_size}, {jax.local_device_count()} device(s) [{jax.default_backend()}]")
    print(f"{'run':<34}{'seconds':>9}{'items/s':>10}{'vs bare':>9}")
    for name, secs in (("pipeline, cold (load+compile)", cold), ("pipeline, warm", warm),
                       ("bare TextEmbedder.embed, warm", bare)):
        print(f"{name:<34}{secs:>9.2f}{n / secs:>10.1f}{bare / secs:>9.2f}")
    print(f"{'re-run on finished output (cached)':<34}{cached:>9.2f}")


if __name__ == "__main__":
    main()
