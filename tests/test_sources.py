"""Tests for embaug_jax.sources: real WordNet and Fashion-MNIST, TFDS mocks, fixtures."""

import collections
import gzip
import json
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd
import pytest

from embaug_jax import configlib, sources
from embaug_jax.dataset import class_ids

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
common = configlib.load_module(CONFIGS / "extract" / "common.py")
WORDNET = Path(common.source("wordnet").root)


def cfg(kind, **knobs):
    """An extract config whose source is `kind` with every knob at its default but `knobs`."""
    source = (common.source(kind) if kind in sources.SOURCE_KINDS
              else ml_collections.ConfigDict({"kind": kind}))
    source.update(knobs)
    return ml_collections.ConfigDict({"source": source})


# ---------------------------------------------------------------------------------- sampling


def test_select_items_water_fills_and_is_deterministic():
    labels = ["a"] * 50 + ["b"] * 7 + ["c"] * 30 + ["d"] * 2
    idx, dropped = sources.select_items(labels, min_class_size=3, max_items=40, seed=1)
    counts = collections.Counter(np.asarray(labels)[idx])
    # d is dropped (< 3); b keeps all 7; a and c share the remaining 33 evenly.
    assert counts == {"a": 17, "b": 7, "c": 16}
    assert sum(dropped.values()) == len(labels) - 40
    assert np.all(np.diff(idx) > 0)  # source order kept
    again, _ = sources.select_items(labels, min_class_size=3, max_items=40, seed=1)
    other, _ = sources.select_items(labels, min_class_size=3, max_items=40, seed=2)
    np.testing.assert_array_equal(idx, again)
    assert not np.array_equal(idx, other)
    capped, _ = sources.select_items(labels, per_class=5)
    assert collections.Counter(np.asarray(labels)[capped]) == {"a": 5, "b": 5, "c": 5, "d": 2}
    # A class's choice does not depend on which other classes exist.
    alone, _ = sources.select_items(labels[:50], per_class=5, seed=1)
    with_others, _ = sources.select_items(labels, per_class=5, seed=1)
    np.testing.assert_array_equal(alone, with_others[with_others < 50])
    with pytest.raises(ValueError, match="max_items must be >= 0"):
        sources.select_items(labels, max_items=-1)


# ---------------------------------------------------------------------------------- WordNet


@pytest.mark.needs_wordnet
def test_wordnet_items_agree_with_the_index_files():
    data = sources.load_source(cfg(kind="wordnet", pos="n"))
    assert len(data) == 82115  # every noun synset of WordNet 3.0
    by_id = dict(zip(data.ids.tolist(), range(len(data))))
    first = by_id["n.00001740"]
    assert data.texts["lemmas"][first] == "entity"
    assert data.labels[first] == "noun.Tops"
    assert data.texts["gloss"][first].startswith("that which is perceived or known")
    dog = by_id["n.02084071"]
    assert data.texts["lemmas"][dog] == "dog, domestic dog, Canis familiaris"
    assert data.labels[dog] == "noun.animal"
    assert data.class_names[0] == "noun.Tops" and len(data.class_names) == 26
    # Oracle: index.noun lists, for every lemma, the synsets holding it.
    lemma_sets = [set(s.lower().split(", ")) for s in data.texts["lemmas"]]
    checked = 0
    for line in (WORDNET / "index.noun").read_text().splitlines():
        if line.startswith("  "):
            continue
        fields = line.split()
        lemma, n_synsets = fields[0].replace("_", " "), int(fields[2])
        for offset in fields[-n_synsets:]:
            assert lemma in lemma_sets[by_id[f"n.{offset}"]], (lemma, offset)
            checked += 1
    assert checked > 140_000


@pytest.mark.needs_wordnet
def test_wordnet_adjectives_strip_syntactic_markers():
    data = sources.load_source(cfg(kind="wordnet", pos="a"))
    assert set(data.class_names) == {"adj.all", "adj.pert", "adj.ppl"}
    assert not any("(a)" in s or "(p)" in s or "(ip)" in s for s in data.texts["lemmas"])
    assert data.texts["lemmas"][list(data.ids).index("a.00020103")] == "outback, remote"
    assert sources.WORDNET_LEXNAMES[3] == "noun.Tops" and sources.WORDNET_LEXNAMES[44] == "adj.ppl"


@pytest.mark.needs_wordnet
def test_wordnet_demo_config_sampling():
    wordnet_minilm = configlib.load_module(CONFIGS / "extract" / "wordnet_minilm.py")

    data = sources.load_source(wordnet_minilm.get_config())
    counts = collections.Counter(data.labels.tolist())
    assert len(data) == 5000 and len(counts) >= 20
    assert max(counts.values()) - min(counts.values()) <= 1
    assert "noun.Tops" not in counts  # 51 synsets < min_class_size=100
    smoke = sources.load_source(wordnet_minilm.get_config("smoke"))
    assert 90 <= len(smoke) <= 110


def test_wordnet_missing_install_says_what_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        sources.load_source(cfg(kind="wordnet", root=str(tmp_path)))
    with pytest.raises(ValueError, match="part of speech"):
        sources.load_source(cfg(kind="wordnet", pos="x"))


# ---------------------------------------------------------------------------------- tables

ROWS = [
    {"sku": "a1", "title": "red shirt", "description": "cotton, soft", "category": "Shirts"},
    {"sku": "a2", "title": "blue jeans", "description": "", "category": "Jeans"},
    {"sku": "a3", "title": "green shirt", "description": "linen", "category": "Shirts"},
    {"sku": "a4", "title": "lost label", "description": "x", "category": ""},
    {"sku": "a5", "title": "black jeans", "description": "stretch \u00e9", "category": "Jeans"},
]


def write_table(path: Path, rows, fmt: str) -> Path:
    frame = pd.DataFrame(rows)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        frame.to_parquet(path)
    return path


def table_cfg(path, **kw):
    base = dict(kind="table", path=str(path), text_columns="title,description",
                label_column="category", id_column="sku")
    base.update(kw)
    return cfg(**base)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_table_formats_read_the_same_items(tmp_path, fmt):
    path = write_table(tmp_path / f"items.{fmt}", ROWS, fmt)
    data = sources.load_source(table_cfg(path))
    assert data.ids.tolist() == ["a1", "a2", "a3", "a5"]
    assert data.texts["title"] == ["red shirt", "blue jeans", "green shirt", "black jeans"]
    assert data.texts["description"] == ["cotton, soft", "", "linen", "stretch \u00e9"]
    assert data.labels.tolist() == ["Shirts", "Jeans", "Shirts", "Jeans"]
    assert data.class_names == ["Jeans", "Shirts"]
    np.testing.assert_array_equal(class_ids(data.labels, data.class_names), [1, 0, 1, 0])
    assert data.dropped == {"missing label": 1}
    assert data.notes == {"empty text 'description' (kept as '')": 1}


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
@pytest.mark.parametrize("compression", ["gzip", "bz2", "xz", "zip"])
def test_compressed_tables_read_as_pandas_does(tmp_path, fmt, compression):
    import gzip
    import shutil

    plain = write_table(tmp_path / f"items.{fmt}", ROWS, fmt)
    suffix = {"gzip": ".gz", "bz2": ".bz2", "xz": ".xz", "zip": ".zip"}[compression]
    packed = tmp_path / f"items.{fmt}{suffix}"
    # pandas writes the compressed file; it must also be what pandas itself reads back.
    frame = pd.read_json(plain, lines=True, dtype=False) if fmt == "jsonl" else pd.read_csv(
        plain, sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False)
    if fmt == "jsonl":
        frame.to_json(packed, orient="records", lines=True, compression=compression)
    else:
        frame.to_csv(packed, index=False, sep="\t" if fmt == "tsv" else ",",
                     compression=compression)
    want = sources.load_source(table_cfg(plain))
    got = sources.load_source(table_cfg(packed))
    assert got.info["format"] == fmt and got.info["compression"] == compression
    assert got.ids.tolist() == want.ids.tolist()
    assert got.texts == want.texts
    assert got.labels.tolist() == want.labels.tolist()
    if compression == "gzip":
        # Compressed bytes under a plain name are refused, and the message never suggests
        # decoding them anyway (encoding_errors=replace would feed the tokenizer garbage).
        disguised = tmp_path / f"disguised.{fmt}"
        shutil.copy(packed, disguised)
        for errors in ("strict", "replace"):
            with pytest.raises(ValueError, match="holds gzip data") as info:
                sources.load_source(table_cfg(disguised, encoding_errors=errors))
            assert "encoding_errors" not in str(info.value)
            assert f"compression=gzip" in str(info.value)
        # ... and read once the compression is named.
        named = sources.load_source(table_cfg(disguised, compression="gzip"))
        assert named.texts == want.texts
        # A gz name on a truncated file is a clear error, not a crash deep in pandas.
        broken = tmp_path / f"broken.{fmt}.gz"
        broken.write_bytes(gzip.compress(plain.read_bytes())[:20])
        with pytest.raises(ValueError, match="cannot decompress it as gzip"):
            sources.load_source(table_cfg(broken))


def test_parquet_named_csv_is_not_decoded(tmp_path):
    wrong = write_table(tmp_path / "items.csv", ROWS, "parquet")
    with pytest.raises(ValueError, match="holds parquet data.*format=parquet") as info:
        sources.load_source(table_cfg(wrong, encoding_errors="replace"))
    assert "encoding_errors" not in str(info.value)
    assert len(sources.load_source(table_cfg(wrong, format="parquet"))) == 4
    with pytest.raises(ValueError, match="compression='rar'"):
        sources.load_source(table_cfg(wrong, compression="rar"))


def test_table_bad_input(tmp_path):
    path = write_table(tmp_path / "items.csv", ROWS, "csv")
    with pytest.raises(ValueError, match=r"no column\(s\) \['titel'\].*'sku', 'title'"):
        sources.load_source(table_cfg(path, text_columns="titel"))
    with pytest.raises(ValueError, match="empty in 1 rows"):
        sources.load_source(table_cfg(path, missing_labels="error"))
    with pytest.raises(ValueError, match="'description' is empty"):
        sources.load_source(table_cfg(path, empty_texts="error"))
    dropped = sources.load_source(table_cfg(path, empty_texts="drop"))
    assert dropped.ids.tolist() == ["a1", "a3", "a5"] and dropped.dropped["empty text"] == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sources.load_source(table_cfg(tmp_path / "nope.csv"))
    (tmp_path / "items.xyz").write_text("a")
    with pytest.raises(ValueError, match="config.source.format"):
        sources.load_source(table_cfg(tmp_path / "items.xyz"))
    with pytest.raises(ValueError, match="unique"):
        sources.load_source(table_cfg(path, id_column="category", missing_labels="drop"))
    with pytest.raises(ValueError, match="not a known source"):
        sources.load_source(cfg(kind="spreadsheet"))
    # Row numbers as ids when there is no id column.
    assert sources.load_source(table_cfg(path, id_column="")).ids.tolist() == ["0", "1", "2", "4"]


def test_table_undecodable_bytes_name_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("title,category\nok,A\nalso ok,B\ncaf\u00e9,A\n".encode("latin-1"))
    with pytest.raises(ValueError, match="line 4 is not valid utf-8.*encoding_errors=replace"):
        sources.load_source(cfg(kind="table", path=str(path), text_columns="title",
                                label_column="category"))
    replaced = sources.load_source(cfg(kind="table", path=str(path), text_columns="title",
                                       label_column="category", encoding_errors="replace"))
    assert replaced.texts["title"][2] == "caf\ufffd"
    latin = sources.load_source(cfg(kind="table", path=str(path), text_columns="title",
                                    label_column="category", encoding="latin-1"))
    assert latin.texts["title"][2] == "caf\u00e9"
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"t": "a", "l": "x"}\n{"t": oops}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        sources.load_source(cfg(kind="table", path=str(bad_json), text_columns="t",
                                label_column="l"))


def test_json_cells_keep_their_types(tmp_path):
    # Integer labels and ids with gaps stay integers: class "3", never "3.0".
    path = tmp_path / "t.jsonl"
    rows = [{"id": 7, "t": "a", "l": 3}, {"id": 8, "t": "b", "l": None},
            {"id": None, "t": "c"}, {"id": 9, "t": "d", "l": 10}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = sources.load_source(cfg(kind="table", path=str(path), text_columns="t",
                                   label_column="l", id_column="id"))
    assert data.labels.tolist() == ["3", "10"] and data.class_names == ["3", "10"]
    assert data.ids.tolist() == ["7", "9"] and data.dropped == {"missing label": 2}


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-32"])
def test_tables_in_other_unicode_encodings(tmp_path, encoding):
    plain = write_table(tmp_path / "items.csv", ROWS, "csv")
    other = tmp_path / f"{encoding}.csv"
    other.write_bytes(plain.read_text().encode(encoding))
    want = sources.load_source(table_cfg(plain))
    # A UTF-8 byte-order mark is no part of the first column's name ("sku", the id column).
    named = "utf-8" if encoding == "utf-8-sig" else encoding
    got = sources.load_source(table_cfg(other, encoding=named))
    assert got.ids.tolist() == want.ids.tolist() and got.texts == want.texts
    if encoding != "utf-8-sig":
        with pytest.raises(ValueError, match=f"--config.source.encoding={encoding}"):
            sources.load_source(table_cfg(other))


def test_numeric_labels_sort_naturally(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"t": f"x{i}", "l": v}) + "\n"
                            for i, v in enumerate([10, 2, 1, 2])))
    data = sources.load_source(cfg(kind="table", path=str(path), text_columns="t",
                                   label_column="l"))
    assert data.class_names == ["1", "2", "10"]
    assert sources.sort_class_names(["b", "B", "a"]) == ["a", "B", "b"]


def test_table_image_columns_resolve_relative_paths(tmp_path):
    (tmp_path / "imgs").mkdir()
    rows = [{"t": "x", "l": "A", "img": "imgs/1.png"}, {"t": "y", "l": "B", "img": "/abs/2.png"},
            {"t": "z", "l": "B", "img": ""}]
    path = write_table(tmp_path / "t.csv", rows, "csv")
    data = sources.load_source(cfg(kind="table", path=str(path), text_columns="t",
                                   label_column="l", image_columns="img"))
    assert data.images["img"].paths == (str(tmp_path / "imgs" / "1.png"), "/abs/2.png", None)
    assert data.fields == ["t", "img"]


# ----------------------------------------------------------------------------- Fashion Products


def test_fashion_products_layout(tmp_path, write_fashion_products):
    ids = write_fashion_products(tmp_path)
    data = sources.load_source(cfg(kind="fashion_products", root=str(tmp_path)))
    assert data.ids.tolist() == ids
    assert data.texts["title"][2] == "Puma Men, Women Unisex Tee, Black"  # repaired row
    assert data.texts["description"][0] == "Soft cotton & more 0"
    assert data.texts["description"][3] == ""
    assert data.labels.tolist() == ["Tshirts", "Shirts", "Watches"] * 2
    assert data.notes == {"styles.csv rows with extra commas (repaired)": 1,
                          "no description JSON / value (kept as '')": 1}
    assert data.dropped == {"missing label": 1}
    assert data.images["image"].paths[0] == str(tmp_path / "images" / "1000.jpg")
    by_gender = sources.load_source(cfg(kind="fashion_products", root=str(tmp_path),
                                        label_column="gender", images=False))
    assert by_gender.class_names == ["Men"] and not by_gender.images
    with pytest.raises(ValueError, match=r"no column\(s\) \['colour'\]"):
        sources.load_source(cfg(kind="fashion_products", root=str(tmp_path), label_column="colour"))
    with pytest.raises(FileNotFoundError, match="styles.csv"):
        sources.load_source(cfg(kind="fashion_products", root=str(tmp_path / "nope")))


# ---------------------------------------------------------------------------------- TFDS


def test_tfds_data_source_text_and_images():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        text = sources.load_source(cfg(kind="tfds", name="imdb_reviews", split="train",
                                       text_features="text"))
        assert len(text) == 6 and text.class_names == ["neg", "pos"]
        assert all(isinstance(t, str) and t for t in text.texts["text"])
        images = sources.load_source(cfg(kind="tfds", name="mnist", split="test",
                                         image_feature="image", max_items=4))
        assert len(images) <= 4 and set(images.class_names) <= set("0123456789")
        batch = images.images["image"].loader(np.arange(len(images)))
        assert batch.shape == (len(images), 28, 28, 3) and batch.dtype == np.uint8
        np.testing.assert_array_equal(batch[..., 0], batch[..., 2])
        with pytest.raises(ValueError, match=r"no feature\(s\) \['title'\]"):
            sources.load_source(cfg(kind="tfds", name="imdb_reviews", text_features="title"))
    with pytest.raises(ValueError, match="cannot be opened: Dataset no_such_set not found"):
        sources.load_source(cfg(kind="tfds", name="no_such_set", text_features="text"))


# ---------------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.needs_fashion_mnist
def test_fashion_mnist_test_split():
    data = sources.load_source(cfg(kind="fashion_mnist", split="test"))
    assert len(data) == 10000 and data.class_names[0] == "T-shirt/top"
    # The test split is balanced: 1,000 images per class.
    assert set(collections.Counter(data.labels.tolist()).values()) == {1000}
    images = data.images["image"].loader(np.array([0, 9999]))
    assert images.shape == (2, 28, 28, 3) and images.dtype == np.uint8
    assert images.max() > 0 and (images[..., 0] == images[..., 1]).all()
    small = sources.load_source(cfg(kind="fashion_mnist", split="test", max_items=50))
    assert len(small) == 50 and set(collections.Counter(small.labels.tolist()).values()) == {5}
    np.testing.assert_array_equal(small.images["image"].loader([0]),
                                  data.images["image"].loader([int(small.ids[0][5:])]))


def test_fashion_mnist_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        sources.load_source(cfg(kind="fashion_mnist", root=str(tmp_path)))
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
                + b"\0" * 100)
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + b"\0" * 5)
    with pytest.raises(ValueError, match="truncated"):
        sources.load_source(cfg(kind="fashion_mnist", root=str(tmp_path), split="test"))


# ---------------------------------------------------------------------------------- streamed tables


def many_rows(n: int = 600, seed: int = 0) -> list[dict]:
    """Rows whose cells cross every batch and read boundary when those are a few bytes: texts
    of multi-byte characters and embedded line breaks, empty texts, missing labels."""
    rng = np.random.default_rng(seed)
    words = ["caf\u00e9", "na\u00efve", "\u65e5\u672c", "x", "line\nbreak", "\"quoted\"", "a,b"]
    return [{"sku": f"k{i:05d}", "title": " ".join(rng.choice(words, rng.integers(1, 6))),
             "description": "" if i % 7 == 3 else " ".join(rng.choice(words, 3)),
             "category": "" if i % 11 == 5 else f"c{rng.integers(0, 5)}"} for i in range(n)]


def read_whole(path: Path, fmt: str) -> pd.DataFrame:
    """The table as one pandas read of the whole file (how tables were read before)."""
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "jsonl":
        return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines()
                             if line.strip()], dtype=object)
    return pd.read_csv(path, sep="," if fmt == "csv" else "\t", dtype=str,
                       keep_default_na=False, na_filter=False)


@pytest.fixture
def tiny_batches(monkeypatch):
    """Batches of 3 rows and reads of 5 bytes: every boundary falls inside some cell."""
    from embaug_jax.sources import table_reader

    monkeypatch.setattr(table_reader, "_BATCH_CHARS", 1)
    monkeypatch.setattr(table_reader, "_MIN_ROWS", 3)
    monkeypatch.setattr(table_reader, "_READ_BYTES", 5)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
@pytest.mark.parametrize("empty_texts", ["keep", "drop"])
def test_a_table_read_in_small_batches_is_the_table_read_whole(tmp_path, fmt, empty_texts,
                                                               tiny_batches):
    path = write_table(tmp_path / f"items.{fmt}", many_rows(), fmt)
    data = sources.load_source(table_cfg(path, empty_texts=empty_texts, max_items=400, seed=3))
    # The items as the loader found them when it read the whole table.
    frame = read_whole(path, fmt)
    cell = lambda v: v if isinstance(v, str) and v.strip() else None
    keep = np.array([cell(v) is not None for v in frame.category])
    if empty_texts == "drop":
        keep &= np.array([cell(v) is not None for v in frame.description])
    rows = np.flatnonzero(keep)
    chosen, _ = sources.select_items(frame.category[rows].tolist(), max_items=400, seed=3)
    rows = rows[chosen]
    assert data.ids.tolist() == frame.sku[rows].tolist()
    assert data.labels.tolist() == frame.category[rows].tolist()
    assert isinstance(data.texts["title"], sources.StreamedColumn)
    assert data.texts["title"] == frame.title[rows].tolist()
    assert data.texts["description"] == [cell(v) or "" for v in frame.description[rows]]
    # Shards read in order, out of order and again give the same texts.
    shard = np.arange(100, 180)
    assert sources.take(data.texts["title"], shard) == frame.title[rows[shard]].tolist()
    assert sources.take(data.texts["title"], shard[::-1]) == frame.title[rows[shard[::-1]]].tolist()
    assert data.texts["description"][5] == (cell(frame.description[rows[5]]) or "")
    assert data.texts["title"][-1] == frame.title[rows[-1]]


def test_shards_in_order_read_the_table_once(tmp_path, tiny_batches, monkeypatch):
    from embaug_jax.sources import table_reader

    path = write_table(tmp_path / "items.csv", many_rows(), "csv")
    data = sources.load_source(table_cfg(path))
    opened = []
    batches = table_reader.TableReader.batches

    def counted(self, *args, **kwargs):
        opened.append(args)
        return batches(self, *args, **kwargs)

    monkeypatch.setattr(table_reader.TableReader, "batches", counted)
    for start in range(0, len(data), 50):
        rows = np.arange(start, min(start + 50, len(data)))
        for field in ("title", "description"):
            sources.take(data.texts[field], rows)
    assert len(opened) == 1  # both fields of every shard, in one pass
    sources.take(data.texts["title"], [0])
    assert len(opened) == 2  # back to the start: a second pass


def test_streamed_decoding_names_the_line_and_byte_of_a_bad_byte(tmp_path, tiny_batches):
    lines = ["title,category"] + [f"t\u00e9{i},A" for i in range(40)]
    raw = "\n".join(lines).encode("utf-8") + b"\ncaf\xe9,B\n"
    path = tmp_path / "bad.csv"
    path.write_bytes(raw)
    at = raw.index(b"\xe9,B")
    with pytest.raises(ValueError, match=f"line 42 is not valid utf-8 .* at byte {at}\\)"):
        sources.load_source(cfg(kind="table", path=str(path), text_columns="title",
                                label_column="category"))
    replaced = sources.load_source(cfg(kind="table", path=str(path), text_columns="title",
                                       label_column="category", encoding_errors="replace"))
    assert replaced.texts["title"][-1] == "caf\ufffd" and replaced.texts["title"][3] == "t\u00e93"
    wide = tmp_path / "wide.csv"
    wide.write_bytes("\n".join(lines).encode("utf-16"))
    assert sources.load_source(cfg(kind="table", path=str(wide), text_columns="title",
                                   label_column="category", encoding="utf-16")
                               ).texts["title"] == [f"t\u00e9{i}" for i in range(40)]


def test_jsonl_lines_split_as_the_whole_text_splits_them(tmp_path, tiny_batches):
    rows = [{"t": f"text {i}", "l": "ab"[i % 2]} for i in range(30)]
    # "\r\n" split between two reads is one line break, "\r" alone another.
    body = "\r\n".join(json.dumps(r) for r in rows[:15]) + "\r" + "\n\n".join(
        json.dumps(r) for r in rows[15:])
    path = tmp_path / "t.jsonl"
    path.write_bytes(body.encode())
    data = sources.load_source(cfg(kind="table", path=str(path), text_columns="t",
                                   label_column="l"))
    assert data.texts["t"] == [r["t"] for r in rows]
    assert data.ids.tolist() == [str(i) for i in range(30)]
    broken = body + "\n{oops}\n"
    path.write_bytes(broken.encode())
    line = broken.splitlines().index("{oops}") + 1
    assert line == 45
    with pytest.raises(ValueError, match=f"line {line} is not valid JSON"):
        sources.load_source(cfg(kind="table", path=str(path), text_columns="t",
                                label_column="l"))


def test_parquet_integers_with_a_gap_read_as_pandas_reads_the_whole_file(tmp_path,
                                                                           tiny_batches):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # The gap is in the last batch: the first ones, read alone, would hold plain integers.
    labels = [1, 2, 3] * 5 + [None]
    table = pa.table({"t": [f"x{i}" for i in range(16)], "l": pa.array(labels, pa.int64()),
                      "id": pa.array(range(16), pa.int32())})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=4)
    data = sources.load_source(cfg(kind="table", path=str(path), text_columns="t",
                                   label_column="l", id_column="id"))
    whole = pd.read_parquet(path)
    assert data.class_names == ["1.0", "2.0", "3.0"]  # as pandas converts the whole column
    assert data.labels.tolist() == [str(v) for v in whole.l[:15]]
    assert data.ids.tolist() == [str(v) for v in whole.id[:15]] == [str(i) for i in range(15)]


def test_a_table_changed_between_passes_is_an_error(tmp_path):
    path = write_table(tmp_path / "items.csv", ROWS, "csv")
    data = sources.load_source(table_cfg(path))
    with open(path, "a") as f:
        f.write("a6,late row,x,Shirts\n")
    with pytest.raises(ValueError, match="changed while it was being read"):
        list(data.texts["title"])


def test_repeated_ids_are_found_in_chunks():
    from embaug_jax.sources.items import repeated_values

    ids = np.array([f"i{i % 5000}" for i in range(5003)])
    assert repeated_values(ids, chunk=7).tolist() == ["i0", "i1", "i2"]
    assert repeated_values(np.array(["a", "b"]), chunk=1).tolist() == []
    assert repeated_values(np.array(["a"])).tolist() == []


def test_a_compressed_parquet_file_reads_as_the_plain_one(tmp_path, tiny_batches):
    import gzip

    plain = write_table(tmp_path / "items.parquet", many_rows(50), "parquet")
    packed = tmp_path / "items.parquet.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    want, got = (sources.load_source(table_cfg(p)) for p in (plain, packed))
    assert got.info["compression"] == "gzip"
    assert got.ids.tolist() == want.ids.tolist() and got.texts == want.texts


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_reading_a_table_holds_one_batch_at_a_time(tmp_path, fmt, tiny_batches):
    import gc
    import sys

    from embaug_jax.sources.table_reader import TableReader

    path = write_table(tmp_path / f"items.{fmt}", many_rows(60), fmt)
    # Frames other tests of this process left alive, held so that none of their ids is reused.
    others = [o for o in gc.get_objects() if type(o) is pd.DataFrame]
    known = {id(o) for o in others}
    batches = TableReader(path, fmt, None, "utf-8", "strict").batches(["sku", "title"])
    _, before = next(batches)
    count = 1
    for start, cells in batches:
        # Once the next batch is read, the one before is the caller's alone, and no frame
        # the reader converted outlives its batch.
        assert sys.getrefcount(before) == 2
        # (`type(o) is`, not isinstance: isinstance asks some objects' `__class__`, which
        # warns and costs seconds over the whole session's heap.)
        assert [o.index[0] for o in gc.get_objects()
                if type(o) is pd.DataFrame and id(o) not in known] in ([], [start])
        before = cells
        del cells
        count += 1
    assert count >= 10


def test_ids_of_every_width_read_in_batches_are_the_ids_read_whole(tmp_path, tiny_batches):
    # Each batch's ids are as wide as its longest; the whole is as wide as the longest of all.
    rows = many_rows(200)
    for i, row in enumerate(rows):
        row["sku"] = "\u00e9" * (1 + i % 9) + ("x" * 40 if i == 150 else "") + str(i)
    path = write_table(tmp_path / "items.csv", rows, "csv")
    data = sources.load_source(table_cfg(path))
    frame = read_whole(path, "csv")
    kept = np.flatnonzero(frame.category.str.strip() != "")
    np.testing.assert_array_equal(data.ids, np.asarray(frame.sku[kept].tolist()))
    assert data.ids.dtype == np.asarray(frame.sku[kept].tolist()).dtype
    assert data.labels.tolist() == frame.category[kept].tolist()
    assert data.texts["title"] == frame.title[kept].tolist()
