"""embaug_jax.evaluate.bootstrap: resamples with replacement, and metrics on a resample equal to
the evaluation of the expanded resample (and sklearn's sample weights)."""

import jax
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from embaug_jax import evaluate

pytestmark = pytest.mark.usefixtures("fast_compile")


def test_bootstrap_counts_are_resamples_with_replacement():
    counts = evaluate.bootstrap_counts(jax.random.key(0), 50, 400)
    assert counts.shape == (400, 50) and counts.dtype == np.int32
    np.testing.assert_array_equal(counts.sum(1), 50)
    # Each row is drawn Binomial(50, 1/50) times per resample: mean 1, variance 49/50.
    assert abs(counts.mean() - 1) < 1e-12 and abs(counts.var() - 0.98) < 0.05
    again = evaluate.bootstrap_counts(jax.random.key(0), 50, 400)
    np.testing.assert_array_equal(counts, again)


@pytest.mark.parametrize("decimals", [None, 1])
def test_resampled_metrics_equal_evaluation_of_the_expanded_resample(decimals, metric_problem):
    probs, labels, seen = metric_problem(40, n=150, c=6, unseen=(4,), missing=(),
                                         decimals=decimals)
    counts = evaluate.bootstrap_counts(jax.random.key(1), len(labels), 6)
    got = evaluate.resampled_metrics(probs, labels, seen, counts, threshold=0.45, num_bins=7)
    assert set(got) == set(evaluate.RESAMPLED_METRICS)
    for r in range(len(counts)):
        rows = np.repeat(np.arange(len(labels)), counts[r])
        want = evaluate.evaluate_member(probs[rows], labels[rows], seen, threshold=0.45,
                                        num_bins=7)
        for key in evaluate.RESAMPLED_METRICS:
            # evaluate_member's accuracies are float32 (as on device); the rest float64.
            rtol = 1e-6 if key.endswith("accuracy") else 1e-10
            np.testing.assert_allclose(got[key][r], want[key], rtol=rtol, atol=1e-12,
                                       err_msg=key)
        # And the AUC against sklearn's sample weights directly.
        truth, scores, _, _ = evaluate.ovr_scores(probs, labels, seen)
        keep = truth[rows].any(0)
        want_auc = roc_auc_score(truth[:, keep], scores[:, keep], average="weighted",
                                 sample_weight=counts[r])
        assert abs(got["weighted_auc"][r] - want_auc) < 1e-12


def test_resampled_metrics_with_fits_and_distances_equal_the_expanded_resample(metric_problem):
    """The post-hoc fits stay fixed across resamples and the distance scores follow their
    rows: every metric is still the evaluation of the expanded resample."""
    probs, labels, seen = metric_problem(42, n=120, c=6, unseen=(4,), missing=(), decimals=2)
    rng = np.random.default_rng(2)
    sel_probs, sel_labels, _ = metric_problem(43, n=120, c=6, unseen=(4,), missing=())
    fits = evaluate.fit_posthoc(sel_probs, sel_labels, seen,
                                embedding_scores=dict(knn=rng.random(120) + ~seen[sel_labels]))
    distances = dict(knn=rng.random(120) + ~seen[labels], mahalanobis=rng.random(120))
    counts = evaluate.bootstrap_counts(jax.random.key(3), len(labels), 4)
    got = evaluate.resampled_metrics(probs, labels, seen, counts, threshold=0.5, num_bins=6,
                                     posthoc=fits, embedding_scores=distances)
    for r in range(len(counts)):
        rows = np.repeat(np.arange(len(labels)), counts[r])
        want = evaluate.evaluate_member(probs[rows], labels[rows], seen, threshold=0.5,
                                        num_bins=6, posthoc=fits,
                                        embedding_scores={k: v[rows] for k, v in
                                                          distances.items()})
        for key in evaluate.RESAMPLED_METRICS:
            rtol = 1e-6 if key in evaluate.TABLE1_METRICS and key.endswith("accuracy") else 1e-10
            np.testing.assert_allclose(got[key][r], want[key], rtol=rtol, atol=1e-12,
                                       err_msg=key)


def test_resampled_metrics_undefined_parts_are_nan(metric_problem):
    probs, labels, seen = metric_problem(41, n=40, c=4, unseen=(3,), missing=())
    counts = np.zeros((2, 40), np.int32)
    counts[0, np.flatnonzero(seen[labels])[:5]] = 8  # no "none" row drawn
    counts[1] = 1
    got = evaluate.resampled_metrics(probs, labels, seen, counts, threshold=0.6)
    assert np.isnan(got["none_auroc"][0]) and np.isnan(got["none_accuracy"][0])
    assert got["none_weight"][0] == 0 and got["none_part"][0] == 0
    assert np.isfinite(got["weighted_auc"]).all()
    with pytest.raises(ValueError, match="counts must be"):
        evaluate.resampled_metrics(probs, labels, seen, counts[:, :-1], threshold=0.6)
    with pytest.raises(ValueError, match="non-negative integers"):
        evaluate.resampled_metrics(probs, labels, seen, counts.astype(np.float32), threshold=0.6)
