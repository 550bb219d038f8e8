"""Tables (CSV, TSV, JSONL, Parquet): how users bring their own data."""

from __future__ import annotations

import codecs
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from embaug_jax.sources.items import (
    ImageField,
    SourceData,
    add_count,
    check_choice,
    sort_class_names,
    split_names,
)
from embaug_jax.sources.sampling import finish
from embaug_jax.util import UserError, check_input, list_first

_TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl",
                  ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_FORMATS = ("csv", "tsv", "jsonl", "parquet")
# The compressions pandas infers from a file name (`compression="infer"`), by suffix.
_COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zip": "zip", ".xz": "xz", ".zst": "zstd"}
# Leading bytes of each compressed format, and of binary tables: a text decoder fed these would
# turn them into garbage tokens, so the error must never suggest decoding them anyway.
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"PK\x03\x04", "zip"),
          (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"PAR1", "parquet"))
# Byte-order marks and the encoding family each names; UTF-32-LE's mark starts with UTF-16-LE's,
# so it is tested first.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
# Bytes sampled for NULs, the sign of binary data or of UTF-16/32 text.
_SAMPLE = 8192


def table_format(path: Path, fmt: str = "", compression: str = "") -> tuple[str, str | None]:
    """(format, compression or None) of a table file: as given, else from its name.

    "items.csv.gz" is gzip-compressed CSV, "items.jsonl.zst" zstd-compressed JSONL, as in pandas'
    `compression="infer"`; compression "none" reads the file as it is.
    """
    suffixes = [s.lower() for s in path.suffixes]
    inferred = _COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if inferred:
        suffixes = suffixes[:-1]
    compression = str(compression or "").lower()
    if compression in ("", "infer"):
        compression = inferred
    elif compression == "none":
        compression = None
    elif compression not in _COMPRESSIONS.values():
        raise UserError(f"config.source.compression={compression!r} is not one of "
                         f"{sorted(set(_COMPRESSIONS.values()))}, 'none' or '' (from the name).")
    given = str(fmt or "").lower()
    if given and given not in _FORMATS:
        raise UserError(f"config.source.format={fmt!r} is not a table format embaug_jax reads; "
                        f"set config.source.format to one of {', '.join(_FORMATS)}, or to '' to "
                        "tell the format from the file's extension. (Save a spreadsheet as CSV "
                        "first.)")
    fmt = given or (_TABLE_FORMATS.get(suffixes[-1]) if suffixes else None)
    if fmt is None:
        raise UserError(f"Cannot tell the format of {path.name} from its extension; set "
                        f"config.source.format to one of {', '.join(_FORMATS)} (a compressed "
                        "table is named like items.csv.gz).")
    return fmt, compression


def _check_encoding(encoding: str) -> str:
    """`encoding` if Python can decode text with it, else a UserError saying how to name one."""
    try:
        # LookupError for unknown names and for codecs of bytes to bytes (base64, zlib); an empty
        # input would skip the lookup.
        b"x".decode(str(encoding), errors="ignore")
    except (LookupError, UnicodeError):
        raise UserError(
            f"config.source.encoding={encoding!r} is not a text encoding Python knows. Name one "
            "as Python's codecs do: utf-8 (the default), utf-8-sig, utf-16 (with a byte-order "
            "mark), utf-16-le or utf-16-be (without), latin-1, cp1252, shift_jis, gb18030, ... "
            "(the list: https://docs.python.org/3/library/codecs.html#standard-encodings)."
        ) from None
    return str(encoding)


def _read_bytes(path: Path, compression: str | None) -> bytes:
    """The file's bytes, decompressed the way pandas does (`pandas.io.common.get_handle`)."""
    if compression is None:
        return path.read_bytes()
    from pandas.io.common import get_handle

    try:
        with get_handle(path, "rb", compression=compression, is_text=False) as handles:
            return handles.handle.read()
    except ImportError as e:  # zstd needs the zstandard package
        raise ImportError(f"{path}: reading {compression} needs an extra package: {e}") from e
    except (OSError, EOFError, ValueError) as e:  # bad gzip/xz/bz2 data, zip of several files
        raise UserError(f"{path}: cannot decompress it as {compression} ({e}). Check the file "
                         "(is it complete?), or set config.source.compression to how it is "
                         "really compressed ('none' if it is not).") from None


def _binary_kind(raw: bytes) -> str | None:
    """What binary data `raw` starts with (a compression, parquet), None if it may be text."""
    for magic, kind in _MAGIC:
        if raw.startswith(magic):
            return kind
    return None


def _bom_family(raw: bytes) -> str | None:
    """The encoding family ("utf-8", "utf-16", "utf-32") whose byte-order mark starts `raw`."""
    return next((family for mark, family in _BOMS if raw.startswith(mark)), None)


def _wide_text_guess(raw: bytes) -> str | None:
    """"utf-16-le" (or -be, utf-32-le, -be) for text without a byte-order mark whose
    characters are mostly ASCII: NULs fill the same byte positions of each character."""
    n = len(raw[:_SAMPLE]) // 4 * 4
    if n == 0:
        return None
    # Share of NULs at each byte position modulo 4.
    nul = [raw[i:n:4].count(0) / (n // 4) for i in range(4)]
    layouts = {"utf-16-le": (1, 3), "utf-16-be": (0, 2), "utf-32-le": (1, 2, 3),
               "utf-32-be": (0, 1, 2)}
    for name, zero in layouts.items():
        if all(nul[i] > 0.5 if i in zero else nul[i] < 0.1 for i in range(4)):
            return name
    return None


def decode_text(raw: bytes, path: Path, encoding: str, errors: str) -> str:
    """A text table's bytes as text; binary data and text of another width are refused.

    Compressed data or Parquet is never decoded (not even with errors="replace": a tokenizer would
    get garbage); UTF-16 or UTF-32 text read as a narrow encoding names the encoding to set. A
    leading byte-order mark is dropped: it is no part of the first column's name.
    """
    kind = _binary_kind(raw)
    if kind is not None:
        suffix = {v: k for k, v in _COMPRESSIONS.items()}.get(kind)
        fix = (f"name it {path.name}{suffix} or set config.source.compression={kind}" if suffix
               else "name it .parquet or set config.source.format=parquet")
        raise UserError(f"{path} holds {kind} data, not text: {fix}.")
    family = codecs.lookup(encoding).name
    bom = _bom_family(raw)
    if bom in ("utf-16", "utf-32") and not family.startswith(bom):
        raise UserError(f"{path} is {bom.upper()} text (it starts with a {bom.upper()} "
                        f"byte-order mark), not {encoding}: pass "
                        f"--config.source.encoding={bom}.")
    if not family.startswith(("utf-16", "utf-32")) and b"\0" in raw[:_SAMPLE]:
        guess = _wide_text_guess(raw)
        if guess:
            raise UserError(f"{path} looks like {guess.upper()} text without a byte-order mark "
                            f"(NUL bytes between its letters), not {encoding}: pass "
                            f"--config.source.encoding={guess}.")
        raise UserError(f"{path} holds binary data, not text: give the table itself (CSV, TSV, "
                        "JSONL or Parquet).")
    try:
        text = raw.decode(encoding, errors=errors)
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(
            f"{path}: line {line} is not valid {encoding} ({e.reason} at byte {e.start}). Fix the "
            f"file, set config.source.encoding to its real encoding, or pass "
            f"--config.source.encoding_errors=replace to replace undecodable bytes.") from None
    return text.removeprefix("\ufeff")


def _read_table(path: Path, fmt: str, encoding: str, encoding_errors: str,
                compression: str | None = None):
    import pandas as pd

    raw = _read_bytes(path, compression)
    if not raw:
        size = "0 bytes" if compression is None else "nothing once decompressed"
        raise UserError(f"{path} is empty ({size}): a table needs a header row and at least one "
                        "data row (config.source.path).")
    if fmt == "parquet":
        return pd.read_parquet(io.BytesIO(raw))
    text = decode_text(raw, path, encoding, encoding_errors)
    del raw
    if not text.strip():
        raise UserError(f"{path} holds only whitespace: a table needs a header row and at least "
                        "one data row (config.source.path).")
    if fmt in ("csv", "tsv"):
        # Every cell as a string, empty cells as "" (not NaN), so ids like "007" survive.
        try:
            return pd.read_csv(io.StringIO(text), sep="," if fmt == "csv" else "\t", dtype=str,
                               keep_default_na=False, na_filter=False)
        except pd.errors.ParserError as e:
            raise UserError(f"{path}: not a well-formed {fmt.upper()} file: {e}") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {lineno} is not valid JSON: {e.msg}.") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}: line {lineno} is a JSON {type(row).__name__}, expected an "
                            "object with one key per column.")
        rows.append(row)
    # Each cell keeps its JSON value: a column of integers with a gap stays integers (not floats
    # that would name class 3 "3.0"), and a label's type can be checked.
    return pd.DataFrame(rows, dtype=object)


def _cell_text(value: Any) -> str | None:
    """A table cell as text; None for a missing value (NaN, None, empty string)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    value = str(value)
    return value if value.strip() else None


def _value_kind(value: Any) -> str:
    """The kind of a cell's value, as a label check names it."""
    if isinstance(value, (list, tuple, dict, np.ndarray)):
        return "list or object"
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, (int, np.integer)):
        return "integer"
    if isinstance(value, (float, np.floating)):
        return "decimal number"
    return "string"


def _check_label_values(values: list[Any], column: str, path: Path) -> None:
    """Refuses labels that are not one kind of single value.

    A list or an object (JSON, Parquet) is no class name, and mixed kinds change the classes
    silently: 3 and "3" would become one class, 3 and 3.0 two.
    """
    rows: dict[str, list[int]] = {}
    for row, value in enumerate(values):
        if _cell_text(value) is not None:  # missing labels are the missing_labels policy's
            rows.setdefault(_value_kind(value), []).append(row)
    nested = rows.pop("list or object", [])
    if nested:
        example = json.dumps(values[nested[0]], default=str)[:60]
        raise UserError(
            f"{path.name}: label column {column!r} holds a list or an object in {len(nested)} "
            f"rows (data rows {list_first(nested)}, 0-based; e.g. {example}); a label is one "
            "class name, a string or a number. Make each label a single value, or pick another "
            "config.source.label_column.")
    if len(rows) > 1:
        kinds = "; ".join(f"{kind}s in rows {list_first(r)}" for kind, r in
                          sorted(rows.items(), key=lambda item: -len(item[1])))
        raise UserError(
            f"{path.name}: label column {column!r} mixes value types ({kinds}; data rows, "
            "0-based): 3 and \"3\" would become one class, 3 and 3.0 two. Write every label "
            "the same way (e.g. all as strings).")


# A text column empty in more than this share of its rows is probably the wrong column.
_MOSTLY_EMPTY = 0.5


def _table_texts(columns: dict[str, list[Any]], policy: str, notes: dict[str, int],
                 keep: np.ndarray, path: Path) -> dict[str, list[str]]:
    """Applies the empty-text policy; marks rows to drop in `keep` (in place).

    A column empty in every (labelled) row is an error whatever the policy: it would embed as N
    identical vectors. One empty in most rows is kept, with a warning giving the count.
    """
    texts = {}
    for name, values in columns.items():
        cells = [_cell_text(v) for v in values]
        empty = np.array([c is None for c in cells], bool)
        n_rows, n_empty = int(keep.sum()), int((empty & keep).sum())
        if n_rows and n_empty == n_rows:
            raise UserError(f"{path.name}: text column {name!r} is empty in all {n_rows} rows; "
                            "it would embed every item as the same vector. Check "
                            "config.source.text_columns (a misspelt or unfilled column?).")
        if policy == "keep" and n_empty > _MOSTLY_EMPTY * n_rows:
            logging.warning("%s: text column %r is empty in %d of %d rows (kept as '', each "
                            "embedded as the same vector); config.source.empty_texts=drop "
                            "leaves them out.", path.name, name, n_empty, n_rows)
        if empty.any():
            if policy == "error":
                raise UserError(f"Text column {name!r} is empty in {int(empty.sum())} rows "
                                f"(data rows {list_first(np.flatnonzero(empty))}, 0-based). Fill "
                                "them, or set config.source.empty_texts to 'keep' or 'drop'.")
            if policy == "drop":
                keep &= ~empty
            else:
                add_count(notes, f"empty text '{name}' (kept as '')", (empty & keep).sum())
        texts[name] = [c or "" for c in cells]
    return texts


def load_table(src: Any) -> SourceData:
    """A CSV / TSV / JSONL / Parquet table with text, label, optional id and image-path columns.

    Knobs (`config.source.*`): `path`; `format` ("" = from the extension); `compression` ("" =
    from the extension as pandas infers it: .gz, .bz2, .zip, .xz, .zst; or "none"); `text_columns`;
    `label_column`; `id_column` ("" = row numbers "0", "1", ...); `image_columns` (paths relative
    to the table's folder, or absolute); `missing_labels`: "drop" (default; counted) or "error";
    `empty_texts`: "keep" (default; embedded as "" -- [CLS][SEP] only -- and counted), "drop"
    or "error"; `encoding` (default "utf-8") and `encoding_errors`: "strict" (default: an error
    naming the line) or "replace".
    """
    path = Path(str(src.path))
    if not str(src.path):
        raise UserError("config.source.path is required for a table source "
                        "(--config.source.path=data.csv).")
    check_input(path, "the table, config.source.path",
                missing=f"Table {path} does not exist (config.source.path).")
    fmt, compression = table_format(path, src.format, src.compression)
    encoding = _check_encoding(src.encoding)
    missing_policy = check_choice("missing_labels", src.missing_labels, ("drop", "error"))
    empty_policy = check_choice("empty_texts", src.empty_texts, ("keep", "drop", "error"))
    errors = check_choice("encoding_errors", src.encoding_errors, ("strict", "replace"))
    frame = _read_table(path, fmt, encoding, errors, compression)

    text_columns = split_names(src.text_columns)
    image_columns = split_names(src.image_columns)
    label_column = str(src.label_column)
    id_column = str(src.id_column)
    if not label_column:
        raise UserError("config.source.label_column is required (the column with class names).")
    if not text_columns and not image_columns:
        raise UserError("Set config.source.text_columns and/or config.source.image_columns "
                        "(comma-separated column names).")
    wanted = [*text_columns, *image_columns, label_column, *([id_column] if id_column else [])]
    available = [str(c) for c in frame.columns]
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise UserError(f"{path.name} has no column(s) {unknown}; its columns are {available}.")

    n = len(frame)
    if n == 0:
        raise UserError(f"{path} has a header ({', '.join(available)}) but no data rows.")
    dropped: dict[str, int] = {}
    notes: dict[str, int] = {}
    label_values = frame[label_column].tolist()
    _check_label_values(label_values, label_column, path)
    labels = [_cell_text(v) for v in label_values]
    missing = np.array([label is None for label in labels], bool)
    if missing.any() and missing_policy == "error":
        raise UserError(f"Label column {label_column!r} is empty in {int(missing.sum())} rows "
                        f"(data rows {list_first(np.flatnonzero(missing))}, 0-based). Fill them, "
                        "or set config.source.missing_labels=drop to leave those rows out.")
    keep = ~missing
    add_count(dropped, "missing label", missing.sum())
    ids = ([_cell_text(v) or "" for v in frame[id_column].tolist()] if id_column
           else [str(i) for i in range(n)])
    n_keep_before = int(keep.sum())
    texts = _table_texts({c: frame[c].tolist() for c in text_columns}, empty_policy, notes, keep,
                         path)
    add_count(dropped, "empty text", n_keep_before - keep.sum())
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
        raise UserError(f"Id column {id_column!r} is empty in {len(empty_ids)} rows (data rows "
                        f"{list_first(empty_ids)}, 0-based); every item needs an id.")
    kept_labels = [labels[i] for i in rows]
    data = SourceData(
        ids=[ids[i] for i in rows], labels=kept_labels, class_names=sort_class_names(kept_labels),
        texts={k: [v[i] for i in rows] for k, v in texts.items()},
        images={k: v.subset(rows) for k, v in images.items()},
        info={"kind": "table", "path": str(path.resolve()), "format": fmt,
              "compression": compression or "none", "rows": n})
    data.dropped.update(dropped)
    data.notes.update(notes)
    return finish(data, src)


