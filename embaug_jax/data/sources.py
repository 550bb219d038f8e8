"""Data sources: turn a data set on disk into items (id, text fields, image fields, label).

`load_source(config)` dispatches on `config.source.kind`:

- "table": a CSV, TSV, JSONL or Parquet file -- how users bring their own data.
- "wordnet": Debian's `wordnet-base` (one item per synset, labelled by lexicographer file).
- "fashion_products": the Kaggle "Fashion Product Images" layout (the paper's data set).
- "tfds": any TensorFlow Datasets set through `tfds.data_source` (no TensorFlow needed).
- "fashion_mnist": Debian's `dataset-fashion-mnist` IDX files.

Every source returns a `SourceData`. What a source drops, and what it keeps but flags, is counted
in `SourceData.dropped` / `SourceData.notes` (reason -> count) rather than silently absorbed;
the extraction pipeline logs both and stores them in the dataset's `info`.

Every source also takes the same sampling knobs, applied after loading and before anything
expensive (reading descriptions, decoding images): `min_class_size` (drop classes with fewer
items), `per_class` (keep at most this many per class) and `max_items` (then keep this many in
all, spread evenly over the classes -- a small class keeps all its items and its unused share
goes to the others), drawn with `seed`. Kept items stay in source order.
"""

from __future__ import annotations

import dataclasses
import gzip
import html
import io
import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

SOURCE_KINDS = ("table", "wordnet", "fashion_products", "tfds", "fashion_mnist")

# WordNet's lexicographer files, indexed by the 2-digit lex_filenum of data.* lines (the standard
# table of lexnames(5WN); Debian's wordnet-base ships no lexnames file).
WORDNET_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)
_WORDNET_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


@dataclasses.dataclass(frozen=True)
class ImageField:
    """One image per item: file paths (decoded lazily) or an in-memory uint8 array loader.

    Exactly one of `paths` / `loader` is set. `paths[i]` is None when the item names no image
    (an empty cell): the pipeline treats it as a missing image.
    """

    paths: tuple[str | None, ...] | None = None
    loader: Callable[[np.ndarray], np.ndarray] | None = None  # indices -> uint8 [n, H, W, 3]
    count: int = 0

    def __post_init__(self):
        if (self.paths is None) == (self.loader is None):
            raise ValueError("ImageField needs exactly one of `paths` or `loader`.")

    def __len__(self) -> int:
        return len(self.paths) if self.paths is not None else self.count

    def subset(self, indices: np.ndarray) -> ImageField:
        indices = np.asarray(indices, np.int64)
        if self.paths is not None:
            return ImageField(paths=tuple(self.paths[i] for i in indices))
        parent = self.loader
        return ImageField(loader=lambda idx: parent(indices[np.asarray(idx, np.int64)]),
                          count=len(indices))


@dataclasses.dataclass
class SourceData:
    """Items of a data source, all fields aligned on the item axis.

    Attributes:
      ids: [N] str, unique.
      labels: [N] str, each one of `class_names`.
      class_names: the classes, in the source's canonical order.
      texts: {field name: N strings}, in the source's field order.
      images: {field name: ImageField}, in the source's field order.
      dropped: reason -> number of items the source left out.
      notes: reason -> number of items kept but worth knowing about (e.g. empty texts).
      info: free-form description of where the items came from (stored in the dataset's info).
    """

    ids: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    texts: dict[str, list[str]]
    images: dict[str, ImageField]
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    notes: dict[str, int] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=str)
        self.labels = np.asarray(self.labels, dtype=str)
        n = len(self.ids)
        lengths = {"labels": len(self.labels),
                   **{f"text {k!r}": len(v) for k, v in self.texts.items()},
                   **{f"image {k!r}": len(v) for k, v in self.images.items()}}
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise ValueError(f"Source fields disagree on the number of items: ids has {n}, {bad}.")
        unique, counts = np.unique(self.ids, return_counts=True)
        if len(unique) != n:
            dupes = unique[counts > 1][:10].tolist()
            raise ValueError(f"Item ids must be unique; repeated: {dupes}. Pick another id column "
                             "(or none: row numbers are used).")
        unknown = sorted(set(self.labels.tolist()) - set(self.class_names))
        if unknown:
            raise ValueError(f"Labels {unknown[:10]} are not among class_names.")
        overlap = set(self.texts) & set(self.images)
        if overlap:
            raise ValueError(f"Field names used for both text and images: {sorted(overlap)}.")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def label_indices(self) -> np.ndarray:
        """[N] int32 index of each item's label in `class_names`."""
        lookup = {name: i for i, name in enumerate(self.class_names)}
        return np.array([lookup[label] for label in self.labels], np.int32).reshape(len(self))

    @property
    def fields(self) -> list[str]:
        return [*self.texts, *self.images]

    def subset(self, indices: np.ndarray) -> SourceData:
        """The items at `indices` (in that order); counts and info carry over."""
        indices = np.asarray(indices, np.int64)
        return SourceData(
            ids=self.ids[indices], labels=self.labels[indices], class_names=list(self.class_names),
            texts={k: [v[i] for i in indices] for k, v in self.texts.items()},
            images={k: v.subset(indices) for k, v in self.images.items()},
            dropped=dict(self.dropped), notes=dict(self.notes), info=dict(self.info))


def _count(counter: dict[str, int], reason: str, n: int = 1) -> None:
    if n:
        counter[reason] = counter.get(reason, 0) + int(n)


def split_names(value: Any) -> list[str]:
    """A config list knob: a comma-separated string, a list/tuple, or empty/None."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value]


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    """`cfg.name`, tolerating ConfigDicts and plain dicts that leave optional knobs out."""
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default) if name in cfg else default


def sort_class_names(labels: Sequence[str]) -> list[str]:
    """The distinct labels in natural order: "2" before "10", then case-insensitive text."""
    def key(name: str):
        return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name.casefold())

    return sorted(set(labels), key=lambda name: (key(name), name))


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"config.source.{name}={value!r} is not one of {list(choices)}.")
    return value


# ----------------------------------------------------------------------------------------------
# Sampling shared by every source.


def select_items(labels: Sequence[str], *, min_class_size: int = 0, per_class: int = 0,
                 max_items: int = 0, seed: int = 0) -> tuple[np.ndarray, dict[str, int]]:
    """Deterministic, stratified choice of items; returns (sorted indices, dropped counts).

    Classes with fewer than `min_class_size` items are dropped whole; each class then keeps at
    most `per_class` items; if more than `max_items` remain, each class keeps an equal share
    (a class smaller than its share keeps all, and the rest is re-shared among the others).
    Which items a class keeps is a seeded permutation, so the choice is the same on every run.
    """
    for name, v in (("min_class_size", min_class_size), ("per_class", per_class),
                    ("max_items", max_items)):
        if int(v) < 0:
            raise ValueError(f"config.source.{name} must be >= 0 (0 = no limit), got {v}.")
    labels = np.asarray(labels, dtype=str)
    dropped: dict[str, int] = {}
    classes, inverse = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    keep_class = [len(m) >= min_class_size for m in members]
    _count(dropped, f"class smaller than min_class_size={min_class_size}",
           sum(len(m) for m, k in zip(members, keep_class) if not k))
    members = [m for m, k in zip(members, keep_class) if k]
    classes = [c for c, k in zip(classes, keep_class) if k]
    # One seeded permutation per class (keyed by the class name, so it does not depend on which
    # other classes exist): the first `quota` items of it are kept.
    orders = []
    for name, m in zip(classes, members):
        class_seed = int.from_bytes(name.encode("utf-8")[:8].ljust(8, b"\0"), "little")
        rng = np.random.default_rng([int(seed), class_seed, len(name)])
        orders.append(m[rng.permutation(len(m))])
    quotas = np.array([len(m) for m in members], np.int64)
    if per_class:
        _count(dropped, f"over per_class={per_class}", np.maximum(quotas - per_class, 0).sum())
        quotas = np.minimum(quotas, per_class)
    if max_items and quotas.sum() > max_items:
        before = quotas.sum()
        quotas = _water_fill(quotas, max_items)
        _count(dropped, f"over max_items={max_items}", before - quotas.sum())
    kept = [o[:q] for o, q in zip(orders, quotas)]
    indices = np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)
    return indices, dropped


def _water_fill(sizes: np.ndarray, total: int) -> np.ndarray:
    """Per-class quotas summing to `total`: equal shares, capped by each class's size."""
    quotas = np.zeros_like(sizes)
    remaining, open_ = int(total), np.ones(len(sizes), bool)
    while remaining > 0 and open_.any():
        share = remaining // open_.sum()
        if share == 0:
            # Fewer items left than open classes: one more each to the largest open classes
            # (ties by class order), so the split is deterministic.
            order = np.lexsort((np.arange(len(sizes)), -(sizes - quotas)))
            for c in order[open_[order]][:remaining]:
                quotas[c] += 1
            break
        add = np.where(open_, np.minimum(share, sizes - quotas), 0)
        quotas += add
        remaining -= int(add.sum())
        open_ &= quotas < sizes
    return quotas


def _apply_sampling(labels: Sequence[str], src: Any) -> tuple[np.ndarray, dict[str, int]]:
    return select_items(labels, min_class_size=int(_get(src, "min_class_size", 0) or 0),
                        per_class=int(_get(src, "per_class", 0) or 0),
                        max_items=int(_get(src, "max_items", 0) or 0),
                        seed=int(_get(src, "seed", 0) or 0))


# ----------------------------------------------------------------------------------------------
# Generic tables.

_TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl",
                  ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def _decode_bytes(raw: bytes, path: Path, encoding: str, errors: str) -> str:
    try:
        return raw.decode(encoding, errors=errors)
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(
            f"{path}: line {line} is not valid {encoding} ({e.reason} at byte {e.start}). Fix the "
            f"file, set config.source.encoding to its real encoding, or pass "
            f"--config.source.encoding_errors=replace to replace undecodable bytes.") from None


def _read_table(path: Path, fmt: str, encoding: str, encoding_errors: str):
    import pandas as pd

    if fmt == "parquet":
        return pd.read_parquet(path)
    text = _decode_bytes(path.read_bytes(), path, encoding, encoding_errors)
    if fmt in ("csv", "tsv"):
        # Every cell as a string, empty cells as "" (not NaN), so ids like "007" survive.
        try:
            return pd.read_csv(io.StringIO(text), sep="," if fmt == "csv" else "\t", dtype=str,
                               keep_default_na=False, na_filter=False)
        except pd.errors.ParserError as e:
            raise ValueError(f"{path}: not a well-formed {fmt.upper()} file: {e}") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {lineno} is not valid JSON: {e.msg}.") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}: line {lineno} is a JSON {type(row).__name__}, expected an "
                             "object with one key per column.")
        rows.append(row)
    return pd.DataFrame(rows)


def _cell_text(value: Any) -> str | None:
    """A table cell as text; None for a missing value (NaN, None, empty string)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    value = str(value)
    return value if value.strip() else None


def _table_texts(columns: dict[str, list[Any]], policy: str, notes: dict[str, int],
                 keep: np.ndarray) -> dict[str, list[str]]:
    """Applies the empty-text policy; marks rows to drop in `keep` (in place)."""
    texts = {}
    for name, values in columns.items():
        cells = [_cell_text(v) for v in values]
        empty = np.array([c is None for c in cells], bool)
        if empty.any():
            if policy == "error":
                rows = np.flatnonzero(empty)[:10].tolist()
                raise ValueError(f"Text column {name!r} is empty in {int(empty.sum())} rows "
                                 f"(first data rows {rows}, 0-based). Fill them, or set "
                                 "config.source.empty_texts to 'keep' or 'drop'.")
            if policy == "drop":
                keep &= ~empty
            else:
                _count(notes, f"empty text '{name}' (kept as '')", (empty & keep).sum())
        texts[name] = [c or "" for c in cells]
    return texts


def load_table(src: Any) -> SourceData:
    """A CSV / TSV / JSONL / Parquet table with text, label, optional id and image-path columns.

    Knobs (`config.source.*`): `path`; `format` ("" = from the extension); `text_columns`;
    `label_column`; `id_column` ("" = row numbers "0", "1", ...); `image_columns` (paths relative
    to the table's folder, or absolute); `missing_labels`: "drop" (default; counted) or "error";
    `empty_texts`: "keep" (default; embedded as "" -- [CLS][SEP] only -- and counted), "drop"
    or "error"; `encoding` (default "utf-8") and `encoding_errors`: "strict" (default: an error
    naming the line) or "replace".
    """
    path = Path(str(_get(src, "path", "") or ""))
    if not str(_get(src, "path", "") or ""):
        raise ValueError("config.source.path is required for a table source "
                         "(--config.source.path=data.csv).")
    if not path.is_file():
        raise FileNotFoundError(f"Table {path} does not exist (config.source.path).")
    fmt = str(_get(src, "format", "") or "").lower() or _TABLE_FORMATS.get(path.suffix.lower())
    if fmt not in ("csv", "tsv", "jsonl", "parquet"):
        raise ValueError(f"Cannot tell the format of {path.name} from its extension; set "
                         "config.source.format to one of csv, tsv, jsonl, parquet.")
    missing_policy = _check_choice("missing_labels", _get(src, "missing_labels", "drop"),
                                   ("drop", "error"))
    empty_policy = _check_choice("empty_texts", _get(src, "empty_texts", "keep"),
                                 ("keep", "drop", "error"))
    errors = _check_choice("encoding_errors", _get(src, "encoding_errors", "strict"),
                           ("strict", "replace"))
    frame = _read_table(path, fmt, _get(src, "encoding", "utf-8") or "utf-8", errors)

    text_columns = split_names(_get(src, "text_columns"))
    image_columns = split_names(_get(src, "image_columns"))
    label_column = str(_get(src, "label_column", "") or "")
    id_column = str(_get(src, "id_column", "") or "")
    if not label_column:
        raise ValueError("config.source.label_column is required (the column with class names).")
    if not text_columns and not image_columns:
        raise ValueError("Set config.source.text_columns and/or config.source.image_columns "
                         "(comma-separated column names).")
    wanted = [*text_columns, *image_columns, label_column, *([id_column] if id_column else [])]
    available = [str(c) for c in frame.columns]
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise ValueError(f"{path.name} has no column(s) {unknown}; its columns are {available}.")

    n = len(frame)
    dropped: dict[str, int] = {}
    notes: dict[str, int] = {}
    labels = [_cell_text(v) for v in frame[label_column].tolist()]
    missing = np.array([label is None for label in labels], bool)
    if missing.any() and missing_policy == "error":
        rows = np.flatnonzero(missing)[:10].tolist()
        raise ValueError(f"Label column {label_column!r} is empty in {int(missing.sum())} rows "
                         f"(first data rows {rows}, 0-based). Fill them, or set "
                         "config.source.missing_labels=drop to leave those rows out.")
    keep = ~missing
    _count(dropped, "missing label", missing.sum())
    ids = ([_cell_text(v) or "" for v in frame[id_column].tolist()] if id_column
           else [str(i) for i in range(n)])
    n_keep_before = int(keep.sum())
    texts = _table_texts({c: frame[c].tolist() for c in text_columns}, empty_policy, notes, keep)
    _count(dropped, "empty text", n_keep_before - keep.sum())
    images = {}
    for column in image_columns:
        paths = []
        for cell in frame[column].tolist():
            value = _cell_text(cell)
            paths.append(None if value is None else str((path.parent / value).resolve()
                                                        if not Path(value).is_absolute()
                                                        else Path(value)))
        images[column] = ImageField(paths=tuple(paths))
    rows = np.flatnonzero(keep)
    empty_ids = [int(r) for r in rows if not ids[r]]
    if empty_ids:
        raise ValueError(f"Id column {id_column!r} is empty in {len(empty_ids)} rows (first data "
                         f"rows {empty_ids[:10]}, 0-based); every item needs an id.")
    kept_labels = [labels[i] for i in rows]
    data = SourceData(
        ids=[ids[i] for i in rows], labels=kept_labels, class_names=sort_class_names(kept_labels),
        texts={k: [v[i] for i in rows] for k, v in texts.items()},
        images={k: v.subset(rows) for k, v in images.items()},
        info={"kind": "table", "path": str(path.resolve()), "format": fmt, "rows": n})
    data.dropped.update(dropped)
    data.notes.update(notes)
    return _finish(data, src)


def _finish(data: SourceData, src: Any) -> SourceData:
    """Applies the shared sampling knobs; classes left without items are removed."""
    indices, dropped = _apply_sampling(data.labels, src)
    if len(indices) != len(data):
        data = data.subset(indices)
    present = set(data.labels.tolist())
    data.class_names = [c for c in data.class_names if c in present]
    for reason, count in dropped.items():
        _count(data.dropped, reason, count)
    if len(data) == 0:
        raise ValueError(f"The source has no items left (dropped: {data.dropped}). Loosen "
                         "min_class_size / the filters, or check the data.")
    return data


# ----------------------------------------------------------------------------------------------
# WordNet.

_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def parse_wordnet_line(line: str, pos: str) -> tuple[str, str, list[str], str]:
    """One data.* line -> (synset id "n.00001740", lexname, lemma words, gloss)."""
    head, _, gloss = line.partition("| ")
    fields = head.split()
    offset, lex_filenum, w_cnt = fields[0], int(fields[1]), int(fields[3], 16)
    words = [_ADJ_MARKER.sub("", fields[4 + 2 * i]).replace("_", " ") for i in range(w_cnt)]
    return f"{pos}.{offset}", WORDNET_LEXNAMES[lex_filenum], words, gloss.strip()


def load_wordnet(src: Any) -> SourceData:
    """One item per WordNet synset: text fields "lemmas" and "gloss", label = lexicographer file.

    Knobs: `root` (default /usr/share/wordnet), `pos` ("n", "v", "a", "r" or several,
    comma-separated; default "n"), plus the shared sampling knobs. "lemmas" are the synset's
    words (underscores -> spaces) joined with ", "; "gloss" is the definition with its examples.
    """
    root = Path(str(_get(src, "root", "") or "/usr/share/wordnet"))
    pos_list = split_names(_get(src, "pos", "n")) or ["n"]
    bad = [p for p in pos_list if p not in _WORDNET_FILES]
    if bad:
        raise ValueError(f"config.source.pos={bad} is not a WordNet part of speech; use any of "
                         f"{list(_WORDNET_FILES)} (n=noun, v=verb, a=adjective, r=adverb).")
    ids, lemmas, glosses, labels = [], [], [], []
    for pos in pos_list:
        path = root / f"data.{_WORDNET_FILES[pos]}"
        if not path.is_file():
            raise FileNotFoundError(
                f"WordNet is not installed: {path} is missing. Install it with "
                "`sudo apt-get install wordnet-base` (or point config.source.root at a folder "
                "holding data.noun / data.verb / data.adj / data.adv).")
        with open(path, encoding="utf-8", errors="strict") as f:
            for lineno, line in enumerate(f, 1):
                if line.startswith("  "):  # the licence header
                    continue
                try:
                    synset, lexname, words, gloss = parse_wordnet_line(line, pos)
                except (IndexError, ValueError) as e:
                    raise ValueError(f"{path}: line {lineno} is not a WordNet data line ({e}).")
                ids.append(synset)
                lemmas.append(", ".join(words))
                glosses.append(gloss)
                labels.append(lexname)
    present = set(labels)
    data = SourceData(ids=ids, labels=labels,
                      class_names=[c for c in WORDNET_LEXNAMES if c in present],
                      texts={"lemmas": lemmas, "gloss": glosses}, images={},
                      info={"kind": "wordnet", "root": str(root), "pos": pos_list})
    return _finish(data, src)


# ----------------------------------------------------------------------------------------------
# Fashion Product Images (Kaggle layout).

_FASHION_COLUMNS = ("id", "gender", "masterCategory", "subCategory", "articleType", "baseColour",
                    "season", "year", "usage", "productDisplayName")
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def strip_html(text: str) -> str:
    """Plain text of an HTML fragment: tags become spaces, entities are unescaped."""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()


def _fashion_description(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        value = data["data"]["productDescriptors"]["description"]["value"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return strip_html(value) if isinstance(value, str) else None


def load_fashion_products(src: Any) -> SourceData:
    """Kaggle "Fashion Product Images": styles.csv, styles/<id>.json, images/<id>.jpg.

    Text fields "title" (productDisplayName) and "description" (the JSON's
    data.productDescriptors.description.value, HTML stripped); image field "image". Knobs:
    `root`; `label_column` (default "articleType"; any styles.csv column); `images` (default
    True); the shared sampling knobs. styles.csv rows with extra commas (product names with
    commas, as in the real file) are repaired by joining the surplus into productDisplayName and
    counted; rows without a label are dropped and counted; a missing or description-less JSON
    gives an empty description, counted.
    """
    import pandas as pd

    root = Path(str(_get(src, "root", "") or ""))
    styles = root / "styles.csv"
    if not styles.is_file():
        raise FileNotFoundError(f"{styles} does not exist: config.source.root must be the folder "
                                "holding styles.csv, styles/ and images/ (the Kaggle layout).")
    notes: dict[str, int] = {}
    dropped: dict[str, int] = {}
    text = _decode_bytes(styles.read_bytes(), styles, "utf-8", "strict")
    header = text.split("\n", 1)[0].strip().split(",")

    def repair(fields: list[str]) -> list[str] | None:
        # The real file has product names with commas: the name is the last column, so the
        # surplus fields belong to it.
        _count(notes, "styles.csv rows with extra commas (repaired)")
        return fields[:len(header) - 1] + [",".join(fields[len(header) - 1:])]

    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False,
                        on_bad_lines=repair, engine="python")
    label_column = str(_get(src, "label_column", "articleType") or "articleType")
    required = ["id", "productDisplayName", label_column]
    unknown = [c for c in required if c not in frame.columns]
    if unknown:
        raise ValueError(f"{styles} has no column(s) {unknown}; its columns are "
                         f"{list(frame.columns)}.")
    labels = frame[label_column].str.strip().tolist()
    has_label = np.array([bool(v) for v in labels])
    _count(dropped, "missing label", (~has_label).sum())
    frame = frame[has_label].reset_index(drop=True)
    labels = [v for v, k in zip(labels, has_label) if k]
    indices, sampled = _apply_sampling(labels, src)
    frame = frame.iloc[indices].reset_index(drop=True)
    for reason, count in sampled.items():
        _count(dropped, reason, count)
    ids = frame["id"].str.strip().tolist()
    titles = frame["productDisplayName"].str.strip().tolist()
    _count(notes, "empty text 'title' (kept as '')", sum(1 for t in titles if not t))
    from tqdm.auto import tqdm

    descriptions = []
    for item_id in tqdm(ids, desc="read descriptions", unit="item", leave=False,
                        disable=len(ids) < 1000):
        description = _fashion_description(root / "styles" / f"{item_id}.json")
        if description is None:
            _count(notes, "no description JSON / value (kept as '')")
        elif not description:
            _count(notes, "empty text 'description' (kept as '')")
        descriptions.append(description or "")
    images = {}
    if _get(src, "images", True):
        images["image"] = ImageField(paths=tuple(str(root / "images" / f"{i}.jpg") for i in ids))
    labels = frame[label_column].str.strip().tolist()
    data = SourceData(ids=ids, labels=labels, class_names=sort_class_names(labels),
                      texts={"title": titles, "description": descriptions}, images=images,
                      dropped=dropped, notes=notes,
                      info={"kind": "fashion_products", "root": str(root.resolve()),
                            "label_column": label_column})
    if len(data) == 0:
        raise ValueError(f"{styles}: no items left (dropped: {dropped}).")
    return data


# ----------------------------------------------------------------------------------------------
# TensorFlow Datasets.


def load_tfds(src: Any) -> SourceData:
    """A TFDS split through `tfds.data_source` (ArrayRecord; no TensorFlow needed).

    Knobs: `name`, `split` (default "train"), `data_dir` ("" = TFDS's default), `text_features`,
    `image_feature` ("" = none), `label_feature` (a ClassLabel feature; default "label"),
    `id_feature` ("" = the record index), plus the shared sampling knobs. Images are read lazily,
    record by record; grey images become RGB.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("The tfds source needs tensorflow-datasets and array-record: "
                          "pip install 'embaug_jax[tfds]'.") from e
    name = str(_get(src, "name", "") or "")
    if not name:
        raise ValueError("config.source.name is required for a tfds source (e.g. 'imdb_reviews').")
    split = str(_get(src, "split", "train") or "train")
    data_dir = str(_get(src, "data_dir", "") or "") or None
    try:
        records = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except (NotImplementedError, AssertionError, FileNotFoundError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"TFDS {name!r} (split {split!r}, data_dir {data_dir or 'default'}) cannot be opened: "
            f"{first_line} tfds.data_source reads sets prepared in ArrayRecord format: run "
            f"`tfds build {name} --file_format=array_record` once, or point "
            "config.source.data_dir at a prepared copy.") from e
    features = records.dataset_info.features
    text_features = split_names(_get(src, "text_features"))
    image_feature = str(_get(src, "image_feature", "") or "")
    label_feature = str(_get(src, "label_feature", "label") or "label")
    id_feature = str(_get(src, "id_feature", "") or "")
    wanted = [*text_features, *([image_feature] if image_feature else []), label_feature,
              *([id_feature] if id_feature else [])]
    unknown = [f for f in wanted if f not in features]
    if unknown:
        raise ValueError(f"TFDS {name} has no feature(s) {unknown}; its features are "
                         f"{list(features)}.")
    if not text_features and not image_feature:
        raise ValueError("Set config.source.text_features and/or config.source.image_feature.")
    class_names = getattr(features[label_feature], "names", None)
    if not class_names:
        raise ValueError(f"TFDS feature {label_feature!r} is not a ClassLabel; pick one that is.")

    def as_text(value: Any) -> str:
        if isinstance(value, np.ndarray):
            value = value.item()
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)

    # Text and labels are small: read them in one pass (without decoding images).
    n = len(records)
    scalar_keys = [*text_features, label_feature, *([id_feature] if id_feature else [])]
    columns: dict[str, list[Any]] = {k: [] for k in scalar_keys}
    from tqdm.auto import tqdm

    for i in tqdm(range(n), desc=f"read {name}", unit="record", leave=False, disable=n < 1000):
        record = records[i]
        for k in scalar_keys:
            columns[k].append(record[k])
    labels = [class_names[int(v)] for v in columns[label_feature]]
    ids = [as_text(v) for v in columns[id_feature]] if id_feature else [str(i) for i in range(n)]
    texts = {k: [as_text(v) for v in columns[k]] for k in text_features}
    notes: dict[str, int] = {}
    for k, values in texts.items():
        _count(notes, f"empty text '{k}' (kept as '')", sum(1 for v in values if not v.strip()))
    images = {}
    if image_feature:
        def load_images(indices: np.ndarray) -> np.ndarray:
            arrays = [np.asarray(records[int(i)][image_feature]) for i in indices]
            return np.stack([_to_rgb(a) for a in arrays])

        images[image_feature] = ImageField(loader=load_images, count=n)
    data = SourceData(ids=ids, labels=labels, class_names=list(class_names), texts=texts,
                      images=images, notes=notes,
                      info={"kind": "tfds", "name": name, "split": split})
    return _finish(data, src)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] -> uint8 [H, W, 3]."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"Expected uint8 images, got {image.dtype}.")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Expected an image [H, W, 1|3|4], got shape {image.shape}.")
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    return image[..., :3]


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST (Debian's dataset-fashion-mnist).


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array (uint8 data only, as MNIST uses)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of uint8 data.")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {body.size} values.")
    return body.reshape(shape)


def load_fashion_mnist(src: Any) -> SourceData:
    """Fashion-MNIST from IDX gz files: 28x28 grey images as RGB uint8, the 10 class names.

    Knobs: `root` (default /usr/share/datasets/fashion-mnist), `split` ("train" or "test"),
    plus the shared sampling knobs (e.g. `max_items`). Ids are "train.00042" style.
    """
    root = Path(str(_get(src, "root", "") or "/usr/share/datasets/fashion-mnist"))
    split = _check_choice("split", str(_get(src, "split", "train") or "train"), ("train", "test"))
    prefix = "train" if split == "train" else "t10k"
    image_path = root / f"{prefix}-images-idx3-ubyte.gz"
    label_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    for p in (image_path, label_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: install Fashion-MNIST with `sudo apt-get "
                                    "install dataset-fashion-mnist` (or set config.source.root).")
    pixels, label_ids = read_idx(image_path), read_idx(label_path)
    if pixels.ndim != 3 or label_ids.ndim != 1 or len(pixels) != len(label_ids):
        raise ValueError(f"{root}: images {pixels.shape} and labels {label_ids.shape} disagree.")
    if label_ids.max(initial=0) >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{label_path}: labels outside 0..9.")

    def load_images(indices: np.ndarray) -> np.ndarray:
        return np.repeat(pixels[np.asarray(indices, np.int64)][..., None], 3, axis=-1)

    labels = [FASHION_MNIST_CLASSES[i] for i in label_ids]
    data = SourceData(ids=[f"{split}.{i:05d}" for i in range(len(labels))], labels=labels,
                      class_names=list(FASHION_MNIST_CLASSES), texts={},
                      images={"image": ImageField(loader=load_images, count=len(labels))},
                      info={"kind": "fashion_mnist", "root": str(root), "split": split})
    return _finish(data, src)


_LOADERS = {"table": load_table, "wordnet": load_wordnet,
            "fashion_products": load_fashion_products, "tfds": load_tfds,
            "fashion_mnist": load_fashion_mnist}


def load_source(config: Any) -> SourceData:
    """Loads `config.source` (a ConfigDict with `kind` and that kind's knobs)."""
    src = _get(config, "source")
    if src is None:
        raise ValueError("The config has no `source` section.")
    kind = str(_get(src, "kind", "") or "")
    if kind not in _LOADERS:
        raise ValueError(f"config.source.kind={kind!r} is not a known source; choose one of "
                         f"{list(_LOADERS)}.")
    return _LOADERS[kind](src)
