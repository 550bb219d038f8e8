"""Tests for embaug_jax.embed.bert.packing: batch plans, their shapes (a bounded number of
programs), their cost estimate, packed rows and each device's token stream (no model needed: the
planner is plain Python).

Whether packed texts still get their own vectors is checked against Hugging Face in
test_bert.py."""

import numpy as np
import pytest

from embaug_jax.embed.bert.packing import BatchPlanner


def make_planner(**settings) -> BatchPlanner:
    """The planner of an all-MiniLM-L6-v2 embedder (hidden size 384) with batches of 64 x 64
    tokens, on one device unless `settings` say otherwise."""
    return BatchPlanner(**{"max_length": 512, "batch_size": 64, "num_devices": 1,
                           "hidden_size": 384, "pad_token_id": 0, **settings})


def check_plan(planner: BatchPlanner, lengths, batches) -> None:
    """Every text in exactly one row; every batch within its shape on every device."""
    assert sorted(i for b in batches for row in b for i in row) == list(range(len(lengths)))
    for b in batches:
        rows, stream = planner.shape(b.length, packed=b.packed, small=b.small)
        assert len(b.placed) == planner.num_devices
        assert sorted(r for placed in b.placed for r in placed) == list(range(len(b)))
        for placed in b.placed:
            assert len(placed) <= rows
            assert sum(lengths[i] for r in placed for i in b.rows[r]) <= stream
        for row in b:
            assert sum(lengths[i] for i in row) <= b.length
            assert len(row) == 1 or (b.packed and len(row) <= planner.slots(b.length))
        if b.packed:
            assert b.length in planner.capacities
        else:
            assert b.length in planner.buckets


def test_batches_share_their_tokens_evenly_between_devices():
    four = make_planner(num_devices=4, max_length=256)
    rng = np.random.default_rng(2)
    ids = [[101, *rng.integers(1000, 2000, n).tolist(), 102] for n in rng.integers(20, 200, 13)]
    lengths = [len(t) for t in ids]
    batches = four.plan_batches(lengths)
    check_plan(four, lengths, batches)
    for batch in batches:
        check_stream(four, ids, batch)


def check_stream(planner: BatchPlanner, ids, batch) -> None:
    """`pack_batch`'s arrays for `batch`: each text's tokens in its device's stream, its row's
    slots mapping to them and back, the devices' tokens even."""
    n_dev = planner.num_devices
    (stream_ids, positions, segments, row_index, tokens), (at_row, at_slot) = planner.pack_batch(
        ids, batch)
    rows, stream = planner.shape(batch.length, packed=batch.packed, small=batch.small)
    assert segments.shape == row_index.shape == (n_dev * rows, batch.length)
    assert len(stream_ids) == len(positions) == len(tokens) == n_dev * stream
    assert (at_slot == 0).all() and sorted(at_row) == sorted(set(at_row))
    order = [i for row in batch for i in row]
    for text_index, row in zip(order, at_row):
        text = ids[text_index]
        device, k = divmod(int(row), rows)
        n = len(text)
        assert (segments[row, :n] == 1).all() and (segments[row, n:] == 0).all()
        # Each row slot's stream token is the text's token at its position, and maps back.
        where = device * stream + row_index[row, :n]
        assert stream_ids[where].tolist() == text
        assert (positions[where] == np.arange(n)).all()
        assert (tokens[where] == k * batch.length + np.arange(n)).all()
    totals = [(segments[rows * d:rows * (d + 1)] > 0).sum() for d in range(n_dev)]
    for d in range(n_dev):  # every stream token at most once, the real ones first
        real = row_index[rows * d:rows * (d + 1)][segments[rows * d:rows * (d + 1)] > 0]
        assert sorted(real.tolist()) == list(range(totals[d]))
    # Fullest row to the emptiest device: the devices' tokens differ by at most one row's
    # (or a device is full).
    if len(batch) >= n_dev:
        assert max(totals) - min(totals) <= max(len(ids[i]) for i in order)


def test_a_batch_streams_a_fixed_number_of_tokens_and_the_tail_runs_in_small_batches():
    planner = make_planner()
    assert planner.token_budget == 64 * 64
    assert planner.shape(32, packed=False, small=False) == (160, 4096)  # 1.25 x 4096 / 32 rows
    assert planner.shape(32, packed=False, small=True) == (20, 512)
    # 40 texts of 30 tokens, 1,200 tokens: three small batches of 512 tokens, not a batch of
    # 4,096.
    tail = planner.plan_batches([30] * 40)
    assert [len(b) for b in tail] == [17, 17, 6] and all(b.small for b in tail)
    # 4,200 tokens: one full batch (136 rows, 4,080 tokens), the 4 rows left in a small one.
    batches = planner.plan_batches([30] * 140)
    assert [(len(b), b.small) for b in batches] == [(136, False), (4, True)]
    (stream_ids, _, segments, _, _), _ = planner.pack_batch([[101, 7, 102]] * 3, planner.plan(
        [3, 3, 3])[0])
    assert segments.shape == (80, 8) and len(stream_ids) == 512  # not 640 rows, 4,096 tokens
    two = make_planner(num_devices=2)  # each device streams its share
    assert two.shape(64, packed=True, small=False) == (32, 2048)
    # A small batch's packed rows are 128 tokens, a quarter more than its stream fills.
    assert two.shape(128, packed=True, small=True) == (3, 256) and two.small_capacity == 128
    assert make_planner(max_length=100).small_capacity == 100
    # A stream holds at least one row, however many devices share the budget.
    assert make_planner(num_devices=16).shape(512, packed=False, small=True) == (2, 512)


def test_a_batch_costs_every_row_of_its_shape_where_attention_skips_no_rows():
    lengths = [30] * 40
    skipping = make_planner(skips_unused_rows=lambda length: True)
    batch = skipping.plan_batches(lengths)[-1]  # 6 rows of a small shape of 20
    rows, stream = skipping.shape(batch.length, packed=False, small=True)
    assert (len(batch), rows, stream) == (6, 20, 512)
    dense, attention = stream * 12 * 384, batch.length * (2 * 384 + 4 * batch.length)
    assert skipping.batch_cost(batch) == dense + 6 * attention
    assert make_planner().batch_cost(batch) == dense + 20 * attention


def test_long_rows_come_in_batches_of_fewer_rows():
    planner = make_planner()
    assert [planner.shape(n, packed=False, small=False)[0] for n in (8, 64, 96, 128, 256, 512)
            ] == [640, 80, 56, 40, 20, 12]
    assert [planner.shape(n, packed=True, small=False)[0] for n in planner.capacities
            ] == [64, 32, 16, 8]
    lengths = list(range(2, 300, 3)) * 5
    for packed in (False, True):
        batches = planner.plan_batches(lengths, packed=packed)
        check_plan(planner, lengths, batches)
        # Rows fullest first: a full batch's row length never grows along the plan (packed:
        # longest capacity first); small batches come last.
        full = [b.length for b in batches if not b.small]
        assert full == sorted(full, reverse=True)
        assert [b.small for b in batches] == sorted(b.small for b in batches)
    assert planner.slots(128) == 16 and planner.slots(8) == 4
    # Packing where it is estimated cheaper: many short texts are packed; two texts of 62
    # tokens are not (no row of 64 holds both, so packing saves nothing).
    many = np.random.default_rng(0).geometric(0.06, 2000).clip(3, 63).tolist()  # glosses
    pair = [62, 62]
    assert max(len(row) for b in planner.plan(many) for row in b) > 1
    assert planner.plan(pair) == planner.plan_batches(pair)
    for lengths in (many, pair, [6, 7, 6, 7, 6]):
        costs = [planner.plan_cost(planner.plan_batches(lengths, packed=p)) for p in (0, 1)]
        assert planner.plan_cost(planner.plan(lengths)) == min(costs)


@pytest.mark.parametrize("num_devices", [1, 2, 4])
def test_plans_use_at_most_two_shapes_per_row_length_whatever_the_lengths(num_devices):
    planner = make_planner(num_devices=num_devices, max_length=256)
    rng = np.random.default_rng(num_devices)
    shapes = set()
    mixes = [rng.integers(2, 20, 700), rng.integers(2, 257, 300), rng.integers(50, 257, 100),
             rng.geometric(0.05, 2000).clip(2, 256), np.full(33, 256), np.full(1, 2),
             np.concatenate([rng.integers(2, 12, 500), rng.integers(200, 257, 20)])]
    for lengths in mixes:
        lengths = lengths.tolist()
        batches = planner.plan(lengths)
        check_plan(planner, lengths, batches)
        shapes |= {(b.length, b.packed, b.small) for b in batches}
        # The rows and streams are fixed by the shape: the arrays of every batch have them.
        ids = [[1] * n for n in lengths]
        for b in batches[:3]:
            arrays, _ = planner.pack_batch(ids, b)
            rows, stream = planner.shape(b.length, packed=b.packed, small=b.small)
            assert arrays[2].shape == (num_devices * rows, b.length)
            assert arrays[0].shape == (num_devices * stream,)
    assert len(shapes) <= planner.max_programs == 2 * (len(planner.buckets)
                                                       + len(planner.capacities))
    # Short texts, in calls of 1,000 (an extraction's shards): two shapes in all, full
    # batches of rows of 64 tokens and small batches of 128.
    short = set()
    for seed in range(5):
        lengths = np.random.default_rng(seed).geometric(0.06, 1000).clip(3, 94).tolist()
        short |= {(b.length, b.packed, b.small) for b in planner.plan(lengths)}
    assert short == {(64, True, False), (128, True, True)}, short
    assert make_planner(pack=False).max_programs == 2 * len(make_planner().buckets)
