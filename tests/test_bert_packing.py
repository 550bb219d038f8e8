"""Tests for embaug_jax.embed.bert.packing: batch plans, their cost estimate, packed rows and
each device's token stream (no model needed: the planner is plain Python).

Whether packed texts still get their own vectors is checked against Hugging Face in
test_bert.py."""

import numpy as np

from embaug_jax.embed.bert import packing
from embaug_jax.embed.bert.packing import BatchPlanner


def make_planner(**settings) -> BatchPlanner:
    """The planner of an all-MiniLM-L6-v2 embedder (hidden size 384) with batches of 64 rows,
    on one device unless `settings` say otherwise."""
    return BatchPlanner(**{"max_length": 512, "batch_size": 64, "num_devices": 1,
                           "hidden_size": 384, "pad_token_id": 0, **settings})


def test_batches_share_their_tokens_evenly_between_devices():
    four = make_planner(num_devices=4, max_length=256)
    rng = np.random.default_rng(2)
    ids = [[101, *rng.integers(1000, 2000, n).tolist(), 102] for n in rng.integers(20, 200, 13)]
    (stream_ids, positions, segments, row_index, tokens), (at_row, at_slot) = four.pack_batch(
        ids, [[i] for i in range(13)])
    length = four.bucket(max(map(len, ids)))
    assert segments.shape == row_index.shape == (16, length)  # 13 rows padded to 16
    assert (at_slot == 0).all() and sorted(at_row) == sorted(set(at_row))
    stream = len(stream_ids) // 4
    assert len(stream_ids) == len(positions) == len(tokens) == 4 * stream
    for text, row in zip(ids, at_row):
        device, k = divmod(int(row), 4)
        n = len(text)
        assert (segments[row, :n] == 1).all() and (segments[row, n:] == 0).all()
        # Each row slot's stream token is the text's token at its position, and maps back.
        where = device * stream + row_index[row, :n]
        assert stream_ids[where].tolist() == text
        assert (positions[where] == np.arange(n)).all()
        assert (tokens[where] == k * length + np.arange(n)).all()
    totals = [(segments[4 * d:4 * d + 4] > 0).sum() for d in range(4)]
    for d in range(4):  # every stream token at most once, the real ones first
        real = row_index[4 * d:4 * d + 4][segments[4 * d:4 * d + 4] > 0]
        assert sorted(real.tolist()) == list(range(totals[d]))
    # Fullest row to the emptiest device: the devices' tokens differ by at most one row's.
    assert max(totals) - min(totals) <= max(map(len, ids))
    # The stream is rounded up by less than a step (1/32 of a device's slots, >= 64 tokens),
    # so the dense layers skip most of the rows' padding.
    step = max(packing._STREAM_STEP_MIN, 4 * length // packing._STREAM_STEPS)
    assert max(totals) <= stream < max(totals) + step and stream < 4 * length


def test_short_batches_pad_to_a_power_of_two_of_rows():
    planner = make_planner()
    assert [planner.padded_rows(64, n) for n in (1, 2, 3, 5, 17, 33, 64)] == [1, 2, 4, 8, 32, 64,
                                                                             64]
    assert planner.padded_rows(256, 9) == 16 and planner.padded_rows(256, 15) == 16
    (_, _, segments, _, _), _ = planner.pack_batch([[101, 7, 102]] * 3, [[0], [1], [2]])
    assert segments.shape == (4, 8) and (segments.max(axis=1) == 0).sum() == 1  # not 61
    # The plan runs rows left over from full batches as power-of-two batches: no padding.
    assert [len(b) for b in planner.plan_batches([30] * 40)] == [32, 8]
    assert [len(b) for b in planner.plan_batches([30] * 140)] == [64, 64, 8, 4]
    two = make_planner(num_devices=2)  # a multiple of the device count
    assert [two.padded_rows(64, n) for n in (1, 2, 3, 5)] == [2, 2, 4, 8]


def test_long_rows_come_in_smaller_batches():
    planner = make_planner()
    assert [planner.rows_per_batch(n) for n in (8, 64, 96, 128, 256, 512)] == [64, 64, 42, 32,
                                                                              16, 8]
    # Batches take rows shortest first and never exceed their bucket's row count.
    lengths = list(range(2, 300, 3)) * 5
    batches = planner.plan_batches(lengths, pack_length=128)
    for batch in batches:
        fill = max(sum(lengths[i] for i in row) for row in batch)
        assert len(batch) <= planner.rows_per_batch(planner.bucket(fill))
        # A batch short of its bucket's rows is a power of two: no padding rows.
        assert (len(batch) == planner.rows_per_batch(planner.bucket(fill))
                or len(batch) & (len(batch) - 1) == 0 or len(batch) < planner.num_devices)
    assert sorted(i for b in batches for row in b for i in row) == list(range(len(lengths)))
    assert planner.slots(128) == 16 and planner.slots(8) == 4
    # Packing only where it is estimated cheaper than padding: many short texts are packed, and
    # so are five (one row of 32 tokens against five rows of 8); two texts of 62 tokens are not
    # (attention over a 128-token row costs more than two rows of 64).
    many, few, pair = [10] * 64 * 30, [6, 7, 6, 7, 6], [62, 62]
    assert max(len(row) for b in planner.plan(many) for row in b) > 1
    assert [len(b) for b in planner.plan(few)] == [1]
    assert planner.plan(pair) == planner.plan_batches(pair)
    for lengths in (many, few, pair):
        costs = [planner.plan_cost(planner.plan_batches(lengths, pack_length=n), lengths)
                 for n in (0, 32, 64, 128)]
        assert planner.plan_cost(planner.plan(lengths), lengths) == min(costs)
