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


@pytest.mark.parametrize("kw", [dict(decimals=None), dict(decimals=1), dict(unseen=())])
def test_counts_of_all_ones_are_plain_evaluation_bit_for_bit(kw, metric_problem):
    """The bootstrap with every row drawn once, in every resample, is evaluate_member: the same
    functions with weights 1. The accuracies are the same integer ratios, which
    evaluate_member holds in float32 as the learning curves do."""
    probs, labels, seen = metric_problem(31, n=200, c=7, missing=(), **kw)
    plain = evaluate.evaluate_member(probs, labels, seen, threshold=0.45, num_bins=9)
    ones = np.ones((3, len(labels)), np.int32)
    resampled = evaluate.resampled_metrics(probs, labels, seen, ones, threshold=0.45, num_bins=9)
    for key in evaluate.RESAMPLED_METRICS:
        want = np.full(3, plain[key])
        got = resampled[key]
        if key.endswith("accuracy"):
            assert got.dtype == np.float64
            got = got.astype(np.float32)
        np.testing.assert_array_equal(got, want, err_msg=key)
