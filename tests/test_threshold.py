"""embaug_jax.evaluate.threshold against the paper's rule worked by hand, on device and on host."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embaug_jax import evaluate

# Compiling dominates these small problems.
pytestmark = pytest.mark.usefixtures("fast_compile")


def _paper_rule(probs, labels, seen, threshold):
    """Sec. 3.5 written out example by example, in plain Python."""
    correct, none_correct, seen_correct = [], [], []
    for p, y in zip(probs.tolist(), labels.tolist()):
        candidates = [(p[k], k) for k in range(len(p)) if seen[k]]
        conf, pred = max(candidates, key=lambda t: (t[0], -t[1])) if candidates else (-1, -1)
        predicted_none = not conf > threshold
        ok = predicted_none if not seen[y] else (not predicted_none and pred == y)
        correct.append(ok)
        (seen_correct if seen[y] else none_correct).append(ok)
    mean = lambda xs: np.mean(xs) if xs else np.nan  # noqa: E731
    return mean(correct), mean(none_correct), mean(seen_correct)


def test_threshold_accuracy_hand_checked():
    seen = np.array([True, True, True, False])  # class 3 never seen in training
    probs = np.array([
        [0.90, 0.10, 0.10, 0.99],  # y=0: unseen column ignored, 0.9 > 0.6 -> correct
        [0.70, 0.65, 0.00, 0.00],  # y=1: predicts 0 -> wrong
        [0.10, 0.10, 0.60, 0.00],  # y=2: exactly at the threshold -> "none" -> wrong
        [0.20, 0.30, 0.10, 0.95],  # y=3 unseen: best seen 0.3 -> "none" -> correct
        [0.61, 0.00, 0.00, 0.00],  # y=3 unseen: predicts 0 -> wrong
        [0.50, 0.10, 0.10, 0.10],  # y=0: below threshold -> "none" -> wrong
    ], np.float32)
    labels = np.array([0, 1, 2, 3, 3, 0])
    got = evaluate.threshold_accuracy(probs, labels, seen, 0.6)
    np.testing.assert_allclose([got["overall"], got["none"], got["seen"]], [2 / 6, 1 / 2, 1 / 4],
                               rtol=1e-6)
    # Lowering the threshold below 0.6 lets row 2 through; row 5 (0.5) stays "none".
    got = evaluate.threshold_accuracy(probs, labels, seen, 0.55)
    np.testing.assert_allclose([got["overall"], got["none"], got["seen"]], [3 / 6, 1 / 2, 2 / 4],
                               rtol=1e-6)
    # The counts behind them, in COUNT_NAMES order.
    counts = evaluate.threshold_counts(probs, labels, seen, 0.6, np.ones(6, np.int32))
    assert dict(zip(evaluate.COUNT_NAMES, counts.tolist())) == dict(
        correct=2, correct_none=1, none=2, correct_seen=1, seen=4)


def test_threshold_accuracy_nan_rules():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    labels = np.array([0, 1])
    got = evaluate.threshold_accuracy(probs, labels, np.array([True, True]), 0.6)
    assert np.isnan(got["none"]) and got["overall"] == 1.0 and got["seen"] == 1.0
    # Nothing seen in training: every prediction is "none", which is right for every example.
    got = evaluate.threshold_accuracy(probs, labels, np.array([False, False]), 0.6)
    assert got["overall"] == 1.0 and got["none"] == 1.0 and np.isnan(got["seen"])


@pytest.mark.parametrize("seed", [0, 1])
def test_threshold_sweep_matches_paper_rule(seed, metric_problem):
    probs, labels, seen = metric_problem(seed, n=150, decimals=2)
    sweep = evaluate.threshold_sweep(probs, labels, seen)
    np.testing.assert_allclose(sweep["thresholds"], np.arange(0.05, 0.951, 0.05), atol=1e-6)
    for k, t in enumerate(np.asarray(sweep["thresholds"])):
        want = _paper_rule(probs, labels, seen, np.float32(t))
        got = [sweep["overall"][k], sweep["none"][k], sweep["seen"][k]]
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"threshold {t}")


def test_threshold_accuracy_vmaps_over_members_and_thresholds(metric_problem):
    probs, labels, seen = metric_problem(3, n=64)
    members = np.stack([probs, probs ** 2, np.sqrt(probs)])
    thresholds = jnp.array([0.3, 0.6])

    @jax.jit
    @chex.assert_max_traces(n=1)
    def grid(p, t):
        inner = jax.vmap(evaluate.threshold_accuracy, in_axes=(None, None, None, 0))
        return jax.vmap(inner, in_axes=(0, None, None, None))(p, labels, seen, t)

    out = grid(members, thresholds)
    grid(members * 0.5, thresholds)  # new values, same shapes: no retrace
    for m in range(3):
        for j, t in enumerate([0.3, 0.6]):
            want = evaluate.threshold_accuracy(members[m], labels, seen, t)
            for key in ("overall", "none", "seen"):
                np.testing.assert_allclose(out[key][m, j], want[key], rtol=1e-6)


@pytest.mark.parametrize("decimals", [None, 2])
def test_the_device_rule_is_the_host_rule(decimals, metric_problem):
    """On device: jnp under jit and vmap, a traced threshold, a padded block's bool validity
    mask as the weights. On host: numpy over integer weights. Same counts, and the device's
    float32 accuracies are the host's float64 ones rounded."""
    probs, labels, seen = metric_problem(4, n=200, decimals=decimals)
    valid = np.arange(200) < 173  # the rows past 173 are padding
    thresholds = np.array([0.3, 0.5, 0.6, 0.8], np.float32)

    @jax.jit
    def on_device(p, y, s, t, v):
        counts = jax.vmap(evaluate.threshold_counts, in_axes=(None, None, None, 0, None))(
            p, y, s, t, v)
        return counts, evaluate.accuracies(counts)

    counts, acc = jax.device_get(on_device(jnp.asarray(probs), jnp.asarray(labels),
                                           jnp.asarray(seen), jnp.asarray(thresholds),
                                           jnp.asarray(valid)))
    assert counts.dtype == np.int32 and acc["overall"].dtype == np.float32
    for j, t in enumerate(thresholds):
        host = evaluate.threshold_counts(probs, labels, seen, t, valid.astype(np.int32))
        assert host.dtype == np.int64
        np.testing.assert_array_equal(counts[j], host)
        host_acc = evaluate.accuracies(host)
        for key in ("overall", "none", "seen"):
            assert host_acc[key].dtype == np.float64
            np.testing.assert_array_equal(acc[key][j], np.float32(host_acc[key]))
        # Padding is as if the rows were not there.
        np.testing.assert_array_equal(host, evaluate.threshold_counts(
            probs[valid], labels[valid], seen, t, np.ones(173, np.int32)))


def test_counts_under_weights_are_the_counts_of_the_expanded_rows(metric_problem):
    probs, labels, seen = metric_problem(6, n=90, decimals=1)
    weights = np.random.default_rng(0).integers(0, 4, (3, 90)).astype(np.int32)
    got = evaluate.threshold_counts(probs, labels, seen, 0.45, weights)
    assert got.shape == (3, 5)
    for b in range(3):
        rows = np.repeat(np.arange(90), weights[b])
        np.testing.assert_array_equal(got[b], evaluate.threshold_counts(
            probs[rows], labels[rows], seen, 0.45, np.ones(rows.size, np.int32)))


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.1, float("nan")])
def test_check_threshold_refuses_values_outside_the_open_unit_interval(value):
    with pytest.raises(ValueError, match=r"config.threshold=.* must lie in \(0, 1\)"):
        evaluate.check_threshold(value, "config.threshold")
    assert evaluate.check_threshold(0.6) == 0.6
