"""How `TextEmbedder` lays texts out for its compiled programs: rows, batches of a fixed token
budget, several short texts packed into a row, and each batch's token stream.

- Programs: a batch is one of two shapes per row length. A full batch streams
  `token_budget` tokens (`batch_size` x 64) through the dense layers, shared out between the
  devices; a small batch an eighth of that, for the last texts of a call (packed again into
  rows of at least 128 tokens, so that they share one shape). Rows per batch follow from the
  stream (about stream / row length). A row length is a length bucket (8, 12, 16, 24, 32, 48,
  64, 72, ..., `max_length`) for a row of one text, or a packing capacity (64, 128, 256, ...,
  `max_length`) for a row of several. So an embedder compiles at most `max_programs`
  programs, 2 x (buckets + capacities), whatever the mix of lengths, and short texts two: the
  demo's 10,000 WordNet texts compile 2, where batches of power-of-two row counts per length
  bucket compiled 18 (benchmarks/README.md, "Compiles").
- Token stream: only attention runs on padded rows. Everything else (the embeddings and each
  layer's dense products, GELU and LayerNorms) runs on the batch's tokens one text after
  another, each device's stream padded to the batch's fixed length; each layer gathers q, k
  and v into the rows and the attention's output back (`bert.model.BertModel`). Batches are
  filled until their stream or their rows are full, so the dense layers run on little padding
  even when the rows pad a lot (README paragraphs of 50-256 tokens: rows padded to eighth-step
  buckets).
- Packing (`pack=True`; the embedder turns it off for "max" pooling): texts share rows of a
  packing capacity, one after another, each with its own [CLS] ... [SEP], positions from 0
  and a block-diagonal attention mask, and are pooled separately. A text's vector is the one it
  gets alone, to float32 rounding (tests compare with Hugging Face's to 1e-4). Each text,
  longest first, goes to the open row it fills best, or opens a row of the smallest capacity
  that holds it. Packing saves rows, so attention runs on fewer padded slots, and keeps short
  texts to one row length; one text per row in its length bucket pads attention less for long
  texts. Each chunk of texts takes the plan `BatchPlanner.plan_cost` estimates cheaper.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
from typing import Callable, Iterator, Sequence

import numpy as np

_MIN_BUCKET = 8
# Rows of several texts hold up to one of `pack_capacities` tokens (64, 128, ...) and at most
# _MAX_TEXTS_PER_ROW texts.
_MIN_CAPACITY = 64
_MAX_TEXTS_PER_ROW = 16
# A batch streams about batch_size * _ROW_TOKENS tokens; a small batch 1/_SMALL of that, in
# packed rows of at least _SMALL_CAPACITY tokens.
_ROW_TOKENS = 64
_SMALL = 8
_SMALL_CAPACITY = 128
# Rows per batch, over stream / row length: one-text rows are shorter than their bucket (up to
# an eighth step from 64 tokens, a third below), and so are the rows of a small batch (the last
# texts of a call, in rows of 128 tokens of at most 16 texts), so those batches take more rows
# than their stream fills exactly; the packed rows of a full batch are nearly full.
_ROW_SLACK, _FULL_ROW_SLACK = 1.25, 1.0
# The cost estimate's units: multiply-adds of one hidden vector. The dense layers take about
# 12 per token (q, k, v, output: 4 x hidden^2; feed-forward 8 x hidden^2); attention about
# 2 x hidden + 4 x length per row slot (its layout changes and masking, then its products and
# softmax; timed on MiniLM, benchmarks/README.md, "text").
_DENSE, _ATTENTION, _ATTENTION_PER_TOKEN = 12, 2, 4


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


def pack_capacities(max_length: int) -> tuple[int, ...]:
    """Lengths of rows that hold several texts: 64, 128, 256, ... below max_length, then
    max_length (only max_length when it is 64 or less)."""
    capacities = []
    n = _MIN_CAPACITY
    while n < max_length:
        capacities.append(n)
        n *= 2
    capacities.append(max_length)
    return tuple(capacities)


@dataclasses.dataclass(frozen=True)
class Batch:
    """One batch of rows and the program that runs it.

    Attributes:
        rows: the rows, each a tuple of text indices (one text, or several packed).
        length: the row length, in tokens: a length bucket, or a packing capacity.
        packed: whether the rows hold several texts (a packing capacity's shape).
        small: whether it is a small batch (the tail of a call).
        placed: for each device, the indices into `rows` of its rows, in order.
    """

    rows: tuple[tuple[int, ...], ...]
    length: int
    packed: bool
    small: bool
    placed: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        return iter(self.rows)

    def __getitem__(self, index: int) -> tuple[int, ...]:
        return self.rows[index]


@dataclasses.dataclass(frozen=True)
class BatchPlanner:
    """The batches, rows and token streams of one embedder's settings.

    Attributes:
        max_length: the longest row, in tokens (the truncation length).
        batch_size: a full batch streams batch_size x 64 tokens (`token_budget`).
        num_devices: devices a batch's rows are shared out between.
        hidden_size: the model's width (the cost estimate counts in its multiply-adds).
        pad_token_id: the token id of stream padding.
        pack: whether short texts may share a row.
        skips_unused_rows: whether attention over rows of a given length skips a batch's unused
            rows (`bert.model.score_block_rows`: it runs in blocks, and skips empty ones);
            where it does not, a batch's attention costs every row of its shape.
    """

    max_length: int
    batch_size: int
    num_devices: int
    hidden_size: int
    pad_token_id: int = 0
    pack: bool = True
    skips_unused_rows: Callable[[int], bool] = lambda length: False

    @functools.cached_property
    def buckets(self) -> tuple[int, ...]:
        """The row lengths of one-text rows, `length_buckets(max_length)`."""
        return length_buckets(self.max_length)

    @functools.cached_property
    def capacities(self) -> tuple[int, ...]:
        """The row lengths of packed rows, `pack_capacities(max_length)`."""
        return pack_capacities(self.max_length)

    def bucket(self, tokens: int) -> int:
        """The padded length of a row of one text of `tokens` tokens."""
        return self.buckets[bisect.bisect_left(self.buckets, tokens)]

    def capacity(self, tokens: int) -> int:
        """The length of a packed row opened by a text of `tokens` tokens."""
        return self.capacities[bisect.bisect_left(self.capacities, tokens)]

    def slots(self, length: int) -> int:
        """How many texts a row of `length` tokens may hold (each text has >= 2 tokens)."""
        return max(1, min(length // 2, _MAX_TEXTS_PER_ROW)) if self.pack else 1

    @property
    def token_budget(self) -> int:
        """Tokens a full batch streams through the dense layers, all devices together."""
        return self.batch_size * _ROW_TOKENS

    @property
    def max_programs(self) -> int:
        """The most programs the plans can ask for: two shapes per row length."""
        return 2 * (len(self.buckets) + (len(self.capacities) if self.pack else 0))

    def shape(self, length: int, *, packed: bool, small: bool) -> tuple[int, int]:
        """(rows, stream tokens) of each device in a batch of `length`-token rows.

        The stream holds the device's share of `token_budget` (an eighth of it in a small
        batch), and at least one row's tokens.
        """
        share = -(-self.token_budget // self.num_devices)
        stream = max(-(-share // _SMALL) if small else share, length)
        slack = _FULL_ROW_SLACK if packed and not small else _ROW_SLACK
        rows = max(1, int(np.ceil(slack * stream / length)))
        # A multiple of 4, so that attention's blocks of rows on CPUs (a divisor of the rows,
        # `bert.model`) are not cut down to one or two rows by an odd count.
        return (rows if rows <= 4 else -(-rows // 4) * 4), stream

    def batch_cost(self, batch: Batch) -> float:
        """Estimated time of `batch`, in multiply-adds of a hidden vector: the dense layers on
        its whole stream, attention on the slots of its rows, or of all its shape's rows where
        attention does not skip unused ones (`skips_unused_rows`)."""
        per_device, stream = self.shape(batch.length, packed=batch.packed, small=batch.small)
        rows = (len(batch.rows) if self.skips_unused_rows(batch.length)
                else self.num_devices * per_device)
        attention = _ATTENTION * self.hidden_size + _ATTENTION_PER_TOKEN * batch.length
        return (self.num_devices * stream * _DENSE * self.hidden_size
                + rows * batch.length * attention)

    def plan_cost(self, batches: Sequence[Batch]) -> float:
        """Estimated time of `batches` (`batch_cost` summed)."""
        return sum(self.batch_cost(b) for b in batches)

    def plan(self, lengths: Sequence[int]) -> list[Batch]:
        """The batches `TextEmbedder.embed` runs for texts of these token lengths: one text per
        row, or (with `pack`) texts packed into rows, whichever `plan_cost` estimates cheaper
        (one text per row if tied)."""
        plans = [self.plan_batches(lengths, packed=False)]
        if self.pack:
            plans.append(self.plan_batches(lengths, packed=True))
        return min(plans, key=self.plan_cost)

    def plan_batches(self, lengths: Sequence[int], *, packed: bool = False) -> list[Batch]:
        """Groups texts of the given token lengths into batches of rows of texts.

        With `packed`, texts are packed, longest first and each into the open row it fills
        best, into rows of `capacities` (a text opens a row of the smallest capacity that
        holds it), at most `slots` texts a row; batches hold rows of one capacity, fullest
        first. Otherwise each text is a row, and batches take rows fullest first, each batch at
        the bucket of its first (longest) row. A batch takes rows until its stream or its rows
        are full (devices take rows in turn, each to the device with the fewest tokens).

        The rows left at the end of a capacity (or of all) run as small batches where that is
        estimated cheaper than one more full batch. Packed, their texts are packed again, into
        rows of at least `small_capacity` tokens: so the last texts of every call share one
        small shape (short texts need a full batch of rows of 64 and a small one of 128).
        """
        lengths = [int(n) for n in lengths]
        if not packed:
            rows = [(i,) for i in range(len(lengths))]
            return self._batches(rows, lengths, [self.bucket(n) for n in lengths], packed=False)
        rows, fills, widths = self._pack_rows(range(len(lengths)), lengths, self.capacity)
        batches = self._batches(rows, fills, widths, packed=True)
        tail = [i for b in batches if b.small for row in b for i in row]
        if tail:  # the small batches' texts, packed again into rows of one small shape
            rows, fills, widths = self._pack_rows(tail, lengths, self._small_capacity)
            small = self._batches(rows, fills, widths, packed=True, small=True)
            batches = [b for b in batches if not b.small] + small
        return batches

    @property
    def small_capacity(self) -> int:
        """The shortest row of a packed small batch: 128 tokens (or max_length if shorter)."""
        return self.capacity(min(_SMALL_CAPACITY, self.max_length))

    def _small_capacity(self, tokens: int) -> int:
        return max(self.small_capacity, self.capacity(tokens))

    def _batches(self, rows, fills, widths, *, packed: bool, small: bool = False
                 ) -> list[Batch]:
        """Batches of `rows` (with their tokens and row lengths), fullest first: full batches
        and, for the last rows of each row length (packed) or of all, small batches if
        cheaper; only small batches if `small`."""
        order = sorted(range(len(rows)), key=lambda r: (-widths[r], -fills[r], r))
        batches: list[Batch] = []
        start = 0
        while start < len(order):
            length = widths[order[start]]
            end = len(order)
            if packed:  # a batch holds rows of one capacity
                end = next((k for k in range(start, len(order)) if widths[order[k]] != length),
                           len(order))
            full, stop = ((None, None) if small else
                          self._fill(rows, fills, order, start, end, length, packed, small=False))
            if small or stop == end:  # the last rows: maybe cheaper as small batches
                smalls, at = [], start
                while at < end:
                    batch, at = self._fill(rows, fills, order, at, end,
                                           length if packed else widths[order[at]], packed,
                                           small=True)
                    smalls.append(batch)
                if small or self.plan_cost(smalls) < self.plan_cost([full]):
                    batches += smalls
                    start = end
                    continue
            batches.append(full)
            start = stop
        return batches

    def _pack_rows(self, texts: Sequence[int], lengths: Sequence[int],
                   capacity: Callable[[int], int]):
        """Best fit, longest first, of `texts` (indices into `lengths`) into rows whose
        capacity `capacity(tokens of the text that opens it)` gives: (rows, their tokens,
        their capacities)."""
        rows: list[list[int]] = []
        fills: list[int] = []
        widths: list[int] = []
        room: list[tuple[int, int]] = []  # (free tokens, row) of the rows that take more texts
        # Best fit padded WordNet glosses in rows of 64 with 0.01 tokens per real token; next
        # fit, shortest first, with 0.23 (benchmarks/README.md, "text").
        for i in sorted(texts, key=lambda i: (-lengths[i], i)):
            n = lengths[i]
            at = bisect.bisect_left(room, (n, -1))
            if at < len(room):
                free, r = room.pop(at)
                rows[r].append(i)
                fills[r] += n
            else:
                r = len(rows)
                free = capacity(n)
                rows.append([i])
                fills.append(n)
                widths.append(free)
            if free - n >= 2 and len(rows[r]) < self.slots(widths[r]):  # [CLS] and [SEP]
                bisect.insort(room, (free - n, r))
        return [tuple(r) for r in rows], fills, widths

    def _fill(self, rows, fills, order, start: int, end: int, length: int, packed: bool,
              small: bool) -> tuple[Batch, int]:
        """A batch of `length`-token rows taking `order[start:end]` until full; returns it and
        where the next batch starts."""
        per_device, stream = self.shape(length, packed=packed, small=small)
        n_dev = self.num_devices
        placed: list[list[int]] = [[] for _ in range(n_dev)]
        totals = [0] * n_dev
        taken: list[tuple[int, ...]] = []
        at = start
        while at < end:
            fill = fills[order[at]]
            free = [d for d in range(n_dev)
                    if len(placed[d]) < per_device and totals[d] + fill <= stream]
            if not free:
                break
            d = min(free, key=totals.__getitem__)
            placed[d].append(len(taken))
            totals[d] += fill
            taken.append(rows[order[at]])
            at += 1
        batch = Batch(rows=tuple(taken), length=length, packed=packed, small=small,
                      placed=tuple(map(tuple, placed)))
        return batch, at

    def pack_batch(self, ids: list[list[int]], batch: Batch):
        """The arrays `TextEmbedder.forward` takes for `batch` (rows of indices into `ids`), and
        where each text's vector lands: the flat index into the [rows, slots] output, in the
        order the rows list the texts.

        Each device takes a block of rows (`batch.placed`); its stream holds its rows' tokens
        one after another, padded to the batch shape's stream length.
        """
        n_dev = self.num_devices
        length = batch.length
        per_device, stream = self.shape(length, packed=batch.packed, small=batch.small)
        shape = (n_dev * per_device, length)
        segment_ids = np.zeros(shape, np.int32)
        row_index = np.zeros(shape, np.int32)
        input_ids = np.full(n_dev * stream, self.pad_token_id, np.int32)
        position_ids = np.zeros(n_dev * stream, np.int32)
        tokens = np.zeros(n_dev * stream, np.int32)
        row_at = np.zeros(len(batch.rows), np.int64)
        for d, device_rows in enumerate(batch.placed):
            at = 0  # within the device's stream
            for k, r in enumerate(device_rows):
                row_at[r] = d * per_device + k
                column = 0
                for j, i in enumerate(batch.rows[r]):
                    n = len(ids[i])
                    where = slice(d * stream + at, d * stream + at + n)
                    input_ids[where] = ids[i]
                    position_ids[where] = np.arange(n)
                    tokens[where] = k * length + column + np.arange(n)
                    segment_ids[row_at[r], column:column + n] = j + 1
                    row_index[row_at[r], column:column + n] = at + np.arange(n)
                    column += n
                    at += n
        slot_row = np.concatenate([np.full(len(row), row_at[r])
                                   for r, row in enumerate(batch.rows)])
        slot = np.concatenate([np.arange(len(row)) for row in batch.rows])
        return (input_ids, position_ids, segment_ids, row_index, tokens), (slot_row, slot)
