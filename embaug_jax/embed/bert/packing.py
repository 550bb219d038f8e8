"""How `TextEmbedder` lays texts out for its compiled programs: length buckets, batches of
rows, packing several short texts into a row, and each batch's token stream.

- Rows: texts longer than `max_length` tokens are truncated. Row lengths are bucketed (8, 12,
  16, 24, 32, 48, ... up to `max_length`) and each bucket has a number of rows per batch
  (`batch_size` up to 64 tokens, proportionally fewer beyond, so a batch holds about
  `batch_size` x 64 tokens); the rows left over from full batches run as power-of-two batches,
  and a batch is padded only to the next power of two of rows, so a few compiled programs per
  bucket serve any stream of texts.
- Token stream: only attention runs on those padded rows. Everything else (the embeddings and
  each layer's dense products, GELU and LayerNorms) runs on the batch's real tokens one after
  another, each device's stream padded to the next 1/32 of its rows' slots; each layer gathers
  q, k and v into the rows and the attention's output back (`bert.model.BertModel`). On long
  texts that skips most of the rows' padding (512 README paragraphs of 50-256 tokens: 8% -> 1%);
  MiniLM embedded them 5-9% faster on the 2-core test CPU, for about 0.25 s more compile time
  per program (benchmarks/README.md, "text"). The devices share a batch's rows so that their
  token counts are even.
- Packing (`pack=True`; the embedder turns it off for "max" pooling): short texts may share a
  row of up to 32, 64 or 128 tokens, one after another, each with its own [CLS] ... [SEP],
  positions from 0 and a block-diagonal attention mask, and are pooled separately. A text's
  vector is the one it gets alone, to float32 rounding (tests compare with Hugging Face's to
  1e-4). Each text, longest first, goes to the row it fills best. Packing saves the row padding
  of every text but a row's last (which costs attention, not the dense layers: see the token
  stream) and costs attention over longer rows; each chunk of texts is packed only as far as an
  estimate of the compute (`BatchPlanner.plan_cost`) says it pays.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
from typing import Sequence

import numpy as np

_MIN_BUCKET = 8
# Short texts may be packed into rows of up to one of these many tokens, at most
# _MAX_TEXTS_PER_ROW per row: a long row costs more attention per token than a short padded
# one (its scores grow with the row length) and saves the padding of every text but the
# row's last; `BatchPlanner.plan` picks whichever costs least.
_PACK_LENGTHS = (32, 64, 128)
_MAX_TEXTS_PER_ROW = 16
# Each device's token stream is padded to a multiple of this fraction of its rows' slots, but
# of at least _STREAM_STEP_MIN tokens (a small batch's stream is its rows' slots, one shape): a
# long-text batch's dense layers then run on about 1% padding instead of the rows' 5-8%, for
# a few more compiled shapes per length bucket (benchmarks/README.md, "text").
_STREAM_STEPS = 32
_STREAM_STEP_MIN = 64
# Batches hold about batch_size * _ROW_TOKENS tokens (see BatchPlanner.rows_per_batch).
_ROW_TOKENS = 64


def length_buckets(max_length: int) -> tuple[int, ...]:
    """Padded row lengths: 8, 12, 16, 24, 32, 48, 64 (powers of two and 1.5x between), then
    eighth steps, 72, 80, ..., 128, 144, 160, ...; capped by and ending at max_length.

    The 1.5x steps and the short first buckets cut padding for a few more compiled shapes; from
    64 tokens on, eighth steps cut the padding of long texts (README paragraphs of 87 tokens
    on average: 0.10 padded tokens per real token with quarter steps), for twice the compiled
    shapes (benchmarks/README.md, sections "bert" and "text").
    """
    buckets = []
    n = _MIN_BUCKET
    while n < max_length:
        buckets.append(n)
        if n < 64:
            n = n * 3 // 2 if n & (n - 1) == 0 else n * 4 // 3
        else:
            n += (1 << (n.bit_length() - 1)) // 8
    buckets.append(max_length)
    return tuple(buckets)


@dataclasses.dataclass(frozen=True)
class BatchPlanner:
    """The batches, rows and token streams of one embedder's settings.

    Attributes:
        max_length: the longest row, in tokens (the truncation length).
        batch_size: rows of a batch of short rows, a multiple of `num_devices`.
        num_devices: devices a batch's rows are shared out between.
        hidden_size: the model's width (the cost estimate counts in its multiply-adds).
        pad_token_id: the token id of stream padding.
        pack: whether short texts may share a row.
    """

    max_length: int
    batch_size: int
    num_devices: int
    hidden_size: int
    pad_token_id: int = 0
    pack: bool = True

    @functools.cached_property
    def buckets(self) -> tuple[int, ...]:
        """The padded row lengths, `length_buckets(max_length)`."""
        return length_buckets(self.max_length)

    def bucket(self, tokens: int) -> int:
        """The padded length of a row of `tokens` tokens."""
        return next(b for b in self.buckets if b >= tokens)

    def slots(self, length: int) -> int:
        """How many texts a row of `length` tokens may hold (each text has >= 2 tokens)."""
        return max(1, min(length // 2, _MAX_TEXTS_PER_ROW)) if self.pack else 1

    def rows_per_batch(self, length: int) -> int:
        """Rows of a batch of `length`-token rows: `batch_size` up to _ROW_TOKENS tokens, fewer
        beyond, so a batch holds about batch_size * _ROW_TOKENS tokens whatever its length.

        Long rows in full-size batches make XLA's per-call buffers (attention scores alone:
        rows x heads x length^2 floats) so large that the allocator maps fresh pages for them on
        every call: page faults and system time instead of work.
        """
        n_dev = self.num_devices
        rows = max(1, min(self.batch_size, self.batch_size * _ROW_TOKENS // length))
        return -(-rows // n_dev) * n_dev

    def padded_rows(self, length: int, rows: int) -> int:
        """Rows a batch of `rows` rows of `length` tokens is padded to: the next power of two
        (at least the device count, a multiple of it), at most `rows_per_batch(length)`.

        A short batch (the last of a chunk, or a small call) then pays for at most twice its
        rows instead of a full batch, for at most log2(batch_size) more compiled shapes per
        bucket (benchmarks/README.md, section "text").
        """
        n_dev = self.num_devices
        full = self.rows_per_batch(length)
        padded = max(n_dev, 1 << max(0, int(rows) - 1).bit_length())
        return min(full, -(-padded // n_dev) * n_dev)

    def plan(self, lengths: Sequence[int]) -> list[list[list[int]]]:
        """The batches `TextEmbedder.embed` runs for texts of these token lengths: the cheapest (by
        `plan_cost`) of one text per row and packing into rows of each of _PACK_LENGTHS."""
        plans = [self.plan_batches(lengths, pack_length=0)]
        if self.pack:
            plans += [self.plan_batches(lengths, pack_length=n) for n in _PACK_LENGTHS
                      if n <= self.max_length]
        return min(plans, key=lambda batches: self.plan_cost(batches, lengths))  # first if tied

    def plan_cost(self, batches: list[list[list[int]]], lengths: Sequence[int]) -> float:
        """Estimated time of `batches`: per padded row slot, the dense layers (12 hidden^2
        multiply-adds) plus attention over the row, in units of hidden multiply-adds. Attention
        was timed on MiniLM (rows of 64 and 256 tokens, with and without it): about
        2 x hidden (its layout changes and masking) + 4 x length (its products and softmax).

        The dense layers run on the token stream, not on the padded rows, so this overcharges
        padding, and packing wins more often than the compute alone would say. That is kept
        on purpose: packed plans make fewer, fuller batches and fewer programs to compile. The
        demo's extraction (10,000 short texts) took 32.0 s this way and 40.4 s with the
        dense layers charged per real token, which ran 4,096 glosses 4.5% faster once
        compiled (benchmarks/README.md, "text", session 5)."""
        hidden = self.hidden_size
        cost = 0.0
        for batch in batches:
            length = self.bucket(max(sum(lengths[i] for i in row) for row in batch))
            cost += self.padded_rows(length, len(batch)) * length * (14 * hidden + 4 * length)
        return cost

    def plan_batches(self, lengths: Sequence[int], *, pack_length: int = 0
                     ) -> list[list[list[int]]]:
        """Groups texts of the given token lengths into batches of rows of texts.

        Texts are packed, longest first and each into the row it fills best, into rows of up
        to `pack_length` tokens and `slots` texts (a longer text gets a row of its own); with
        `pack_length=0` each text is a row. Rows, fullest first, fill batches of
        `rows_per_batch(bucket)` rows; the rows left over run in power-of-two batches.

        Returns:
            batches, each a list of rows, each a list of indices into `lengths`.
        """
        lengths = np.asarray(lengths, np.int64)
        capacity = min(int(pack_length), self.max_length)
        most = self.slots(capacity) if capacity else 1
        # Best fit, longest first: each text goes to the open row it leaves least room in.
        # Next fit (shortest first, a new row when one is full) padded WordNet glosses in rows
        # of 64 with 0.23 tokens per real token; best fit with 0.01 (benchmarks/README.md).
        rows: list[list[int]] = []
        fills: list[int] = []
        room: list[tuple[int, int]] = []  # (free tokens, row) of the rows that take more texts
        for i in np.argsort(-lengths, kind="stable").tolist():
            n = int(lengths[i])
            at = bisect.bisect_left(room, (n, -1)) if n <= capacity else len(room)
            if at < len(room):
                free, r = room.pop(at)
                rows[r].append(i)
                fills[r] += n
            else:
                free, r = capacity, len(rows)
                rows.append([i])
                fills.append(n)
            if free - n >= 2 and len(rows[r]) < most:  # a text has at least [CLS] and [SEP]
                bisect.insort(room, (free - n, r))
        # Fullest rows first: each batch takes as many rows as its longest row's bucket allows,
        # so at a bucket boundary shorter rows pad up rather than a batch running short of
        # rows. The rows left at the end run as power-of-two batches instead of one batch
        # padded up to the next power of two: 40 rows run as 32 + 8, not as 64.
        order = np.argsort(fills, kind="stable")[::-1]
        batches, start = [], 0
        n_dev = self.num_devices
        while start < len(order):
            limit = self.rows_per_batch(self.bucket(fills[order[start]]))
            left = len(order) - start
            take = limit if left >= limit else max(1 << (left.bit_length() - 1), min(left, n_dev))
            batches.append([rows[i] for i in order[start:start + take]])
            start += take
        return batches

    def pack_batch(self, ids: list[list[int]], rows: list[list[int]]):
        """The arrays `TextEmbedder.forward` takes for `rows` (lists of indices into `ids`), and where each
        text's vector lands: the flat index into the [rows, slots] output, in the order the
        rows list the texts.

        The rows are padded to their bucket and to `padded_rows` rows, and shared out between
        the devices, each a block of rows: the fullest row first, each to the device with the
        fewest tokens so far. Each device's stream holds its rows' tokens, padded to a length
        common to the devices, rounded up to a 1/_STREAM_STEPS step of a device's row slots
        (at least _STREAM_STEP_MIN tokens, at most all the slots).
        """
        n_dev = self.num_devices
        fills = [sum(len(ids[i]) for i in row) for row in rows]
        length = self.bucket(max(fills))
        per_device = self.padded_rows(length, len(rows)) // n_dev
        placed: list[list[int]] = [[] for _ in range(n_dev)]
        totals = [0] * n_dev
        for r in sorted(range(len(rows)), key=lambda r: -fills[r]):
            d = min((d for d in range(n_dev) if len(placed[d]) < per_device),
                    key=totals.__getitem__)
            placed[d].append(r)
            totals[d] += fills[r]
        slots = per_device * length
        step = min(slots, max(_STREAM_STEP_MIN, slots // _STREAM_STEPS))
        stream = min(slots, -(-max(max(totals), 1) // step) * step)

        shape = (n_dev * per_device, length)
        segment_ids = np.zeros(shape, np.int32)
        row_index = np.zeros(shape, np.int32)
        input_ids = np.full(n_dev * stream, self.pad_token_id, np.int32)
        position_ids = np.zeros(n_dev * stream, np.int32)
        tokens = np.zeros(n_dev * stream, np.int32)
        row_at = np.zeros(len(rows), np.int64)
        for d, device_rows in enumerate(placed):
            at = 0  # within the device's stream
            for k, r in enumerate(device_rows):
                row_at[r] = d * per_device + k
                column = 0
                for j, i in enumerate(rows[r]):
                    n = len(ids[i])
                    where = slice(d * stream + at, d * stream + at + n)
                    input_ids[where] = ids[i]
                    position_ids[where] = np.arange(n)
                    tokens[where] = k * length + column + np.arange(n)
                    segment_ids[row_at[r], column:column + n] = j + 1
                    row_index[row_at[r], column:column + n] = at + np.arange(n)
                    column += n
                    at += n
        slot_row = np.concatenate([np.full(len(row), row_at[r]) for r, row in enumerate(rows)])
        slot = np.concatenate([np.arange(len(row)) for row in rows])
        return (input_ids, position_ids, segment_ids, row_index, tokens), (slot_row, slot)
