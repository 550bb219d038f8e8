"""Tests for embaug_jax.train.cadence: derived knobs, today's schedules, no traps."""

from pathlib import Path

import numpy as np
import pytest

from embaug_jax import configlib
from embaug_jax.run import train as run_train
from embaug_jax.train.cadence import Cadence

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SHIPPED = ["default", "table1", "softness", "ablation"]


def _train_config(name, arg=""):
    c = configlib.get_config(f"{CONFIGS / name}.py:{arg}")
    return c.train if name == "demo" else c


def _schedule(cadence):
    return (cadence.num_epochs, cadence.eval_every, cadence.chunk_epochs,
            cadence.checkpoint_every)


@pytest.mark.parametrize("name, arg, schedule", [
    *((name, "", (576, 16, 16, 48)) for name in SHIPPED),
    *((name, "smoke", (16, 4, 8, 8)) for name in SHIPPED),
    ("demo", "", (96, 8, 8, 24)),
    ("demo", "smoke", (16, 4, 8, 8)),
])
def test_shipped_configs_keep_their_schedule(name, arg, schedule):
    cadence = Cadence.from_config(_train_config(name, arg))
    assert _schedule(cadence) == schedule
    np.testing.assert_array_equal(cadence.eval_epochs,
                                  np.arange(schedule[1], schedule[0] + 1, schedule[1]))


@pytest.mark.parametrize("name, arg", [*((n, "") for n in SHIPPED), ("demo", ""),
                                       ("default", "smoke"), ("demo", "smoke")])
def test_any_num_epochs_works_with_every_shipped_config(name, arg):
    for n in (1, 2, 3, 7, 40, 100, 577, 1000):
        c = _train_config(name, arg)
        c.num_epochs = n
        run_train.validate_config(c)
        cadence = Cadence.from_config(c)
        epochs = cadence.eval_epochs
        assert epochs[-1] == n and np.all(np.diff(epochs) > 0) and epochs[0] >= 1, (n, epochs)
        assert np.all(np.diff(epochs)[:-1] == cadence.eval_every)
        assert cadence.chunk_epochs % cadence.eval_every == 0
        assert cadence.checkpoint_every % cadence.chunk_epochs == 0
        assert cadence.checkpoints_at(n) and cadence.chunk_end(n - 1) == n


def test_derived_knobs_follow_num_epochs_and_fit_the_set_ones():
    c = _train_config("table1")
    c.num_epochs = 40
    assert _schedule(Cadence.from_config(c)) == (40, 4, 4, 12)
    np.testing.assert_array_equal(Cadence.from_config(c).eval_epochs, np.arange(4, 41, 4))
    c.num_epochs = 20
    c.eval_every = 8  # a shorter last period
    np.testing.assert_array_equal(Cadence.from_config(c).eval_epochs, [8, 16, 20])
    c = _train_config("default")
    c.chunk_epochs = 12  # the derived 16 would not divide it: 4 does
    assert _schedule(Cadence.from_config(c)) == (576, 4, 12, 36)
    c = _train_config("default")
    c.checkpoint_every = 20
    assert _schedule(Cadence.from_config(c)) == (576, 4, 4, 20)
    c = _train_config("default")
    c.eval_every = 5
    assert _schedule(Cadence.from_config(c)) == (576, 5, 5, 15)
    for knob in ("eval_every", "chunk_epochs", "checkpoint_every"):
        for value in (1, 3, 7, 16, 1000):  # any one knob set alone works
            c = _train_config("default")
            c[knob] = value
            Cadence.from_config(c)


def test_a_chunk_realigns_after_a_resume_under_other_chunks():
    c = _train_config("default", "smoke")  # 16 epochs, evaluations every 4, chunks of 8
    cadence = Cadence.from_config(c)
    assert [cadence.chunk_end(d) for d in (0, 4, 8, 12)] == [8, 8, 16, 16]
    assert [cadence.period_end(d) for d in (0, 4, 14)] == [4, 8, 16]
    assert [e for e in range(1, 17) if cadence.checkpoints_at(e)] == [8, 16]


@pytest.mark.parametrize("changes, words", [
    (dict(num_epochs=0), "num_epochs=0 must be >= 1"),
    (dict(eval_every=0), "eval_every=0 must be >= 1"),
    (dict(eval_every=4, chunk_epochs=6), "chunk_epochs=6 must be a multiple of "
     r"config.eval_every=4 \(a chunk ends with an evaluation\)"),
    (dict(chunk_epochs=8, checkpoint_every=12), "checkpoint_every=12 must be a multiple of "
     r"config.chunk_epochs=8 \(checkpoints are written between chunks\)"),
    (dict(eval_every=8, checkpoint_every=12), "checkpoint_every=12 must be a multiple of "
     r"config.chunk_epochs=8 .*config.chunk_epochs derived from config.num_epochs=576"),
])
def test_set_values_that_cannot_nest_are_one_clear_error(changes, words):
    c = _train_config("default")
    c.update(changes)
    with pytest.raises(ValueError, match=words):
        Cadence.from_config(c)
    with pytest.raises(ValueError, match="bad config: "):
        run_train.validate_config(c)
