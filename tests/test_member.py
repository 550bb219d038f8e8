"""embaug_jax.evaluate.member: evaluate_member's parts, and that plain evaluation and the
bootstrap are one computation under different weights."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from embaug_jax import evaluate

pytestmark = pytest.mark.usefixtures("fast_compile")


def test_evaluate_member_carries_the_parts_and_per_class_aucs(metric_problem):
    probs, labels, seen = metric_problem(30, n=300, decimals=2)
    got = evaluate.evaluate_member(probs, labels, seen, threshold=0.6)
    parts = evaluate.auc_decomposition(probs, labels, seen)
    for key in ("weighted_auc", "seen_auc", "none_weight", "seen_part", "none_part"):
        assert got[key] == getattr(parts, key), key
    assert got["none_auroc"] == parts.none_auc
    # Per class id: sklearn's AUC for seen classes present in validation, NaN for the rest.
    for k in range(probs.shape[1]):
        if seen[k] and np.any(labels == k):
            assert abs(got["class_auc"][k] - roc_auc_score(labels == k, probs[:, k])) < 1e-12
        else:
            assert np.isnan(got["class_auc"][k])


def _fits_and_distances(metric_problem, probs, labels, seen):
    """Post-hoc fits from another draw of rows, and made-up distance scores for these rows."""
    other_probs, other_labels, _ = metric_problem(99, n=150, c=len(seen), missing=())
    rng = np.random.default_rng(0)
    other = dict(knn=rng.random(150) + ~seen[other_labels], mahalanobis=rng.random(150))
    fits = evaluate.fit_posthoc(other_probs, other_labels, seen, embedding_scores=other)
    return fits, dict(knn=rng.random(len(labels)) + ~seen[labels],
                      mahalanobis=np.round(rng.random(len(labels)), 1))


@pytest.mark.parametrize("with_fits", [False, True])
@pytest.mark.parametrize("kw", [dict(decimals=None), dict(decimals=1), dict(unseen=())])
def test_counts_of_all_ones_are_plain_evaluation_bit_for_bit(kw, with_fits, metric_problem):
    """The bootstrap with every row drawn once, in every resample, is evaluate_member: the same
    functions with weights 1. The accuracies are the same integer ratios, which
    evaluate_member holds in float32 as the learning curves do."""
    probs, labels, seen = metric_problem(31, n=200, c=7, missing=(), **kw)
    extra = {}
    if with_fits:
        fits, distances = _fits_and_distances(metric_problem, probs, labels, seen)
        extra = dict(posthoc=fits, embedding_scores=distances)
    plain = evaluate.evaluate_member(probs, labels, seen, threshold=0.45, num_bins=9, **extra)
    ones = np.ones((3, len(labels)), np.int32)
    resampled = evaluate.resampled_metrics(probs, labels, seen, ones, threshold=0.45, num_bins=9,
                                           **extra)
    assert set(resampled) == set(evaluate.RESAMPLED_METRICS)
    for key in evaluate.RESAMPLED_METRICS:
        want = np.full(3, plain[key])
        got = resampled[key]
        if key in evaluate.TABLE1_METRICS and key.endswith("accuracy"):
            assert got.dtype == np.float64
            got = got.astype(np.float32)
        np.testing.assert_array_equal(got, want, err_msg=key)


def test_what_was_not_computed_is_nan_not_a_number_of_something_else(metric_problem):
    probs, labels, seen = metric_problem(32, n=150, c=6, unseen=(4,), missing=())
    plain = evaluate.evaluate_member(probs, labels, seen, threshold=0.6, detectors=("msp",))
    for key in evaluate.TUNED_METRICS + tuple(k for k in evaluate.CALIBRATION_METRICS
                                              if k.endswith(("_ts", "_vs"))):
        assert np.isnan(plain[key]), key
    for name in ("max_logit", "energy", "mahalanobis", "knn"):
        assert all(np.isnan(plain[k]) for k in evaluate.detector_keys(name).values()), name
    for key in ("oscr_auc", "none_aupr", "seen_aupr", "ece_mass", "ece_seen", "nll", "brier"):
        assert np.isfinite(plain[key]), key
    fits, distances = _fits_and_distances(metric_problem, probs, labels, seen)
    full = evaluate.evaluate_member(probs, labels, seen, threshold=0.6, posthoc=fits,
                                    embedding_scores=distances)
    assert all(np.isfinite(full[k]) for k in evaluate.RESAMPLED_METRICS), [
        k for k in evaluate.RESAMPLED_METRICS if not np.isfinite(full[k])]
    best = evaluate.detector_keys(fits.detector)
    assert full["best_detector_auroc"] == full[best["auroc"]]
    # The threshold chosen elsewhere, applied here: the paper's rule at that threshold.
    tuned = evaluate.accuracies(evaluate.threshold_counts(probs, labels, seen, fits.threshold,
                                                          np.ones(150, np.int64)))
    assert full["tuned_none_accuracy"] == tuned["none"]
