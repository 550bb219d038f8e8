"""embaug_jax.evaluate.detectors: the output scores, their detection metrics against sklearn
(with sample weights), and the distance detectors against direct numpy computations."""

import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from embaug_jax import evaluate


def test_output_scores_are_the_direct_formulas(metric_problem):
    probs, labels, seen = metric_problem(60, n=100)
    probs = np.clip(probs, 0.02, 0.98).astype(np.float64)
    logits = np.log(probs / (1 - probs))
    got = evaluate.output_scores(probs, seen)
    assert set(got) == set(evaluate.OUTPUT_DETECTORS)
    np.testing.assert_allclose(got["msp"], 1 - probs[:, seen].max(1), atol=1e-15)
    np.testing.assert_allclose(got["max_logit"], -logits[:, seen].max(1), rtol=1e-12)
    np.testing.assert_allclose(got["energy"], -np.log1p(np.exp(logits[:, seen])).sum(1),
                               rtol=1e-12)


@pytest.mark.parametrize("decimals", [None, 1])
def test_detection_metrics_are_sklearns_with_sample_weights(decimals, metric_problem):
    probs, labels, seen = metric_problem(61, n=150, decimals=decimals)
    is_none = ~seen[labels]
    weights = np.random.default_rng(1).integers(0, 3, (3, 150)).astype(np.int32)
    for name, score in evaluate.output_scores(probs, seen).items():
        got = evaluate.detection_metrics(is_none, score, weights, seen_aupr=True)
        for b in range(3):
            w = weights[b]
            assert abs(got["auroc"][b] - roc_auc_score(is_none, score, sample_weight=w)) < 1e-12
            assert abs(got["aupr"][b] - average_precision_score(is_none, score,
                                                                sample_weight=w)) < 1e-12
            assert abs(got["aupr_seen"][b] - average_precision_score(
                ~is_none, -score, sample_weight=w)) < 1e-12
            fpr, tpr, _ = roc_curve(is_none, score, sample_weight=w, drop_intermediate=False)
            assert abs(got["fpr_at_95_tpr"][b] - fpr[np.argmax(tpr >= 0.95)]) < 1e-12, name
    assert evaluate.detector_keys("msp")["auroc"] == "none_auroc"
    assert evaluate.detector_keys("knn")["fpr_at_95_tpr"] == "knn_fpr_at_95_tpr"
    with pytest.raises(ValueError, match="unknown detector"):
        evaluate.detector_keys("odin")


def _direct_mahalanobis(train_x, train_y, x):
    classes = np.unique(train_y)
    means = np.stack([train_x[train_y == k].mean(0) for k in classes])
    deviations = train_x - means[np.searchsorted(classes, train_y)]
    n, d = deviations.shape
    rho, mu = evaluate.ledoit_wolf(deviations)
    cov = (1 - rho) * deviations.T @ deviations / n + rho * mu * np.eye(d)
    inverse = np.linalg.inv(cov)
    return np.array([min((q - m) @ inverse @ (q - m) for m in means) for q in x])


@pytest.mark.parametrize("n,dim", [(60, 8), (12, 30)])  # more rows than dimensions, and fewer
def test_mahalanobis_is_the_direct_computation_with_ledoit_wolf_shrinkage(n, dim):
    rng = np.random.default_rng(n)
    train_x = rng.normal(size=(n, dim)) * rng.random(dim) + 3.0
    train_y = rng.integers(0, 3, n)
    x = rng.normal(size=(9, dim)) + 3.0
    got = evaluate.mahalanobis_scores(train_x, train_y, x)
    np.testing.assert_allclose(got, _direct_mahalanobis(train_x, train_y, x), rtol=1e-9)
    deviations = train_x - np.stack([train_x[train_y == k].mean(0) for k in range(3)])[train_y]
    assert abs(evaluate.ledoit_wolf(deviations)[0]
               - ledoit_wolf_shrinkage(deviations, assume_centered=True)) < 1e-12


def test_knn_is_the_direct_computation():
    rng = np.random.default_rng(2)
    train_x, x = rng.normal(size=(40, 6)), rng.normal(size=(11, 6))
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    distances = np.linalg.norm(unit(x)[:, None] - unit(train_x)[None], axis=2)
    for k in (1, 5, 40):
        got = evaluate.knn_scores(train_x, x, k=k)
        np.testing.assert_allclose(got, np.sort(distances, axis=1)[:, k - 1], atol=1e-6)


def test_distance_detectors_refuse_bad_rows():
    rng = np.random.default_rng(3)
    train_x, x = rng.normal(size=(10, 4)), rng.normal(size=(5, 4))
    with pytest.raises(ValueError, match="k=11 needs"):
        evaluate.knn_scores(train_x, x, k=11)
    with pytest.raises(ValueError, match="of one D"):
        evaluate.knn_scores(train_x, x[:, :3])
    with pytest.raises(ValueError, match="NaN or Inf"):
        evaluate.mahalanobis_scores(np.where(train_x > 1, np.nan, train_x), np.zeros(10), x)
    with pytest.raises(ValueError, match="labels for 10"):
        evaluate.mahalanobis_scores(train_x, np.zeros(9), x)
    with pytest.raises(evaluate.NoWithinClassSpread, match="do not vary within any class"):
        evaluate.mahalanobis_scores(np.ones((10, 4)), np.zeros(10), x)
