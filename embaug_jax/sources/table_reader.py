"""Table files read in batches of rows, so that no table has to fit in memory.

`TableReader(path, fmt, compression, encoding, encoding_errors).batches(columns)` yields the
cells of the named columns about a million characters at a time (a few thousand rows of
product descriptions), however long the table is, and holds no batch once the next is read:

- CSV / TSV: pandas' chunked reader (`read_csv(chunksize=...)`), every cell a string and empty
  cells "" (so ids like "007" survive), exactly as one `read_csv` of the whole file reads them.
- JSONL: line by line; each cell keeps its JSON value (a missing key is None).
- Parquet: pyarrow's record batches, converted as `pandas.read_parquet` converts the whole
  file: an integer column with a missing value anywhere becomes floats in every batch.

Text is decoded as it streams. Before any of it is decoded, its first bytes are checked as
`decode_text` checks a whole file: compressed or binary data is refused, and UTF-16 or UTF-32
text read as a narrow encoding names the encoding to set; an undecodable byte names its line.
Compressed tables (.gz, .bz2, .zip, .xz, .zst, as pandas infers them) are decompressed as they
stream; a compressed Parquet file, which is read by seeking, is first decompressed into a
temporary file.

A table that changes between two passes (its size or modification time) is an error: a
dataset must not mix the contents of two versions of its table.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

from embaug_jax.util import UserError

_TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl",
                  ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
FORMATS = ("csv", "tsv", "jsonl", "parquet")
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
# Bytes read from the file at a time.
_READ_BYTES = 1 << 20
# Each batch holds about this many characters of cells (rows: at least _MIN_ROWS, at most
# _MAX_ROWS), so that its memory is bounded however long a row's texts are. A batch takes about
# ten bytes a character while it is parsed (pandas' parser, then a Python string per cell): one
# of 4 Mi characters raised the RSS by 44 MiB, and reading a 100,000-row table peaked at 185 MiB
# with batches of 4 Mi characters, 151 MiB with these (benchmarks/README.md, "Peak memory").
_BATCH_CHARS = 1 << 20
_MIN_ROWS, _MAX_ROWS = 16, 65536


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
    if given and given not in FORMATS:
        raise UserError(f"config.source.format={fmt!r} is not a table format embaug_jax reads; "
                        f"set config.source.format to one of {', '.join(FORMATS)}, or to '' to "
                        "tell the format from the file's extension. (Save a spreadsheet as CSV "
                        "first.)")
    fmt = given or (_TABLE_FORMATS.get(suffixes[-1]) if suffixes else None)
    if fmt is None:
        raise UserError(f"Cannot tell the format of {path.name} from its extension; set "
                        f"config.source.format to one of {', '.join(FORMATS)} (a compressed "
                        "table is named like items.csv.gz).")
    return fmt, compression


def check_encoding(encoding: str) -> str:
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


def check_text_start(head: bytes, path: Path, encoding: str) -> None:
    """Refuses a text table whose first bytes (at least the first _SAMPLE, or all) are not
    `encoding` text: compressed data, Parquet, other binary data, or UTF-16/32 text read as a
    narrow encoding (the error names the encoding to set)."""
    kind = _binary_kind(head)
    if kind is not None:
        suffix = {v: k for k, v in _COMPRESSIONS.items()}.get(kind)
        fix = (f"name it {path.name}{suffix} or set config.source.compression={kind}" if suffix
               else "name it .parquet or set config.source.format=parquet")
        raise UserError(f"{path} holds {kind} data, not text: {fix}.")
    family = codecs.lookup(encoding).name
    bom = _bom_family(head)
    if bom in ("utf-16", "utf-32") and not family.startswith(bom):
        raise UserError(f"{path} is {bom.upper()} text (it starts with a {bom.upper()} "
                        f"byte-order mark), not {encoding}: pass "
                        f"--config.source.encoding={bom}.")
    if not family.startswith(("utf-16", "utf-32")) and b"\0" in head[:_SAMPLE]:
        guess = _wide_text_guess(head)
        if guess:
            raise UserError(f"{path} looks like {guess.upper()} text without a byte-order mark "
                            f"(NUL bytes between its letters), not {encoding}: pass "
                            f"--config.source.encoding={guess}.")
        raise UserError(f"{path} holds binary data, not text: give the table itself (CSV, TSV, "
                        "JSONL or Parquet).")


def _decode_error(path: Path, encoding: str, line: int, e: UnicodeDecodeError,
                  at: int) -> UserError:
    return UserError(
        f"{path}: line {line} is not valid {encoding} ({e.reason} at byte {at}). Fix the "
        f"file, set config.source.encoding to its real encoding, or pass "
        f"--config.source.encoding_errors=replace to replace undecodable bytes.")


def decode_text(raw: bytes, path: Path, encoding: str, errors: str) -> str:
    """A text file's bytes as text; binary data and text of another width are refused.

    Compressed data or Parquet is never decoded (not even with errors="replace": a tokenizer would
    get garbage); UTF-16 or UTF-32 text read as a narrow encoding names the encoding to set. A
    leading byte-order mark is dropped: it is no part of the first column's name.
    """
    check_text_start(raw[:_SAMPLE], path, encoding)
    try:
        text = raw.decode(encoding, errors=errors)
    except UnicodeDecodeError as e:
        raise _decode_error(path, encoding, raw[:e.start].count(b"\n") + 1, e, e.start) from None
    return text.removeprefix("\ufeff")


class _DecodedText(io.TextIOBase):
    """A binary stream decoded as it is read, with `decode_text`'s checks and messages."""

    def __init__(self, raw: IO[bytes], path: Path, encoding: str, errors: str, read_raw):
        self._raw, self._read_raw = raw, read_raw
        self._path, self._encoding = path, encoding
        self._decoder = codecs.getincrementaldecoder(encoding)(errors=errors)
        self._pending = ""  # decoded, not yet read
        self._fed = 0  # bytes given to the decoder so far
        self._newlines = 0  # b"\n" among them
        self._at_start = True  # no character returned yet (a byte-order mark is dropped)
        self._eof = False

    def readable(self) -> bool:
        return True

    def _feed(self, data: bytes) -> None:
        final = not data
        state = self._decoder.getstate()[0] if hasattr(self._decoder, "getstate") else b""
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as e:
            # e.start counts from the bytes the decoder held back from the previous read.
            held = bytes(state)
            before = held + data
            at = self._fed - len(held) + e.start
            line = self._newlines - held.count(b"\n") + before[:e.start].count(b"\n") + 1
            raise _decode_error(self._path, self._encoding, line, e, at) from None
        self._fed += len(data)
        self._newlines += data.count(b"\n")
        if self._at_start and text:
            text = text.removeprefix("\ufeff")
            self._at_start = False
        self._pending += text
        self._eof = final

    def read(self, size: int | None = -1) -> str:
        size = -1 if size is None else size
        while not self._eof and (size < 0 or len(self._pending) < size):
            self._feed(self._read_raw(self._raw, _READ_BYTES))
        if size < 0:
            out, self._pending = self._pending, ""
        else:
            out, self._pending = self._pending[:size], self._pending[size:]
        return out


class TableReader:
    """One table file, read in batches of rows as many times as asked (see the module doc)."""

    def __init__(self, path: Path, fmt: str, compression: str | None, encoding: str,
                 errors: str):
        self.path, self.format, self.compression = Path(path), fmt, compression
        self.encoding, self.errors = encoding, errors
        self._signature = self._stat()
        self._spooled: IO[bytes] | None = None  # a compressed Parquet file, decompressed
        self._float_columns: set[str] | None = None  # Parquet integers with a missing value

    def _stat(self) -> tuple[int, int]:
        stat = self.path.stat()
        return stat.st_size, stat.st_mtime_ns

    def _check_unchanged(self) -> None:
        if self._stat() != self._signature:
            raise UserError(f"{self.path} changed while it was being read (its size or "
                            "modification time differs from the first pass); run the command "
                            "again once the table is complete.")

    def _open_bytes(self) -> IO[bytes]:
        """The file's bytes, decompressed as pandas does (`pandas.io.common.get_handle`)."""
        self._check_unchanged()
        if self.compression is None:
            return open(self.path, "rb")
        from pandas.io.common import get_handle

        try:
            handles = get_handle(self.path, "rb", compression=self.compression, is_text=False)
        except ImportError as e:  # zstd needs the zstandard package
            raise ImportError(f"{self.path}: reading {self.compression} needs an extra package: "
                              f"{e}") from e
        except (OSError, EOFError, ValueError) as e:  # a zip of several files
            raise self._decompress_error(e) from None
        handle = handles.handle
        handle.close_handles = handles.close  # closing the stream closes what get_handle opened
        return handle

    def _decompress_error(self, e: BaseException) -> UserError:
        return UserError(f"{self.path}: cannot decompress it as {self.compression} ({e}). Check "
                         "the file (is it complete?), or set config.source.compression to how "
                         "it is really compressed ('none' if it is not).")

    def _read_raw(self, handle: IO[bytes], size: int) -> bytes:
        try:
            return handle.read(size)
        except (OSError, EOFError, ValueError) as e:  # bad gzip/xz/bz2 data
            if self.compression is None:
                raise
            raise self._decompress_error(e) from None

    def _close(self, handle: IO[bytes]) -> None:
        close = getattr(handle, "close_handles", None)
        close() if close else handle.close()

    def _empty_error(self, whitespace: bool) -> UserError:
        if whitespace:
            return UserError(f"{self.path} holds only whitespace: a table needs a header row and "
                             "at least one data row (config.source.path).")
        size = "0 bytes" if self.compression is None else "nothing once decompressed"
        return UserError(f"{self.path} is empty ({size}): a table needs a header row and at "
                         "least one data row (config.source.path).")

    def _text(self, handle: IO[bytes]) -> _DecodedText:
        """The decoded text of `handle`, its first bytes checked (`check_text_start`)."""
        head = b""
        while len(head) < _SAMPLE:
            more = self._read_raw(handle, _SAMPLE - len(head))
            if not more:
                break
            head += more
        if not head:
            raise self._empty_error(whitespace=False)
        check_text_start(head, self.path, self.encoding)
        first = [head]

        def read(raw, size):
            return first.pop() if first else self._read_raw(raw, size)

        return _DecodedText(handle, self.path, self.encoding, self.errors, read)

    def columns(self) -> list[str] | None:
        """The table's column names from its header or schema; None for JSONL, whose columns
        are the keys of all its rows (`batches` collects them in `seen_columns`)."""
        if self.format == "jsonl":
            return None
        if self.format == "parquet":
            return self._parquet_columns(self._parquet_file())
        handle = self._open_bytes()
        try:
            for _, frame in self._csv_frames(handle, _MIN_ROWS):
                return [str(c) for c in frame.columns]
        finally:
            self._close(handle)
        return []

    def batches(self, columns: Sequence[str], *, seen_columns: dict[str, None] | None = None
                ) -> Iterator[tuple[int, dict[str, list[Any]]]]:
        """(first row number, {column: its cells}) for batches of rows in order; a column the
        table lacks reads as None (JSONL rows without the key). `seen_columns` collects every
        column name met, in order.

        Nothing here refers to a batch once the next is asked for, so a caller that drops its
        own (`del cells` at the end of its loop) holds one batch's cells at a time, not two.
        """
        if self.format == "parquet":
            yield from self._parquet_batches(columns, seen_columns)
            return
        handle = self._open_bytes()
        try:
            if self.format == "jsonl":
                yield from self._jsonl_batches(handle, columns, seen_columns)
                return
            for start, frame in self._csv_frames(handle, None):
                names = [str(c) for c in frame.columns]
                if seen_columns is not None:
                    seen_columns.update(dict.fromkeys(names))
                cells = {c: (frame[c].tolist() if c in names else [None] * len(frame))
                         for c in columns}
                del frame
                yield start, cells
                del cells
        finally:
            self._close(handle)

    def _csv_frames(self, handle: IO[bytes], rows: int | None):
        import pandas as pd

        text = self._text(handle)
        try:
            # Every cell as a string, empty cells as "" (not NaN), so ids like "007" survive.
            reader = pd.read_csv(text, sep="," if self.format == "csv" else "\t", dtype=str,
                                 keep_default_na=False, na_filter=False, chunksize=_MIN_ROWS)
            start, size = 0, rows or _MIN_ROWS
            with reader:
                while True:
                    try:
                        frame = reader.get_chunk(size)
                    except StopIteration:
                        return
                    yield start, frame
                    start += len(frame)
                    if rows is None:
                        size = _next_batch_rows(frame, size)
                    del frame
        except pd.errors.EmptyDataError:
            raise self._empty_error(whitespace=True) from None
        except pd.errors.ParserError as e:
            raise UserError(f"{self.path}: not a well-formed {self.format.upper()} file: {e}"
                            ) from None

    def _jsonl_batches(self, handle, columns, seen_columns):
        text = self._text(handle)
        batch: dict[str, list[Any]] = {c: [] for c in columns}
        start = rows = chars = 0
        whitespace = True
        for lineno, line in enumerate(_split_lines(text), 1):
            if not line.strip():
                continue
            whitespace = False
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{self.path}: line {lineno} is not valid JSON: {e.msg}."
                                ) from None
            if not isinstance(row, dict):
                raise UserError(f"{self.path}: line {lineno} is a JSON {type(row).__name__}, "
                                "expected an object with one key per column.")
            if seen_columns is not None:
                seen_columns.update(dict.fromkeys(map(str, row)))
            for c in columns:
                batch[c].append(row.get(c))
            rows += 1
            chars += len(line)
            if rows >= _MAX_ROWS or chars >= _BATCH_CHARS:
                yield start, batch
                batch = {c: [] for c in columns}
                start, rows, chars = start + rows, 0, 0
        if whitespace:
            raise self._empty_error(whitespace=True)
        if rows:
            yield start, batch

    def _parquet_file(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._check_unchanged()
        if self.compression is not None and self._spooled is None:
            handle = self._open_bytes()
            spool = tempfile.TemporaryFile()
            try:
                while chunk := self._read_raw(handle, _READ_BYTES):
                    spool.write(chunk)
            finally:
                self._close(handle)
            if not spool.tell():
                raise self._empty_error(whitespace=False)
            self._spooled = spool
        if self.compression is None and self.path.stat().st_size == 0:
            raise self._empty_error(whitespace=False)
        source = self._spooled if self._spooled is not None else str(self.path)
        if self._spooled is not None:
            self._spooled.seek(0)
        try:
            return pq.ParquetFile(source)
        except (pa.ArrowInvalid, OSError) as e:
            raise UserError(f"{self.path}: not a readable Parquet file ({e}).") from None

    @staticmethod
    def _parquet_columns(file) -> list[str]:
        """The columns `pandas.read_parquet` gives: the schema's, less a stored pandas index."""
        schema = file.schema_arrow
        meta = json.loads((schema.metadata or {}).get(b"pandas", b"{}") or b"{}")
        index = {c for c in meta.get("index_columns", ()) if isinstance(c, str)}
        return [name for name in schema.names if name not in index]

    def _integers_with_gaps(self, file, columns: Sequence[str]) -> set[str]:
        """The integer columns among `columns` with a missing value anywhere in the file:
        pandas reads them as floats (3 -> 3.0), in every batch alike."""
        import pyarrow as pa

        schema = file.schema_arrow
        integers = [c for c in columns
                    if c in schema.names and pa.types.is_integer(schema.field(c).type)]
        found = set()
        for c in integers:
            index = file.schema_arrow.get_field_index(c)
            stats = [file.metadata.row_group(g).column(index).statistics
                     for g in range(file.metadata.num_row_groups)]
            if all(s is not None and s.has_null_count for s in stats):
                if sum(s.null_count for s in stats):
                    found.add(c)
            elif any(b.column(0).null_count for b in file.iter_batches(columns=[c])):
                found.add(c)
        return found

    def _parquet_batches(self, columns, seen_columns):
        file = self._parquet_file()
        names = self._parquet_columns(file)
        if seen_columns is not None:
            seen_columns.update(dict.fromkeys(names))
        wanted = [c for c in columns if c in names]
        gaps = self._integers_with_gaps(file, wanted)
        meta = file.metadata
        row_bytes = (sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
                     / max(1, meta.num_rows))
        size = int(min(_MAX_ROWS, max(_MIN_ROWS, _BATCH_CHARS // max(1.0, row_bytes))))
        start = 0
        for batch in file.iter_batches(batch_size=size, columns=wanted, use_pandas_metadata=False):
            self._check_unchanged()
            frame = batch.to_pandas()
            n = batch.num_rows
            cells = {}
            for c in columns:
                if c not in wanted:
                    cells[c] = [None] * n
                else:
                    cells[c] = (frame[c].astype("float64") if c in gaps else frame[c]).tolist()
            del batch, frame
            yield start, cells
            del cells
            start += n


def _next_batch_rows(frame, rows: int) -> int:
    """Rows for the next batch, from the characters per row of this one: about _BATCH_CHARS."""
    if not len(frame):
        return rows
    chars = sum(int(frame[c].str.len().sum()) for c in frame.columns) / len(frame)
    return int(min(_MAX_ROWS, max(_MIN_ROWS, _BATCH_CHARS // max(1.0, chars))))


def _split_lines(text: io.TextIOBase) -> Iterator[str]:
    """The lines of `text` as `str.splitlines` splits the whole, read a block at a time."""
    rest = ""
    while block := text.read(_READ_BYTES):
        lines = (rest + block).splitlines(keepends=True)
        # The last line may go on in the next block (or end in a "\r" whose "\n" is to come).
        rest = lines.pop() if lines else ""
        yield from ((line.splitlines() or [""])[0] for line in lines)
    yield from rest.splitlines()
