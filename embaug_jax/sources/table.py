"""Tables (CSV, TSV, JSONL, Parquet): how users bring their own data."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from embaug_jax.sources.items import (
    ImageField,
    SourceData,
    _check_choice,
    _count,
    sort_class_names,
    split_names,
)
from embaug_jax.sources.sampling import finish
from embaug_jax.util import list_first

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
                raise ValueError(f"Text column {name!r} is empty in {int(empty.sum())} rows "
                                 f"(data rows {list_first(np.flatnonzero(empty))}, 0-based). Fill them, or set "
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
    path = Path(str(src.path))
    if not str(src.path):
        raise ValueError("config.source.path is required for a table source "
                         "(--config.source.path=data.csv).")
    if not path.is_file():
        raise FileNotFoundError(f"Table {path} does not exist (config.source.path).")
    fmt = str(src.format).lower() or _TABLE_FORMATS.get(path.suffix.lower())
    if fmt not in ("csv", "tsv", "jsonl", "parquet"):
        raise ValueError(f"Cannot tell the format of {path.name} from its extension; set "
                         "config.source.format to one of csv, tsv, jsonl, parquet.")
    missing_policy = _check_choice("missing_labels", src.missing_labels,
                                   ("drop", "error"))
    empty_policy = _check_choice("empty_texts", src.empty_texts,
                                 ("keep", "drop", "error"))
    errors = _check_choice("encoding_errors", src.encoding_errors,
                           ("strict", "replace"))
    frame = _read_table(path, fmt, src.encoding, errors)

    text_columns = split_names(src.text_columns)
    image_columns = split_names(src.image_columns)
    label_column = str(src.label_column)
    id_column = str(src.id_column)
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
        raise ValueError(f"Label column {label_column!r} is empty in {int(missing.sum())} rows "
                         f"(data rows {list_first(np.flatnonzero(missing))}, 0-based). Fill them, or set "
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
        raise ValueError(f"Id column {id_column!r} is empty in {len(empty_ids)} rows (data rows "
                         f"{list_first(empty_ids)}, 0-based); every item needs an id.")
    kept_labels = [labels[i] for i in rows]
    data = SourceData(
        ids=[ids[i] for i in rows], labels=kept_labels, class_names=sort_class_names(kept_labels),
        texts={k: [v[i] for i in rows] for k, v in texts.items()},
        images={k: v.subset(rows) for k, v in images.items()},
        info={"kind": "table", "path": str(path.resolve()), "format": fmt, "rows": n})
    data.dropped.update(dropped)
    data.notes.update(notes)
    return finish(data, src)


