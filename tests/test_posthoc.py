"""embaug_jax.evaluate.posthoc: the logits behind stored outputs, temperature and vector scaling
against scipy's optimisers, and what a member's selection rows fix."""

import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit

from embaug_jax import evaluate


def _outputs(seed, n=300, c=6, sharpness=4.0, spread=3.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) * spread - 2.0
    logits[np.arange(n), labels] += sharpness
    seen = np.ones(c, bool)
    seen[c - 1] = False
    return expit(logits).astype(np.float32), labels, seen


def test_sigmoid_logits_invert_the_sigmoid_and_cap_float32_saturation():
    z = np.array([[-20.0, -3.0, 0.0, 2.5, 9.0]])
    np.testing.assert_allclose(evaluate.sigmoid_logits(expit(z)), z, rtol=1e-9)
    saturated = evaluate.sigmoid_logits(np.array([[0.0, 1.0, 1e-45]], np.float32))
    # p = 1 reads as the logit of the largest float32 below 1; p = 0 and subnormals as the
    # logit of the smallest normal float32.
    np.testing.assert_allclose(saturated, [[-87.33654475, np.log(2.0 ** 24 - 1), -87.33654475]],
                               rtol=1e-9)
    assert np.isfinite(evaluate.sigmoid_logits(np.array([[0.0, 1.0]]))).all()


def _nll(z, y):
    """The summed binary cross-entropy of sigmoid(scale * z + bias) against y, written out."""
    def nll(scale, bias=0.0):
        a = z * scale + bias
        return np.sum(np.log1p(np.exp(-np.abs(a))) + np.maximum(a, 0) - y * a)
    return nll


def _targets(labels, seen):
    return labels[:, None] == np.flatnonzero(seen)[None]


@pytest.mark.parametrize("spread", [1.0, 3.0])  # under- and over-confident outputs
def test_temperature_is_scipys_minimiser(spread):
    probs, labels, seen = _outputs(0, spread=spread)
    t = evaluate.fit_temperature(probs, labels, seen)
    nll = _nll(evaluate.sigmoid_logits(probs)[:, seen], _targets(labels, seen))
    want = minimize_scalar(lambda t: nll(1 / t), bounds=evaluate.TEMPERATURE_RANGE,
                           method="bounded", options=dict(xatol=1e-10)).x
    assert abs(t - want) < 1e-6 * want
    assert (t > 1) == (spread > 2)  # the over-confident outputs are cooled, the others heated


def test_vector_scaling_is_scipys_minimiser_class_by_class():
    probs, labels, seen = _outputs(1)
    got = evaluate.fit_vector_scaling(probs, labels, seen)
    z = evaluate.sigmoid_logits(probs)
    for k in np.flatnonzero(seen):
        nll = _nll(z[:, k], labels == k)

        def objective(p):
            return nll(p[0], p[1]) + evaluate.VECTOR_PENALTY / 2 * ((p[0] - 1) ** 2 + p[1] ** 2)

        want = minimize(objective, [1.0, 0.0], method="BFGS", options=dict(gtol=1e-9)).x
        np.testing.assert_allclose([got.scale[k], got.bias[k]], want, atol=1e-5)
    assert got.scale[~seen] == 1 and got.bias[~seen] == 0


def test_scalings_of_separable_rows_stay_finite():
    labels = np.array([0, 1, 2, 0, 1, 2])
    seen = np.array([True, True, False])
    probs = (np.eye(3, dtype=np.float32)[labels] * seen).astype(np.float32)  # saturated, perfect
    t = evaluate.fit_temperature(probs, labels, seen)
    assert evaluate.TEMPERATURE_RANGE[0] <= t <= evaluate.TEMPERATURE_RANGE[1]
    vector = evaluate.fit_vector_scaling(probs, labels, seen)
    assert np.isfinite(vector.scale).all() and np.isfinite(vector.bias).all()
    # A seen class absent from these rows keeps finite parameters too.
    absent = evaluate.fit_vector_scaling(probs[labels != 1], labels[labels != 1], seen)
    assert np.isfinite(absent.bias).all()


def test_temperature_scaling_keeps_every_ranking():
    probs, labels, seen = _outputs(2)
    fits = evaluate.fit_posthoc(probs, labels, seen)
    scaled = expit(fits.temperature_scaling.logits(evaluate.sigmoid_logits(probs)))
    ones = np.ones((1, len(labels)), np.int32)
    for a, b in ((scaled, probs),):
        np.testing.assert_array_equal(np.where(seen, a, -1).argmax(1),
                                      np.where(seen, b, -1).argmax(1))
        assert abs(evaluate.none_detection(a, labels, seen)["auroc"]
                   - evaluate.none_detection(b, labels, seen)["auroc"]) < 1e-12
        assert abs(evaluate.oscr_area(a, labels, seen, ones)[0]
                   - evaluate.oscr_area(b, labels, seen, ones)[0]) < 1e-12


def test_fit_posthoc_chooses_the_detector_of_best_auroc():
    probs, labels, seen = _outputs(3)
    is_none = ~seen[labels]
    oracle = {"knn": is_none + 0.0, "mahalanobis": -(is_none + 0.0)}  # perfect, and reversed
    fits = evaluate.fit_posthoc(probs, labels, seen, embedding_scores=oracle)
    assert fits.detector == "knn"
    assert 0 < fits.threshold <= 1
    # Without "none" rows no detector is defined: the first one stands.
    assert evaluate.best_detector(labels, np.ones_like(seen),
                                  evaluate.output_scores(probs, seen)) == "msp"
    with pytest.raises(ValueError, match="no seen class"):
        evaluate.fit_temperature(probs, labels, np.zeros_like(seen))
    with pytest.raises(ValueError, match="NaN/Inf"):
        evaluate.fit_posthoc(np.where(probs > 0.9, np.nan, probs), labels, seen)
