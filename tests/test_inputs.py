"""embaug_jax.evaluate.inputs: every metric refuses bad input with one clear message."""

import numpy as np
import pytest

from embaug_jax import evaluate


@pytest.mark.parametrize("fn", [
    lambda p, y, s: evaluate.threshold_accuracy(p, y, s, 0.6), evaluate.auc_decomposition,
    evaluate.ovr_scores, evaluate.none_detection, evaluate.calibration,
    lambda p, y, s: evaluate.evaluate_member(p, y, s, threshold=0.6),
    lambda p, y, s: evaluate.resampled_metrics(p, y, s, np.ones((2, len(y)), int),
                                               threshold=0.6),
], ids=["threshold_accuracy", "auc_decomposition", "ovr_scores", "none_detection",
        "calibration", "evaluate_member", "resampled_metrics"])
def test_bad_inputs_raise_clear_errors(fn, metric_problem):
    probs, labels, seen = metric_problem(0, n=20, c=5, unseen=(), missing=())
    with pytest.raises(ValueError, match="labels must be"):
        fn(probs, labels[:-1], seen)
    with pytest.raises(ValueError, match="seen_mask must be"):
        fn(probs, labels, seen[:-1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        fn(probs, np.where(np.arange(20) == 3, 5, labels), seen)
    with pytest.raises(ValueError, match="integer"):
        fn(probs, labels.astype(np.float32), seen)
    bad = probs.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN/Inf in rows \[4\]"):
        fn(bad, labels, seen)


def test_top_seen_prediction_ignores_unseen_columns_in_numpy_and_jnp():
    import jax.numpy as jnp

    probs = np.array([[0.2, 0.9, 0.5], [0.7, 0.1, 0.7]], np.float32)
    seen = np.array([True, False, True])
    for xp in (np, jnp):
        predicted, confidence = evaluate.top_seen_prediction(xp.asarray(probs), xp.asarray(seen))
        np.testing.assert_array_equal(predicted, [2, 0])  # a tie goes to the lower class id
        np.testing.assert_array_equal(confidence, np.float32([0.5, 0.7]))
    _, none_seen = evaluate.top_seen_prediction(probs, np.zeros(3, bool))
    assert np.all(none_seen == -np.inf)
