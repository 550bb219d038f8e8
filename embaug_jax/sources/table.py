"""Tables (CSV, TSV, JSONL, Parquet): how users bring their own data.

A table is read in batches (`table_reader.TableReader`), never whole: one pass at load checks
every row and keeps, per kept item, its id, its label's index and its row number; the texts and
image paths stay in the file and are read again, a batch at a time, when the pipeline asks for
them (`items.StreamedColumn`). Memory then grows with the items' ids and the classes, not with
the table's texts, so a table larger than memory can be embedded.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from absl import logging

from embaug_jax.sources.items import (
    ImageField,
    SourceData,
    StreamedColumn,
    add_count,
    check_choice,
    sort_class_names,
    split_names,
)
from embaug_jax.sources.sampling import finish
from embaug_jax.sources.table_reader import TableReader, check_encoding, table_format
from embaug_jax.util import UserError, check_input

# Row numbers a message names before "... and K more" (as `util.list_first`).
_SHOWN = 10
# A text column empty in more than this share of its rows is probably the wrong column.
_MOSTLY_EMPTY = 0.5


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


class _Rows:
    """Row numbers counted as a table streams by, the first few kept for a message."""

    def __init__(self):
        self.count, self.first = 0, []

    def add(self, rows: np.ndarray | Sequence[int]) -> None:
        rows = np.asarray(rows, np.int64)
        if len(self.first) < _SHOWN:
            self.first += rows[:_SHOWN - len(self.first)].tolist()
        self.count += len(rows)

    def __str__(self) -> str:
        shown = ", ".join(map(str, self.first))
        more = self.count - len(self.first)
        return shown + (f", ... and {more} more" if more > 0 else "")


class _Spool:
    """A per-row array built a batch at a time: the batches wait in a temporary file, and
    `concatenate` reads them back into the whole. `np.concatenate` of the batches in memory
    would hold every batch and the whole at once, twice the array."""

    def __init__(self):
        self._file = None  # opened by the first batch: a spool never used holds no file
        self._parts: list[tuple[np.dtype, int]] = []

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values)
        if self._file is None:
            self._file = tempfile.TemporaryFile()
        self._file.write(values.tobytes())
        self._parts.append((values.dtype, len(values)))

    def concatenate(self) -> np.ndarray:
        """The batches (at least one) as one array of their common dtype (a str array as
        wide as the longest), as `np.concatenate` makes it; the spool is emptied."""
        dtypes = [dtype for dtype, _ in self._parts]
        out = np.empty(sum(n for _, n in self._parts), np.result_type(*dtypes))
        self._file.seek(0)
        start = 0
        for dtype, n in self._parts:
            out[start:start + n] = np.frombuffer(self._file.read(n * dtype.itemsize), dtype)
            start += n
        self.close()
        return out

    def close(self) -> None:
        """Drops the batches (and their file)."""
        if self._file is not None:
            self._file.close()
        self._file, self._parts = None, []


class _TextCounts:
    """What the empty-text policy needs of one text column, counted over the batches."""

    def __init__(self):
        self.rows = 0  # rows kept before this column's policy applies
        self.empty_kept = 0  # empty among them
        self.empty = _Rows()  # empty in any row, labelled or not


class _Scan:
    """The one pass over a table at load: checks and counts, and per kept item its row number,
    its label's index (in order of first appearance) and its id."""

    def __init__(self, text_columns: list[str], id_column: str, empty_policy: str):
        self.text_columns, self.id_column, self.empty_policy = text_columns, id_column, empty_policy
        self.rows = 0
        self.kinds: dict[str, _Rows] = {}  # label value kind -> rows
        self.nested_example: Any = None
        self.missing = _Rows()
        self.texts = {c: _TextCounts() for c in text_columns}
        self.empty_ids = _Rows()
        self.classes: dict[str, int] = {}
        self.kept_rows, self.kept_labels, self.kept_ids = _Spool(), _Spool(), _Spool()

    def close(self) -> None:
        """Drops the kept arrays not yet read back (a load that stopped at an error)."""
        for spool in (self.kept_rows, self.kept_labels, self.kept_ids):
            spool.close()

    def add(self, start: int, cells: dict[str, list[Any]], label_column: str) -> None:
        values = cells[label_column]
        n = len(values)
        labels = [_cell_text(v) for v in values]
        rows_of_kind: dict[str, list[int]] = {}
        for row, (value, label) in enumerate(zip(values, labels)):
            if label is not None:  # missing labels are the missing_labels policy's
                kind = _value_kind(value)
                if kind == "list or object" and self.nested_example is None:
                    self.nested_example = value
                rows_of_kind.setdefault(kind, []).append(start + row)
        for kind, rows in rows_of_kind.items():  # counted once a batch, not once a row
            self.kinds.setdefault(kind, _Rows()).add(rows)
        labelled = np.array([label is not None for label in labels], bool)
        self.missing.add(start + np.flatnonzero(~labelled))
        keep = labelled
        for column in self.text_columns:
            empty = np.array([_cell_text(v) is None for v in cells[column]], bool)
            counts = self.texts[column]
            counts.rows += int(keep.sum())
            counts.empty_kept += int((empty & keep).sum())
            counts.empty.add(start + np.flatnonzero(empty))
            if self.empty_policy == "drop":
                keep = keep & ~empty
        kept = np.flatnonzero(keep)
        if self.id_column:
            ids = [_cell_text(cells[self.id_column][i]) or "" for i in kept.tolist()]
            self.empty_ids.add(start + kept[[not i for i in ids]])
            self.kept_ids.append(np.asarray(ids, dtype=str))
        self.kept_rows.append(start + kept)
        self.kept_labels.append(np.array(
            [self.classes.setdefault(labels[i], len(self.classes)) for i in kept.tolist()],
            np.int32))
        self.rows += n


class _TableStore:
    """The text and image-path columns of a table, read again in batches when asked: the
    store of its `StreamedColumn`s. Requests for ascending rows, shard after shard, continue
    one pass through the file; the cells of the last request are kept, so each field of a
    shard reads the same rows once."""

    def __init__(self, reader: TableReader, convert: dict[str, Callable[[Any], Any]]):
        self._reader, self._convert = reader, convert
        self._batches = None
        self._batch: tuple[int, dict[str, list[Any]]] | None = None
        self._last: tuple[np.ndarray, dict[str, list[Any]]] | None = None

    def _restart(self) -> None:
        if self._batches is not None:
            self._batches.close()
        self._batches = self._reader.batches(list(self._convert))
        self._batch = None
        self._next_batch()

    def _next_batch(self) -> None:
        self._batch = None  # dropped before the next is read: one batch in memory at a time
        try:
            self._batch = next(self._batches)
        except StopIteration:
            raise UserError(f"{self._reader.path} has fewer rows than when it was loaded; run "
                            "the command again once the table is complete.") from None

    def values(self, name: str, rows: np.ndarray) -> list[Any]:
        rows = np.asarray(rows, np.int64)
        if self._last is None or not np.array_equal(self._last[0], rows):
            self._last = (rows.copy(), self._cells(rows))
        convert = self._convert[name]
        return [convert(v) for v in self._last[1][name]]

    def _cells(self, rows: np.ndarray) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {c: [] for c in self._convert}
        if not len(rows):
            return out
        if self._batch is None or rows[0] < self._batch[0]:
            self._restart()
        i = 0
        while i < len(rows):
            start, cells = self._batch
            end = start + len(next(iter(cells.values())))
            if rows[i] >= end:
                del cells
                self._next_batch()
                continue
            j = int(np.searchsorted(rows, end, side="left"))
            local = (rows[i:j] - start).tolist()
            for column, values in cells.items():
                out[column].extend(values[k] for k in local)
            i = j
        return out


def _image_path(table: Path) -> Callable[[Any], str | None]:
    def resolve(cell: Any) -> str | None:
        value = _cell_text(cell)
        if value is None:
            return None
        return str((table.parent / value).resolve() if not Path(value).is_absolute()
                   else Path(value))

    return resolve


def _text(cell: Any) -> str:
    return _cell_text(cell) or ""


def _check_labels(scan: _Scan, column: str, path: Path, missing_policy: str) -> None:
    """Refuses labels that are not one kind of single value, and missing labels under
    missing_labels=error.

    A list or an object (JSON, Parquet) is no class name, and mixed kinds change the classes
    silently: 3 and "3" would become one class, 3 and 3.0 two.
    """
    kinds = dict(scan.kinds)
    nested = kinds.pop("list or object", None)
    if nested is not None:
        example = json.dumps(scan.nested_example, default=str)[:60]
        raise UserError(
            f"{path.name}: label column {column!r} holds a list or an object in {nested.count} "
            f"rows (data rows {nested}, 0-based; e.g. {example}); a label is one class name, a "
            "string or a number. Make each label a single value, or pick another "
            "config.source.label_column.")
    if len(kinds) > 1:
        listed = "; ".join(f"{kind}s in rows {rows}" for kind, rows in
                           sorted(kinds.items(), key=lambda item: -item[1].count))
        raise UserError(
            f"{path.name}: label column {column!r} mixes value types ({listed}; data rows, "
            "0-based): 3 and \"3\" would become one class, 3 and 3.0 two. Write every label "
            "the same way (e.g. all as strings).")
    if scan.missing.count and missing_policy == "error":
        raise UserError(f"Label column {column!r} is empty in {scan.missing.count} rows "
                        f"(data rows {scan.missing}, 0-based). Fill them, or set "
                        "config.source.missing_labels=drop to leave those rows out.")


def _check_texts(scan: _Scan, path: Path, notes: dict[str, int]) -> None:
    """Applies the empty-text policy's checks and counts, column after column.

    A column empty in every (labelled) row is an error whatever the policy: it would embed as N
    identical vectors. One empty in most rows is kept, with a warning giving the count.
    """
    policy = scan.empty_policy
    for name, counts in scan.texts.items():
        if counts.rows and counts.empty_kept == counts.rows:
            raise UserError(f"{path.name}: text column {name!r} is empty in all {counts.rows} "
                            "rows; it would embed every item as the same vector. Check "
                            "config.source.text_columns (a misspelt or unfilled column?).")
        if policy == "keep" and counts.empty_kept > _MOSTLY_EMPTY * counts.rows:
            logging.warning("%s: text column %r is empty in %d of %d rows (kept as '', each "
                            "embedded as the same vector); config.source.empty_texts=drop "
                            "leaves them out.", path.name, name, counts.empty_kept, counts.rows)
        if counts.empty.count:
            if policy == "error":
                raise UserError(f"Text column {name!r} is empty in {counts.empty.count} rows "
                                f"(data rows {counts.empty}, 0-based). Fill them, or set "
                                "config.source.empty_texts to 'keep' or 'drop'.")
            if policy == "keep":
                add_count(notes, f"empty text '{name}' (kept as '')", counts.empty_kept)


def load_table(src: Any) -> SourceData:
    """A CSV / TSV / JSONL / Parquet table with text, label, optional id and image-path columns.

    Knobs (`config.source.*`): `path`; `format` ("" = from the extension); `compression` ("" =
    from the extension as pandas infers it: .gz, .bz2, .zip, .xz, .zst; or "none"); `text_columns`;
    `label_column`; `id_column` ("" = row numbers "0", "1", ...); `image_columns` (paths relative
    to the table's folder, or absolute); `missing_labels`: "drop" (default; counted) or "error";
    `empty_texts`: "keep" (default; embedded as "" -- [CLS][SEP] only -- and counted), "drop"
    or "error"; `encoding` (default "utf-8") and `encoding_errors`: "strict" (default: an error
    naming the line) or "replace".

    The table is read in batches (see the module doc): the texts and image paths of the items
    are `StreamedColumn`s, read from the file again when asked.
    """
    path = Path(str(src.path))
    if not str(src.path):
        raise UserError("config.source.path is required for a table source "
                        "(--config.source.path=data.csv).")
    check_input(path, "the table, config.source.path",
                missing=f"Table {path} does not exist (config.source.path).")
    fmt, compression = table_format(path, src.format, src.compression)
    encoding = check_encoding(src.encoding)
    missing_policy = check_choice("missing_labels", src.missing_labels, ("drop", "error"))
    empty_policy = check_choice("empty_texts", src.empty_texts, ("keep", "drop", "error"))
    errors = check_choice("encoding_errors", src.encoding_errors, ("strict", "replace"))
    reader = TableReader(path, fmt, compression, encoding, errors)
    header = reader.columns()  # None for JSONL: its columns are known after the pass

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

    def check_columns(available: list[str]) -> None:
        unknown = [c for c in wanted if c not in available]
        if unknown:
            raise UserError(f"{path.name} has no column(s) {unknown}; its columns are "
                            f"{available}.")

    if header is not None:
        check_columns(header)
    # The spools' temporary files are closed however the checks end.
    with contextlib.closing(_Scan(text_columns, id_column, empty_policy)) as scan:
        seen: dict[str, None] = {}
        read = list(dict.fromkeys([label_column, *([id_column] if id_column else []),
                                   *text_columns]))
        for start, cells in reader.batches(read, seen_columns=seen):
            scan.add(start, cells, label_column)
            del cells  # before the next batch is read: one batch in memory at a time
        available = header if header is not None else list(seen)
        check_columns(available)
        if scan.rows == 0:
            raise UserError(f"{path} has a header ({', '.join(available)}) but no data rows.")

        dropped: dict[str, int] = {}
        notes: dict[str, int] = {}
        _check_labels(scan, label_column, path, missing_policy)
        add_count(dropped, "missing label", scan.missing.count)
        _check_texts(scan, path, notes)
        rows = scan.kept_rows.concatenate()
        add_count(dropped, "empty text", scan.rows - scan.missing.count - len(rows))
        if scan.empty_ids.count:
            raise UserError(f"Id column {id_column!r} is empty in {scan.empty_ids.count} rows "
                            f"(data rows {scan.empty_ids}, 0-based); every item needs an id.")
        if id_column:
            ids = scan.kept_ids.concatenate()
        else:  # row numbers, as wide as the longest of them
            ids = rows.astype(f"<U{len(str(int(rows.max()))) if len(rows) else 1}")
        label_ids = scan.kept_labels.concatenate()
    # The classes of the kept items (the scan numbers a class by its first kept item), in
    # natural order.
    names = list(scan.classes)
    class_names = sort_class_names(names)
    order = {name: i for i, name in enumerate(class_names)}
    position = np.array([order[name] for name in names], np.int32)
    store = _TableStore(reader, {**{c: _text for c in text_columns},
                                 **{c: _image_path(path) for c in image_columns}})
    data = SourceData(
        ids=ids, label_ids=position[label_ids], class_names=class_names,
        texts={c: StreamedColumn(store, c, rows) for c in text_columns},
        images={c: ImageField(paths=StreamedColumn(store, c, rows)) for c in image_columns},
        dropped=dropped, notes=notes,
        info={"kind": "table", "path": str(path.resolve()), "format": fmt,
              "compression": compression or "none", "rows": scan.rows})
    return finish(data, src)
