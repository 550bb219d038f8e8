"""Tests for embaug_jax.run.extract: resume, atomicity, fingerprints and caching (with fake
embedders that count their calls), bad images, and real MiniLM / Lite0 runs of the smoke
configs."""

import hashlib
import json
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from embaug_jax import cli, compiles, configlib
from embaug_jax.dataset import load_embeddings
from embaug_jax.embed.extraction import resolve_model_path
from embaug_jax.embed.images import decode_image
from embaug_jax.run import extract

EXTRACT_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "extract"
fashion_mnist_lite0, fashion_products, table, wordnet_minilm = (
    configlib.load_module(EXTRACT_CONFIGS / f"{name}.py")
    for name in ("fashion_mnist_lite0", "fashion_products", "table", "wordnet_minilm"))


def text_vector(text: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class FakeTextEmbedder:
    """Deterministic stand-in for TextEmbedder: a hash-seeded vector per text; counts calls."""

    def __init__(self, dim: int = 6, tag: str = "v1", fail_after: int | None = None):
        self.dim, self.tag, self.fail_after, self.calls = dim, tag, fail_after, 0

    def fingerprint(self) -> str:
        return f"fake-text-{self.tag}-{self.dim}"

    def embed(self, texts, *, progress=False):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("killed")
        self.calls += 1
        return np.stack([text_vector(t, self.dim) for t in texts])


class FakeImageEmbedder:
    """Per-channel mean and std of each image (paths decoded like the real embedder)."""

    dim = 6

    def __init__(self):
        self.calls = 0
        self.seen = []

    def fingerprint(self) -> str:
        return "fake-image"

    def embed(self, images, *, progress=False):
        self.calls += 1
        self.seen.append(images)
        arrays = [decode_image(i) if isinstance(i, str) else i for i in images]
        return np.stack([np.concatenate([a.mean((0, 1)), a.std((0, 1))]) for a in arrays])


def table_config(path: Path, **overrides) -> ml_collections.ConfigDict:
    c = table.get_config()
    c.source.path = str(path)
    c.source.text_columns = "title,description"
    c.source.label_column = "category"
    c.source.id_column = "sku"
    c.shard_size = 3
    c.progress = False
    c.update_from_flattened_dict(overrides)
    return c


def dir_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_output_layout_segments_and_values(tmp_path, make_table):
    path = make_table(tmp_path)
    config = table_config(path, fields="description,title")
    out = extract.run_extraction(config, tmp_path / "w", text_embedder=FakeTextEmbedder())
    ds = load_embeddings(out)
    frame = pd.read_csv(path)
    assert [(s.name, s.size) for s in ds.segments] == [("description", 6), ("title", 6)]
    assert ds.ids.tolist() == frame.sku.tolist() and ds.class_names == ["c0", "c1", "c2"]
    np.testing.assert_array_equal(ds.labels, [i % 3 for i in range(len(frame))])
    expected = np.stack([np.concatenate([text_vector(d, 6), text_vector(t, 6)])
                         for d, t in zip(frame.description, frame.title)])
    np.testing.assert_array_equal(ds.embeddings, expected)
    assert len(ds.info["fingerprint"]) == 64 and ds.info["source"]["kind"] == "table"
    assert not (tmp_path / "w" / "shards").exists()  # removed after assembly by default
    npz = extract.run_extraction(table_config(path, fields="description,title",
                                              output=str(tmp_path / "one.npz")),
                                 tmp_path / "w3", text_embedder=FakeTextEmbedder())
    np.testing.assert_array_equal(load_embeddings(npz).embeddings, expected)
    with pytest.raises(ValueError, match=r"config.fields names \['colour'\]"):
        extract.run_extraction(table_config(path, fields="colour"), tmp_path / "w2",
                               text_embedder=FakeTextEmbedder())


def test_the_summary_gives_the_time_spent_compiling(tmp_path, make_table, caplog):
    import logging

    with compiles.clock() as clock:
        jax.jit(lambda x: x * 3 + 1)(np.ones(7))
    assert clock["programs"] >= 1 and clock["seconds"] > 0
    after = dict(clock)
    jax.jit(lambda x: x - 2)(np.ones(3))  # outside the block: not counted
    assert clock == after

    add = jax.jit(lambda x: x + 1)

    class Compiling(FakeTextEmbedder):
        def embed(self, texts, *, progress=False):
            return np.asarray(add(super().embed(texts)))

    caplog.set_level(logging.INFO)
    extract.run_extraction(table_config(make_table(tmp_path)), tmp_path / "w",
                           text_embedder=Compiling())
    [line] = [r.getMessage() for r in caplog.records if "extract: wrote" in r.getMessage()]
    # Shards of 3, 3, 3 and 2 texts: a program for each shape.
    assert "s of it (" in line and "compiling 2 XLA programs" in line, line


def test_the_compile_clock_counts_overlapping_compiles_once():
    assert compiles.covered_seconds([]) == 0
    assert compiles.covered_seconds([(5.0, 6.0), (0.0, 2.0)]) == 3.0  # disjoint: the sum
    assert compiles.covered_seconds([(0.0, 2.0), (1.0, 3.0), (2.5, 2.75)]) == 3.0  # overlapping
    assert compiles.covered_seconds([(0.0, 4.0), (1.0, 2.0), (3.0, 5.0)]) == 5.0  # nested

    # Each event ends as it is recorded and started `duration` earlier.
    event = "/jax/core/compile/backend_compile_duration"
    with compiles.clock() as clock:
        jax.monitoring.record_event_duration_secs(event, 1.0)
        jax.monitoring.record_event_duration_secs(event, 0.5)  # overlaps the first one
    assert 1.0 <= clock["seconds"] < 1.2 and clock["programs"] == 2
    with compiles.clock() as clock:
        jax.monitoring.record_event_duration_secs(event, 0.05)
        time.sleep(0.2)
        jax.monitoring.record_event_duration_secs(event, 0.05)  # after the first one
        jax.monitoring.record_event_duration_secs("/jax/other/event", 9.0)  # not a compile
    assert clock["seconds"] == pytest.approx(0.1) and clock["programs"] == 2


def test_resume_redoes_no_finished_shard_and_matches_byte_for_byte(tmp_path, monkeypatch,
                                                                    make_table):
    path = make_table(tmp_path)  # 11 items, shards of 3 -> 4 shards x 2 text fields
    reference = FakeTextEmbedder()
    ref_out = extract.run_extraction(table_config(path), tmp_path / "ref",
                                     text_embedder=reference)
    assert reference.calls == 8

    work = tmp_path / "resumed"
    # Killed in the middle of shard 2 (after its first field).
    with pytest.raises(RuntimeError, match="killed"):
        extract.run_extraction(table_config(path), work,
                               text_embedder=FakeTextEmbedder(fail_after=5))
    shards = work / "shards"
    assert sorted(p.name for p in shards.glob("shard_*")) == ["shard_00000.npy", "shard_00001.npy"]
    assert not (work / "embeddings").exists()
    # What a kill in the middle of writing a shard leaves: a temporary, never a shard.
    (shards / ".shard_00002.npy.abc123.tmp").mkdir()
    (shards / ".shard_00002.npy.abc123.tmp" / "shard_00002.npy").write_bytes(b"half")

    # Killed during the final assembly.
    def crash(*args, **kwargs):
        raise RuntimeError("killed while saving")

    monkeypatch.setattr(extract, "save_embeddings", crash)
    second = FakeTextEmbedder()
    with pytest.raises(RuntimeError, match="killed while saving"):
        extract.run_extraction(table_config(path), work, text_embedder=second)
    assert second.calls == 4  # shards 2 and 3 only
    assert not (work / "embeddings").exists() and not list(shards.glob(".*.tmp"))
    monkeypatch.undo()

    third = FakeTextEmbedder()
    out = extract.run_extraction(table_config(path), work, text_embedder=third)
    assert third.calls == 0
    assert dir_bytes(out) == dir_bytes(ref_out)


def test_a_table_in_many_batches_and_shards_is_the_table_read_whole(tmp_path, monkeypatch):
    from embaug_jax.sources import table_reader

    # Batches of 3 rows, shards of 7 items: ids of every width, classes and missing labels
    # cross both boundaries.
    monkeypatch.setattr(table_reader, "_BATCH_CHARS", 1)
    monkeypatch.setattr(table_reader, "_MIN_ROWS", 3)
    rng = np.random.default_rng(0)
    rows = [{"sku": "\u00e9" * (i % 5) + f"s{i}", "title": f"title {i}",
             "description": " ".join(rng.choice(["red", "soft", "coat"], 3)),
             "category": "" if i % 13 == 4 else f"c{rng.integers(0, 4)}"} for i in range(100)]
    path = tmp_path / "items.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    out = extract.run_extraction(table_config(path, shard_size=7), tmp_path / "w",
                                 text_embedder=FakeTextEmbedder())
    ds = load_embeddings(out)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    whole = frame[frame.category != ""]
    assert ds.ids.tolist() == whole.sku.tolist()
    assert ds.ids.dtype == np.asarray(whole.sku.tolist()).dtype
    assert [ds.class_names[i] for i in ds.labels] == whole.category.tolist()
    assert ds.class_names == sorted(set(whole.category))
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(
        ds.embeddings, [np.concatenate([text_vector(t, 6), text_vector(d, 6)])
                        for t, d in zip(whole.title, whole.description)])


class BatchedTextEmbedder(FakeTextEmbedder):
    """Reports its work in batches of 2 texts, as TextEmbedder does through `on_batch`."""

    def embed(self, texts, *, progress=False, on_batch=None):
        out = super().embed(texts)
        for start in range(0, len(texts), 2):
            on_batch(min(2, len(texts) - start))
        return out


def test_progress_advances_per_batch_with_rate_and_eta(tmp_path, monkeypatch, make_table):
    import tqdm.auto

    seen = []

    class Recorder(tqdm.auto.tqdm):
        def update(self, n=1):
            super().update(n)
            if self.desc.startswith("extract"):
                seen.append((n, self.n, self.total, str(self)))

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    path = make_table(tmp_path)  # 11 items in shards of 3, 2 text fields, batches of 2 texts
    extract.run_extraction(table_config(path, progress=True), tmp_path / "w",
                           text_embedder=BatchedTextEmbedder())
    # Shards of 3, 3, 3, 2 items: 2 + 2 + 2 + 1 batches per field, 2 fields.
    assert [n for n, *_ in seen] == [2, 1] * 6 + [2, 2]
    assert seen[-1][1] == seen[-1][2] == 22  # every item x field
    first = seen[0][3]  # the bar after the first batch, long before the first shard is done
    assert "2/22" in first and "emb/s" in first and "?" not in first, first
    # An embedder without `on_batch` still advances the bar, once per call.
    seen.clear()
    extract.run_extraction(table_config(path, progress=True), tmp_path / "w2",
                           text_embedder=FakeTextEmbedder())
    assert [n for n, *_ in seen] == [3, 3] * 3 + [2, 2]


def test_cache_skip_stale_outputs_and_overwrite(tmp_path, make_table):
    path = make_table(tmp_path)
    work = tmp_path / "w"
    extract.run_extraction(table_config(path, keep_shards=True), work,
                           text_embedder=FakeTextEmbedder())
    assert (work / "shards" / "manifest.json").is_file()
    again = FakeTextEmbedder()
    out = extract.run_extraction(table_config(path), work, text_embedder=again)
    assert again.calls == 0 and out == work / "embeddings"
    assert not (work / "shards").exists()  # keep_shards=False tidies up on a cached run too
    # Moving the data does not invalidate its embeddings: the content is what counts.
    moved = tmp_path / "moved" / "items.csv"
    moved.parent.mkdir()
    moved.write_bytes(path.read_bytes())
    extract.run_extraction(table_config(moved), work, text_embedder=again)
    assert again.calls == 0

    with pytest.raises(ValueError, match=r"differs in: text_model\).*overwrite=True"):
        extract.run_extraction(table_config(path), work, text_embedder=FakeTextEmbedder(tag="v2"))
    with pytest.raises(ValueError, match=r"differs in: shard_size"):
        extract.run_extraction(table_config(path, shard_size=4), work,
                               text_embedder=FakeTextEmbedder())
    frame = pd.read_csv(path)
    frame.loc[4, "title"] = "an edited title"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"differs in: source_content"):
        extract.run_extraction(table_config(path), work, text_embedder=FakeTextEmbedder())
    redo = FakeTextEmbedder()
    extract.run_extraction(table_config(path, overwrite=True), work, text_embedder=redo)
    assert redo.calls == 8
    np.testing.assert_array_equal(load_embeddings(work / "embeddings").embeddings[4, :6],
                                  text_vector("an edited title", 6))

    # Unfinished shards of other inputs are not reused either.
    other = tmp_path / "other"
    with pytest.raises(RuntimeError):
        extract.run_extraction(table_config(path), other,
                               text_embedder=FakeTextEmbedder(fail_after=3))
    with pytest.raises(ValueError, match=r"Unfinished shards.*differs in: text_model"):
        extract.run_extraction(table_config(path), other, text_embedder=FakeTextEmbedder(tag="v2"))


def write_image_table(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        name = f"img/{i}.png"
        if i == 1:
            (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # corrupt
        elif i != 2:  # 2 is missing
            Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)).save(
                tmp_path / name)
        rows.append({"id": f"p{i}", "title": f"thing {i}", "photo": "" if i == 4 else name,
                     "label": "ab"[i % 2]})
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bad_images_are_listed_together_or_skipped(tmp_path):
    path = write_image_table(tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["label"] = "c"  # a class whose one item is skipped: dropped from the dataset
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = table_config(path, **{"source.text_columns": "title", "source.image_columns": "photo",
                                   "source.label_column": "label", "source.id_column": "id"})
    text, image = FakeTextEmbedder(), FakeImageEmbedder()
    with pytest.raises(ValueError, match=r"3 item\(s\).*\n  p1: photo: .*1.png.*\n  p2: photo: "
                                         r"missing file.*\n  p4: photo: no image path given"):
        extract.run_extraction(config, tmp_path / "w", text_embedder=text, image_embedder=image)
    assert text.calls == image.calls == 0  # checked before any embedding
    assert not (tmp_path / "w" / "embeddings").exists()

    config.skip_bad_images = True
    out = extract.run_extraction(config, tmp_path / "w", text_embedder=text,
                                 image_embedder=image)
    ds = load_embeddings(out)
    assert ds.ids.tolist() == ["p0", "p3", "p5"]
    assert ds.class_names == ["a", "b"] and ds.labels.tolist() == [0, 1, 1]
    assert [(s.name, s.size) for s in ds.segments] == [("title", 6), ("photo", 6)]
    report = json.loads((tmp_path / "w" / "skipped_images.json").read_text())
    assert report["count"] == 3 and sorted(report["items"]) == ["p1", "p2", "p4"]
    assert ds.info["skipped_images"] == 3
    pixels = decode_image(tmp_path / "img" / "3.png")
    np.testing.assert_allclose(ds.embeddings[1, 6:9], pixels.mean((0, 1)), rtol=1e-6)


def test_an_image_path_that_is_a_named_pipe_is_a_bad_image_not_a_hang(tmp_path):
    import os

    path = write_image_table(tmp_path)
    os.mkfifo(tmp_path / "img" / "fifo.png")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["photo"] = "img/fifo.png"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = table_config(path, **{"source.text_columns": "title", "source.image_columns": "photo",
                                   "source.label_column": "label", "source.id_column": "id",
                                   "skip_bad_images": True})
    out = extract.run_extraction(config, tmp_path / "w", text_embedder=FakeTextEmbedder(),
                                 image_embedder=FakeImageEmbedder())
    report = json.loads((tmp_path / "w" / "skipped_images.json").read_text())
    assert "named pipe" in report["items"]["p0"]
    assert load_embeddings(out).ids.tolist() == ["p3", "p5"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_table_read_in_batches_gives_the_dataset_of_the_table_read_whole(tmp_path, fmt,
                                                                         monkeypatch):
    from embaug_jax.sources import table_reader

    path = make_table_like(tmp_path, fmt, n=40)
    config = lambda: table_config(path, shard_size=7, keep_shards=False,
                                  **{"source.max_items": 30})
    monkeypatch.setattr(table_reader, "_MIN_ROWS", 1 << 30)  # the whole table in one batch
    monkeypatch.setattr(table_reader, "_READ_BYTES", 1 << 30)
    whole = extract.run_extraction(config(), tmp_path / "whole", text_embedder=FakeTextEmbedder())
    monkeypatch.setattr(table_reader, "_BATCH_CHARS", 1)  # batches of 2 rows, reads of 3 bytes
    monkeypatch.setattr(table_reader, "_MIN_ROWS", 2)
    monkeypatch.setattr(table_reader, "_READ_BYTES", 3)
    batched = extract.run_extraction(config(), tmp_path / "batched",
                                     text_embedder=FakeTextEmbedder())
    assert dir_bytes(batched) == dir_bytes(whole)
    assert len(load_embeddings(batched)) == 30


def make_table_like(folder: Path, fmt: str, n: int) -> Path:
    """The conftest table's items (sku, title, description, category) as a `fmt` file, with
    multi-byte characters in every text."""
    rng = np.random.default_rng(1)
    words = ["r\u00f6d", "blue", "\u65e5\u672c", "cotton", "shirt", "jeans", "l\u00een"]
    frame = pd.DataFrame([{"sku": f"s{i:03d}", "title": " ".join(rng.choice(words, 3)),
                           "description": " ".join(rng.choice(words, 6)),
                           "category": f"c{i % 3}"} for i in range(n)])
    path = folder / f"items.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.needs_fashion_mnist
def test_fashion_mnist_arrays_reach_the_image_embedder(tmp_path):
    config = fashion_mnist_lite0.get_config("smoke,split=test")
    config.progress = False
    image = FakeImageEmbedder()
    ds = load_embeddings(extract.run_extraction(config, tmp_path, image_embedder=image))
    assert len(ds) == 40 and ds.class_names[0] == "T-shirt/top"
    assert [(s.name, s.size) for s in ds.segments] == [("image", 6)]
    first = image.seen[0]
    assert isinstance(first, np.ndarray) and first.shape == (16, 28, 28, 3)
    assert first.dtype == np.uint8


# ---------------------------------------------------------------------------------- real models


@pytest.mark.slow
@pytest.mark.needs_wordnet
def test_wordnet_smoke_with_real_minilm_through_the_cli(tmp_path, monkeypatch, fast_compile):
    from embaug_jax.embed.bert.embedder import TextEmbedder

    argv = ["embaug", "extract", "--config=configs/extract/wordnet_minilm.py:smoke",
            "--config.source.max_items=30", "--config.progress=False",
            f"--workdir={tmp_path}"]
    # config_flags reads --config.* overrides from sys.argv, whatever argv cli.main is given.
    monkeypatch.setattr(sys, "argv", argv)
    assert cli.main(argv) == 0
    ds = load_embeddings(tmp_path / "embeddings")
    assert [(s.name, s.size) for s in ds.segments] == [("lemmas", 768), ("gloss", 768)]
    assert len(ds) == 30 and ds.num_classes >= 20

    # Oracle: the same model embedding each field on its own, outside the pipeline.
    from embaug_jax.sources import load_source

    config = wordnet_minilm.get_config("smoke")
    config.source.max_items = 30
    data = load_source(config)
    assert data.ids.tolist() == ds.ids.tolist()
    embedder = TextEmbedder.from_pretrained(resolve_model_path("builtin:minilm"),
                                            max_length=256, batch_size=32)
    np.testing.assert_allclose(ds.embeddings[:, :768], embedder.embed(data.texts["lemmas"]),
                               atol=1e-5)
    np.testing.assert_allclose(ds.embeddings[:, 768:], embedder.embed(data.texts["gloss"]),
                               atol=1e-5)
    assert ds.info["text_model"]["fingerprint"] == embedder.fingerprint()

    # A second run skips extraction without embedding anything.
    monkeypatch.setattr(TextEmbedder, "embed", lambda *a, **k: pytest.fail("re-embedded"))
    assert cli.main(argv) == 0


def test_one_and_four_devices_give_the_same_output(tmp_path, fast_compile, make_table):
    assert jax.local_device_count() == 4  # conftest forces 4 host devices
    path = make_table(tmp_path, n=10)
    outputs = []
    for n in (1, 4):
        c = table.get_config("smoke")
        c.source.path, c.source.text_columns = str(path), "title,description"
        c.source.label_column, c.source.id_column = "category", "sku"
        c.num_devices, c.progress, c.text_model.max_length = n, False, 32
        out = extract.run_extraction(c, tmp_path / f"d{n}")
        outputs.append(load_embeddings(out).embeddings)
    assert outputs[0].shape == (10, 2 * 768)
    # Equal up to float32 rounding: XLA picks its matmul kernels by the per-device batch shape.
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)


@pytest.mark.slow
def test_fashion_products_smoke_with_real_minilm_and_lite0(tmp_path, fast_compile,
                                                          write_fashion_products):
    ids = write_fashion_products(tmp_path / "data", n=5, corrupt={"1001"}, missing={"1003"})
    config = fashion_products.get_config("smoke")
    config.source.root = str(tmp_path / "data")
    config.progress = False
    with pytest.raises(ValueError, match=r"(?s)2 item\(s\).*1001.*1003"):
        extract.run_extraction(config, tmp_path / "w")
    config.skip_bad_images = True
    ds = load_embeddings(extract.run_extraction(config, tmp_path / "w"))
    assert ds.ids.tolist() == [i for i in ids if i not in ("1001", "1003")]
    assert [(s.name, s.size) for s in ds.segments] == [
        ("title", 768), ("description", 768), ("image", 1280)]
    assert np.isfinite(ds.embeddings).all() and ds.info["skipped_images"] == 2


@pytest.mark.parametrize("module", [wordnet_minilm, table, fashion_products, fashion_mnist_lite0],
                         ids=lambda module: Path(module.__file__).stem)
def test_configs_have_smoke_variants_and_document_their_command(module):
    name = Path(module.__file__).stem
    assert module.__doc__.startswith(f"embaug extract --config=configs/extract/{name}.py")
    full, smoke = module.get_config(), module.get_config("smoke")
    assert full.keys() == smoke.keys() and full.source.keys() == smoke.source.keys()
    assert smoke.shard_size < full.shard_size
    with pytest.raises(ValueError, match="unknown config variant 'smok'; known: smoke"):
        module.get_config("smok")
