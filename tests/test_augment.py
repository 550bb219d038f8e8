"""Tests for embaug_jax.augment.

Oracles: the paper's worked example (section 2.4), scipy's Beta distribution (KS tests), a plain
NumPy loop of the paper's softening rule, parent recovery from labels with one class per example,
and jax.test_util.check_grads for derivatives.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from jax.test_util import check_grads

from embaug_jax import augment as A
from embaug_jax.augment.methods import stitch_mask

B, D = 16, 24  # one shape throughout, so compiled programs are shared between tests
MIXING = ("e_mixup", "e_stitchup", "soft_e_mixup", "soft_e_stitchup")
MASK = jnp.arange(B) < 13  # valid classes for every augment_batch call (one compiled program)


@pytest.fixture(autouse=True)
def _fast(fast_compile):
    """Compiling the Gamma sampler dominates these tests; XLA's optimisations do not pay off."""
    yield


def _data(seed=0, batch=B, dim=D, dtype=jnp.float32):
    """Random embeddings with one unique class per example (so labels identify the parents)."""
    x = jax.random.normal(jax.random.key(seed), (batch, dim)).astype(dtype)
    return x, jax.nn.one_hot(jnp.arange(batch), batch)


def _parents(y_row):
    """The classes (= example ids) with positive mass and their weights."""
    idx = np.flatnonzero(np.asarray(y_row) > 0)
    return idx, np.asarray(y_row)[idx]


# ---------------------------------------------------------------------------------------------
# soften_labels: the paper's worked example and a NumPy oracle
# ---------------------------------------------------------------------------------------------


def _soften_reference(y, softness, negative_mass, mask=None):
    """The paper's rule, one row at a time in float64."""
    y = np.asarray(y, np.float64)
    out = y.copy()
    for row, new in zip(y, out):
        positive = row > 0
        new[positive] = np.maximum(row[positive] - softness, 0.0)
        receives = ~positive if mask is None else ~positive & mask
        mass = (row - new).sum() if negative_mass is None else negative_mass
        if receives.any():
            new[receives] += mass / receives.sum()
    return out


def test_soften_paper_worked_example():
    # Classes one and two mixed with lambda 0.2 among 12 classes -> 0.15, 0.75 and ten times 0.1.
    y = jnp.zeros(12).at[0].set(0.2).at[1].set(0.8)
    want = np.array([0.15, 0.75] + [0.1] * 10)
    np.testing.assert_allclose(A.soften_labels(y, 0.05), want, rtol=0, atol=1e-6)
    # The same numbers produced by actually mixing two one-hot labels with lambda = 0.2.
    y_mix = 0.2 * jax.nn.one_hot(0, 12) + 0.8 * jax.nn.one_hot(1, 12)
    np.testing.assert_allclose(A.soften_labels(y_mix), want, rtol=0, atol=1e-6)


def test_soften_clamps_at_zero_and_clamped_class_gets_no_mass():
    y = jnp.zeros(12).at[0].set(0.02).at[1].set(0.98)
    out = np.asarray(A.soften_labels(y, 0.05))
    np.testing.assert_allclose(out, [0.0, 0.93] + [0.1] * 10, atol=1e-6)
    assert out[0] == 0.0


def test_soften_same_class_pair_has_one_positive():
    y = 0.3 * jax.nn.one_hot(4, 12) + 0.7 * jax.nn.one_hot(4, 12)
    out = np.asarray(A.soften_labels(y, 0.05))
    np.testing.assert_allclose(out[4], 0.95, atol=1e-6)
    np.testing.assert_allclose(np.delete(out, 4), np.full(11, 1 / 11), atol=1e-6)


def test_soften_mass_conserving_sums_to_one():
    lam = jax.random.uniform(jax.random.key(3), (32, 1))
    y = lam * jax.nn.one_hot(jnp.arange(32) % 7, 7) + (1 - lam) * jax.nn.one_hot(jnp.arange(32) % 5, 7)
    y = y.at[0].set(jnp.zeros(7).at[2].set(0.03).at[3].set(0.97))  # a clamp case
    out = A.soften_labels(y, 0.05, negative_mass=None)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out[0, 2], 0.0)  # 0.03 - 0.05 clamps; 0.08 removed in total
    np.testing.assert_allclose(out[0, [0, 1, 4, 5, 6]], 0.08 / 5, atol=1e-6)


@pytest.mark.parametrize("negative_mass", [1.0, 0.3, None])
@pytest.mark.parametrize("use_mask", [False, True])
def test_soften_matches_numpy_reference(negative_mass, use_mask):
    rng = np.random.default_rng(0)
    y = rng.dirichlet(np.ones(10), size=20) * (rng.random((20, 10)) < 0.3)
    y[3] = 0.0  # an all-zero row
    y[4] = 0.01  # no zero class: the mass has nowhere to go
    mask = rng.random(10) < 0.6 if use_mask else None
    if mask is not None:
        y[:, ~mask] = 0.0
    out = A.soften_labels(jnp.asarray(y, jnp.float32), 0.07, negative_mass,
                          class_mask=None if mask is None else jnp.asarray(mask))
    np.testing.assert_allclose(out, _soften_reference(y, 0.07, negative_mass, mask), atol=1e-6)


def test_soften_class_mask_spreads_only_over_valid_zeros():
    valid = jnp.array([True, True, False, True, False, True, True, False])
    y = jax.nn.one_hot(jnp.array([0, 3, 6]), 8) * 0.6 + jax.nn.one_hot(jnp.array([1, 1, 5]), 8) * 0.4
    out = np.asarray(A.soften_labels(y, 0.05, class_mask=valid))
    assert (out[:, ~np.asarray(valid)] == 0.0).all()  # exactly 0, not merely small
    for row, src in zip(out, np.asarray(y)):
        zeros = (src == 0) & np.asarray(valid)
        np.testing.assert_allclose(row[zeros], 1.0 / zeros.sum(), atol=1e-6)
        np.testing.assert_allclose(row[zeros].sum(), 1.0, atol=1e-6)
    # A per-row mask broadcasts the same way.
    per_row = jnp.broadcast_to(valid, y.shape)
    np.testing.assert_array_equal(A.soften_labels(y, 0.05, class_mask=per_row), out)


def test_soften_adds_negative_mass_even_at_zero_softness():
    out = A.soften_labels(jax.nn.one_hot(0, 5), 0.0)
    np.testing.assert_allclose(out, [1.0, 0.25, 0.25, 0.25, 0.25], atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Mixing: parents, lambdas and masks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pairing", A.PAIRINGS)
def test_e_mixup_recovers_parents_and_lambda(pairing):
    x, y = _data()
    x_mix, y_mix = A.e_mixup(jax.random.key(1), x, y, 1.0, pairing=pairing)
    assert x_mix.shape == (A.num_outputs(B, pairing), D) and y_mix.shape == (x_mix.shape[0], B)
    np.testing.assert_allclose(y_mix.sum(-1), 1.0, atol=1e-6)
    seen = []
    for r, (xr, yr) in enumerate(zip(np.asarray(x_mix), np.asarray(y_mix))):
        ids, w = _parents(yr)
        assert len(ids) == 2, "with alpha=1 and distinct parents both have positive weight"
        np.testing.assert_allclose(xr, w @ np.asarray(x)[ids], atol=1e-5)
        seen.extend(ids)
        if pairing == "flip":
            assert sorted(ids) == sorted([r, B - 1 - r])
        if pairing == "permute":
            assert r in ids  # row r is parent a; its partner is another example
    if pairing == "halve":
        assert sorted(seen) == list(range(B))  # every example used exactly once


def _two_class_data(n=2000, dim=64):
    """Rows of class 0 then class 1: under "flip" every output row i has parents i and n-1-i, and
    its weight for its own class y_i is its lambda."""
    x = jax.random.normal(jax.random.key(0), (n, dim))
    return x, jnp.repeat(jnp.arange(2), n // 2)


@pytest.mark.parametrize("label_weight", A.LABEL_WEIGHTS)
def test_e_stitchup_takes_each_element_from_a_parent(label_weight):
    x, labels = _two_class_data()
    x_mix, y_mix = A.e_stitchup(jax.random.key(2), x, labels, 1.0, pairing="flip",
                                label_weight=label_weight, num_classes=2)
    x, x_mix, y_mix = np.asarray(x), np.asarray(x_mix), np.asarray(y_mix)
    from_a = x_mix == x
    assert (from_a | (x_mix == x[::-1])).all()
    frac = from_a.mean(axis=1)
    lam = y_mix[np.arange(len(x)), np.asarray(labels)]
    if label_weight == "realized":
        np.testing.assert_allclose(lam, frac, atol=1e-6)
    else:
        # Independent Bernoulli(lam) elements: the pooled z-score of realized vs drawn lambda,
        # and every row's fraction within 5 standard errors of its lambda.
        se = np.sqrt(lam * (1 - lam) / x.shape[1])
        z = (frac - lam).sum() / np.sqrt((se**2).sum())
        assert abs(z) < 4, z
        assert np.corrcoef(frac, lam)[0, 1] > 0.95


@pytest.mark.parametrize("lam", [0.0, 1e-7, 0.3, 0.5, 0.9999, 1.0])
def test_stitch_mask_rate_is_lambda(lam):
    dim = 1 << 16
    mask = np.asarray(stitch_mask(jax.random.key(5), jnp.full((4, 1), lam), dim, None))
    rate = mask.mean()
    if lam in (0.0, 1.0):
        assert rate == lam
    else:
        assert abs(rate - lam) < 4 * np.sqrt(lam * (1 - lam) / mask.size) + 1e-6


def _folded_beta_cdf(alpha):
    """CDF of min(lam, 1 - lam) for lam ~ Beta(alpha, alpha) (symmetric): 2 F(v) on [0, 1/2]."""
    return lambda v: np.minimum(2 * scipy.stats.beta(alpha, alpha).cdf(v), 1.0)


@pytest.mark.parametrize("alpha", [0.1, 0.2, 0.5, 1.0, 2.0])
def test_sample_lambda_follows_scipy_beta(alpha):
    lam, lam_b = A.sample_lambda(jax.random.key(11), alpha, (3000,), complement=True)
    lam, lam_b = np.asarray(lam, np.float64), np.asarray(lam_b, np.float64)
    np.testing.assert_allclose(lam + lam_b, 1.0, atol=2e-7)
    # float32 rounds draws within 6e-8 of 1 to 1.0 (about 10% of them at alpha 0.1), which KS
    # sees; min(lam, 1 - lam) is held exactly (1 - lam comes from the complement), so test the
    # folded variable for every alpha, symmetry by a binomial test, and lam itself where the
    # rounded mass is negligible.
    folded = np.where(lam <= 0.5, lam, lam_b)
    assert scipy.stats.kstest(folded, _folded_beta_cdf(alpha)).pvalue > 1e-3
    assert scipy.stats.binomtest(int((lam < 0.5).sum()), lam.size).pvalue > 1e-3
    if alpha >= 0.5:
        assert scipy.stats.kstest(lam, scipy.stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    # A wrong parameter must fail the same test, or the test could not fail.
    assert scipy.stats.kstest(folded, _folded_beta_cdf(alpha * 1.5)).pvalue < 1e-3
    # The plain draw is jax.random.beta's, stream for stream.
    np.testing.assert_array_equal(A.sample_lambda(jax.random.key(11), alpha, (3000,)),
                                  jax.random.beta(jax.random.key(11), alpha, alpha, (3000,)))


@pytest.mark.parametrize("method", ["e_mixup", "e_stitchup"])
def test_lambdas_inside_the_methods_follow_beta(method):
    x, labels = _two_class_data()
    _, y_mix = A.METHODS[method](jax.random.key(7), x, labels, 0.2, pairing="flip", num_classes=2)
    weights = np.asarray(y_mix, np.float64)
    assert (weights > 0).all(), "both parents keep a positive weight, however small"
    lam = weights[np.arange(len(x)), np.asarray(labels)]
    assert scipy.stats.kstest(weights.min(1), _folded_beta_cdf(0.2)).pvalue > 1e-3
    assert scipy.stats.binomtest(int((lam < 0.5).sum()), lam.size).pvalue > 1e-3


def test_flip_odd_batch_middle_row_is_unchanged():
    x, y = _data(batch=7)
    for method in ("e_mixup", "e_stitchup"):
        x_mix, y_mix = A.METHODS[method](jax.random.key(0), x, y, 0.5, pairing="flip")
        np.testing.assert_allclose(x_mix[3], x[3], atol=1e-6)
        np.testing.assert_allclose(y_mix[3], y[3], atol=1e-6)


def test_control_is_identity_with_float_labels():
    x, _ = _data()
    labels = jnp.arange(B) % 5
    x_out, y_out = A.control(jax.random.key(0), x, labels, num_classes=5)
    np.testing.assert_array_equal(x_out, x)
    np.testing.assert_array_equal(y_out, jax.nn.one_hot(labels, 5))
    assert y_out.dtype == jnp.float32


@pytest.mark.parametrize("method", MIXING)
def test_soft_methods_are_mixing_then_softening(method):
    x, y = _data()
    key = jax.random.key(4)
    mask = jnp.arange(B) < 12
    x_mix, y_mix = A.METHODS[method](key, x, y, 0.3, softness=0.1, class_mask=mask)
    base = method.removeprefix("soft_")
    x_ref, y_ref = A.METHODS[base](key, x, y, 0.3)
    if method.startswith("soft_"):
        y_ref = A.soften_labels(y_ref, 0.1, class_mask=mask)
    chex.assert_trees_all_equal((x_mix, y_mix), (x_ref, y_ref))


# ---------------------------------------------------------------------------------------------
# Segments
# ---------------------------------------------------------------------------------------------


def test_segments_mixup_has_one_lambda_per_segment_and_size_weighted_label():
    sizes = (4, 12, 8)
    x, y = _data()
    x_mix, y_mix = A.e_mixup(jax.random.key(8), x, y, 0.5, pairing="flip", segments=sizes)
    x, x_mix = np.asarray(x, np.float64), np.asarray(x_mix, np.float64)
    lam_coord = (x_mix - x[::-1]) / (x - x[::-1])  # per-coordinate weight of parent a
    bounds = np.cumsum((0,) + sizes)
    lam_seg = np.stack([lam_coord[:, a:b].mean(1) for a, b in zip(bounds[:-1], bounds[1:])], 1)
    for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        np.testing.assert_allclose(lam_coord[:, a:b], np.broadcast_to(lam_seg[:, s:s + 1], (B, b - a)), atol=2e-3)
    assert np.abs(lam_seg[:, 0] - lam_seg[:, 1]).max() > 0.1  # independent draws differ
    want = lam_seg @ (np.array(sizes) / sum(sizes))
    np.testing.assert_allclose(np.asarray(y_mix)[np.arange(B), np.arange(B)], want, atol=1e-3)


def test_segments_stitchup_rates_are_independent_per_segment():
    sizes = (256, 256, 256)
    x, y = _data(dim=768)
    kwargs = dict(pairing="flip", label_weight="realized")
    x_seg, y_seg = A.e_stitchup(jax.random.key(9), x, y, 0.1, segments=sizes, **kwargs)
    x_one, _ = A.e_stitchup(jax.random.key(9), x, y, 0.1, **kwargs)
    frac = lambda xm: (np.asarray(xm) == np.asarray(x)).reshape(B, 3, 256).mean(-1)
    f_seg, f_one = frac(x_seg), frac(x_one)
    # One rate: the segments agree to sampling noise (sd <= 0.03). Independent U-shaped rates:
    # some pair takes one segment mostly from a and another mostly from b.
    assert np.ptp(f_one, axis=1).max() < 0.2
    assert np.ptp(f_seg, axis=1).max() > 0.6
    np.testing.assert_allclose(np.asarray(y_seg)[np.arange(B), np.arange(B)], f_seg.mean(1), atol=1e-6)


@pytest.mark.parametrize("segments", [(10, 10), (24, 1), (0, 24), (12.5, 11.5)])
def test_segments_must_be_positive_and_sum_to_dim(segments):
    x, y = _data()
    with pytest.raises(ValueError, match="segment"):
        A.e_mixup(jax.random.key(0), x, y, 0.2, segments=segments)


# ---------------------------------------------------------------------------------------------
# Transformations: jit, vmap, grad, retracing, dtypes
# ---------------------------------------------------------------------------------------------


def test_jit_equals_eager_and_keys_are_deterministic():
    x, y = _data()
    every = lambda key, x, y: {m: A.METHODS[m](key, x, y, 0.4) for m in A.METHOD_NAMES}
    eager = every(jax.random.key(3), x, y)
    chex.assert_trees_all_close(jax.jit(every)(jax.random.key(3), x, y), eager, atol=1e-6)
    chex.assert_trees_all_equal(every(jax.random.key(3), x, y), eager)
    other = every(jax.random.key(4), x, y)
    for method in MIXING:
        assert not np.allclose(eager[method][0], other[method][0])


@pytest.mark.parametrize("pairing", A.PAIRINGS)
@pytest.mark.parametrize("method", A.METHOD_NAMES)
def test_traced_form_agrees_with_named_functions(method, pairing):
    x, y = _data()
    key = jax.random.key(6)
    params = A.method_params(method, alpha=0.3, softness=0.08)
    x_out, y_out, weight = A.augment_batch(key, x, y, params, class_mask=MASK, pairing=pairing)
    x_ref, y_ref = A.METHODS[method](key, x, y, 0.3, softness=0.08, class_mask=MASK, pairing=pairing)
    n = x_ref.shape[0]
    chex.assert_trees_all_close((x_out[:n], y_out[:n]), (x_ref, y_ref), atol=1e-6)
    np.testing.assert_array_equal(weight, np.arange(B) < n)
    assert (x_out[n:] == 0).all() and (y_out[n:] == 0).all()


def test_vmap_over_members_without_retrace_and_with_finite_gradients():
    """One jitted, vmapped program for all five methods; new methods/alphas/softness reuse it."""
    x, y = _data()
    member = chex.assert_max_traces(lambda k, x, p: A.augment_batch(k, x, y, p, class_mask=MASK), n=1)

    def sweep(keys, x, params):
        def loss(x):
            out = jax.vmap(member, in_axes=(0, None, 0))(keys, x, params)
            return jnp.sum(out[0] ** 2), out

        grad, out = jax.grad(loss, has_aux=True)(x)
        return out, grad

    sweep = jax.jit(sweep)
    for trial, (alphas, softness) in enumerate([((0.0, 0.2, 0.3, 0.4, 0.5), (0.0, 0.05, 0.1, 0.15, 0.2)),
                                                ((1.0, 0.1, 2.0, 0.3, 0.05), (0.3, 0.0, 0.5, 0.01, 0.9))]):
        names = A.METHOD_NAMES if trial == 0 else A.METHOD_NAMES[::-1]
        # Control's alpha of 0 would give NaN lambdas if it reached the sampler (and NaN gradients
        # through the select); method_params refuses it, so build the member by hand.
        members = [A.method_params(n, max(a, 0.1), s)._replace(alpha=jnp.float32(a))
                   for n, a, s in zip(names, alphas, softness) if n == "control" or a > 0]
        stacked = jax.tree.map(lambda *v: jnp.stack(v), *members)
        keys = jax.random.split(jax.random.key(trial), len(members))
        batched, grad = sweep(keys, x, stacked)
        assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
        for i, params in enumerate(members):
            chex.assert_trees_all_close(jax.tree.map(lambda v: v[i], batched),
                                        A.augment_batch(keys[i], x, y, params, class_mask=MASK),
                                        atol=1e-6)
    chex.clear_trace_counter()


@pytest.mark.parametrize("method", ["e_mixup", "e_stitchup"])
def test_mixing_is_differentiable_in_x(method):
    # Under "flip" x_mix[i] = w_a[i] * x[i] + w_b[i] * x[B-1-i] (stitchup: w per element, 0 or 1),
    # so the gradient of sum(c * x_mix) is known in closed form.
    x, y = _data()
    c = jax.random.normal(jax.random.key(1), x.shape)
    fn = lambda x: A.METHODS[method](jax.random.key(2), x, y, 0.4, pairing="flip")
    (x_mix, y_mix), grad = fn(x), jax.grad(lambda x: jnp.sum(c * fn(x)[0]))(x)
    rows = np.arange(B)
    if method == "e_mixup":
        w_a = np.asarray(y_mix)[rows, rows][:, None]
        w_b = np.asarray(y_mix)[rows, rows[::-1]][:, None]
    else:
        w_a = (np.asarray(x_mix) == np.asarray(x)).astype(np.float32)
        w_b = 1 - w_a
    c = np.asarray(c)
    np.testing.assert_allclose(grad, c * w_a + (c * w_b)[::-1], atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtypes_are_preserved(dtype):
    x, y = _data(dtype=dtype)
    for method in A.METHOD_NAMES:
        x_out, y_out = A.METHODS[method](jax.random.key(0), x, y.astype(dtype), 0.3)
        assert x_out.dtype == dtype and y_out.dtype == dtype, method
        _, y_int = A.METHODS[method](jax.random.key(0), x, jnp.arange(B), 0.3, num_classes=B)
        assert y_int.dtype == jnp.float32, method
        x_t, y_t, w = A.augment_batch(jax.random.key(0), x, y.astype(dtype), A.method_params(method),
                                      class_mask=MASK)
        assert (x_t.dtype, y_t.dtype, w.dtype) == (dtype, dtype, jnp.float32), method
    if dtype == jnp.bfloat16:  # mixed in float32, rounded once
        x_mix, _ = A.e_mixup(jax.random.key(0), x, y, 0.3)
        want, _ = A.e_mixup(jax.random.key(0), x.astype(jnp.float32), y, 0.3)
        np.testing.assert_array_equal(x_mix, want.astype(jnp.bfloat16))


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

_x, _y = _data()
_KEY = jax.random.key(0)


@pytest.mark.parametrize("call, message", [
    (lambda: A.e_mixup(_KEY, _x, _y[:10], 0.2), "batch size"),
    (lambda: A.e_mixup(_KEY, _x[:7], _y[:7], 0.2), "even"),
    (lambda: A.e_stitchup(_KEY, _x[:1], _y[:1], 0.2, pairing="permute"), "at least 2"),
    (lambda: A.e_mixup(_KEY, _x, _y, 0.0), "alpha"),
    (lambda: A.e_stitchup(_KEY, _x, _y, -1.0), "alpha"),
    (lambda: A.e_mixup(_KEY, _x, _y, float("nan")), "alpha"),
    (lambda: A.e_mixup(_KEY, _x, _y, jnp.ones(3)), "alpha must be a scalar"),
    (lambda: A.sample_lambda(_KEY, 0.0, (3,)), "alpha"),
    (lambda: A.soft_e_mixup(_KEY, _x, _y, 0.2, softness=1.0), "softness"),
    (lambda: A.soften_labels(_y, -0.1), "softness"),
    (lambda: A.soften_labels(_y, 0.05, negative_mass=-1.0), "negative_mass"),
    (lambda: A.e_mixup(_KEY, _x, jnp.arange(B), 0.2, num_classes=B - 1), r"\[0, num_classes"),
    (lambda: A.e_mixup(_KEY, _x, jnp.arange(B) - 1, 0.2, num_classes=B), r"\[0, num_classes"),
    (lambda: A.e_mixup(_KEY, _x, jnp.arange(B), 0.2), "num_classes"),
    (lambda: A.e_mixup(_KEY, _x, _y, 0.2, num_classes=3), "num_classes"),
    (lambda: A.e_mixup(_KEY, _x[0], _y, 0.2), r"\[batch, dim\]"),
    (lambda: A.e_mixup(_KEY, _x[None], _y, 0.2), r"\[batch, dim\]"),
    (lambda: A.e_mixup(_KEY, _x, _y[..., None], 0.2), r"\[batch, classes\]"),
    (lambda: A.e_mixup(_KEY, _x, _y[:, 0], 0.2), r"\[batch, classes\]"),
    (lambda: A.e_mixup(_KEY, jnp.arange(B * D).reshape(B, D), _y, 0.2), "floating point"),
    (lambda: A.e_mixup(_KEY, _x.at[2, 3].set(jnp.nan), _y, 0.2), "NaN"),
    (lambda: A.e_mixup(_KEY, _x, _y.at[0, 0].set(-1.0), 0.2), ">= 0"),
    (lambda: A.e_mixup(_KEY, _x, _y, 0.2, pairing="shuffle"), "unknown pairing"),
    (lambda: A.e_stitchup(_KEY, _x, _y, 0.2, label_weight="mask"), "unknown label_weight"),
    (lambda: A.method_params("mixup"), "unknown method"),
    (lambda: A.METHODS["soft_mixup"], "unknown method 'soft_mixup'; use one of 'control'"),
    (lambda: A.method_params("e_mixup", alpha=0.0), "alpha"),
    (lambda: A.method_params("soft_e_mixup", softness=1.5), "softness"),
    (lambda: A.augment_batch(_KEY, _x, _y, ("e_mixup", 0.2)), "MethodParams"),
    (lambda: A.augment_batch(_KEY, _x, _y, A.method_params("e_mixup")._replace(mix=jnp.array(3))),
     "params.mix"),
    (lambda: A.soften_labels(_y, 0.05, class_mask=jnp.ones(B, jnp.int32)), "boolean"),
    (lambda: A.soften_labels(_y, 0.05, class_mask=jnp.ones(B + 1, bool)), "class_mask"),
    (lambda: A.soften_labels(jnp.arange(B), 0.05), "float labels"),
])
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----- ablation baselines ------------------------------------------------------------------


def test_soft_control_is_the_control_softened():
    x, y = _data(40)
    x_out, y_out = A.soft_control(jax.random.key(0), x, y, softness=0.05, class_mask=MASK)
    np.testing.assert_array_equal(x_out, x)
    np.testing.assert_array_equal(y_out, A.soften_labels(y, 0.05, 1.0, class_mask=MASK))
    # The paper's rule on a one-hot row: 0.95 on the class, 1 / (K - 1) on every other valid one.
    row = np.asarray(y_out[2])
    assert row[2] == pytest.approx(0.95) and row[0] == pytest.approx(1 / 12)
    assert (row[13:] == 0).all()


@pytest.mark.parametrize("use_mask", [False, True])
def test_smooth_labels_is_the_standard_definition(use_mask):
    y = jax.random.dirichlet(jax.random.key(1), jnp.ones(B), (5,))  # soft rows too
    eps = 0.1
    got = np.asarray(A.smooth_labels(y, eps, class_mask=MASK if use_mask else None))
    valid = np.asarray(MASK) if use_mask else np.ones(B, bool)
    want = np.where(valid, (1 - eps) * np.asarray(y) + eps / valid.sum(), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    one_hot = A.smooth_labels(jax.nn.one_hot(jnp.arange(4), B), eps, class_mask=MASK)
    np.testing.assert_allclose(one_hot.sum(1), 1.0, rtol=1e-6)  # still a distribution
    x, ids = _data(2)[0], jnp.arange(B) % 13
    x_out, y_out = A.label_smoothing(jax.random.key(0), x, ids, eps, num_classes=B,
                                     class_mask=MASK)
    np.testing.assert_array_equal(x_out, x)
    np.testing.assert_allclose(y_out, A.smooth_labels(jax.nn.one_hot(ids, B), eps,
                                                      class_mask=MASK), rtol=1e-7)
    with pytest.raises(ValueError, match=r"smoothing must be a finite number \[0, 1\)"):
        A.smooth_labels(y, 1.0)


def test_gaussian_noise_is_relative_isotropic_normal_noise():
    x = jax.random.normal(jax.random.key(3), (256, 64)) * jnp.linspace(0.1, 2.0, 256)[:, None]
    y = jnp.zeros((256, 3)).at[:, 0].set(1.0)
    key = jax.random.key(4)
    x_out, y_out = A.gaussian_noise(key, x, y, 0.3)
    np.testing.assert_array_equal(y_out, y)
    rms = np.sqrt(np.mean(np.asarray(x) ** 2, axis=1, keepdims=True))
    z = (np.asarray(x_out) - np.asarray(x)) / (0.3 * rms)
    np.testing.assert_allclose(z, jax.random.normal(key, x.shape), rtol=1e-4, atol=1e-4)
    assert scipy.stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    np.testing.assert_array_equal(A.gaussian_noise(key, x, y, 0.0)[0], x)


def test_feature_dropout_zeroes_at_the_rate_and_keeps_the_mean():
    x = jax.random.normal(jax.random.key(5), (200, 100)) + 3.0
    y = jnp.ones((200, 2))
    key = jax.random.key(6)
    x_out, _ = A.feature_dropout(key, x, y, 0.2)
    kept = np.asarray(jax.random.uniform(key, x.shape) >= 0.2)
    np.testing.assert_array_equal(np.asarray(x_out) != 0, kept)
    np.testing.assert_allclose(np.asarray(x_out)[kept], np.asarray(x)[kept] / 0.8, rtol=1e-6)
    # The zeroed share is Binomial(20,000, 0.2): well within 5 standard deviations of 0.2.
    assert abs((~kept).mean() - 0.2) < 5 * np.sqrt(0.2 * 0.8 / kept.size)
    np.testing.assert_allclose(np.asarray(x_out).mean(), np.asarray(x).mean(), rtol=0.02)
    with pytest.raises(ValueError, match=r"rate must be a finite number \[0, 1\)"):
        A.feature_dropout(key, x, y, 1.0)


@pytest.mark.parametrize("pairing", ["halve", "permute"])
def test_manifold_mixup_pairs_are_e_mixups(pairing):
    x, y = _data(7)
    key = jax.random.key(8)
    pairs = A.manifold_mixup(key, x, y, 0.4, pairing=pairing)
    x_mix, y_mix = A.e_mixup(key, x, y, 0.4, pairing=pairing)
    rows = B // 2 if pairing == "halve" else B
    assert pairs.x_a.shape == pairs.x_b.shape == (rows, D) and pairs.lam_a.shape == (rows, 1)
    np.testing.assert_allclose(pairs.lam_a * pairs.x_a + pairs.lam_b * pairs.x_b, x_mix,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pairs.y, y_mix, rtol=1e-6)
    np.testing.assert_allclose(pairs.lam_a + pairs.lam_b, 1.0, rtol=1e-6)
    # The traced form's fixed shape: the same pairs first, then weight-0 padding.
    padded, weight = jax.jit(lambda k, a: A.manifold_rows(k, x, y, a, pairing=pairing))(
        key, jnp.float32(0.4))
    for got, want in zip(padded, pairs):
        np.testing.assert_allclose(got[:rows], want, rtol=1e-6)
    np.testing.assert_array_equal(weight, np.arange(B) < rows)


@pytest.mark.parametrize("method,kw", [("soft_control", {}), ("label_smoothing",
                                                                dict(smoothing=0.1)),
                                        ("gaussian_noise", dict(noise_std=0.3)),
                                        ("feature_dropout", dict(drop_rate=0.2))])
def test_traced_baselines_agree_with_their_named_functions(method, kw):
    x, y = _data(11)
    key = jax.random.key(12)
    params = A.method_params(method, softness=0.05, **kw)
    x_t, y_t, w = A.augment_batch(key, x, y, params, class_mask=MASK)
    np.testing.assert_array_equal(w, 1.0)
    k_noise, k_drop = jax.random.split(jax.random.split(key, 3)[2])
    want = {"soft_control": lambda: A.soft_control(key, x, y, softness=0.05, class_mask=MASK),
            "label_smoothing": lambda: A.label_smoothing(key, x, y, 0.1, class_mask=MASK),
            "gaussian_noise": lambda: A.gaussian_noise(k_noise, x, y, 0.3),
            "feature_dropout": lambda: A.feature_dropout(k_drop, x, y, 0.2)}[method]()
    np.testing.assert_allclose(x_t, want[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y_t, want[1], rtol=1e-6, atol=1e-7)
    # A method ignores the other baselines' settings: the control stays the identity.
    control = A.method_params("control", smoothing=0.1, noise_std=0.3, drop_rate=0.2)
    x_c, y_c, _ = A.augment_batch(key, x, y, control, class_mask=MASK)
    np.testing.assert_array_equal(x_c, x)
    np.testing.assert_array_equal(y_c, y)


def test_manifold_mixup_is_refused_by_the_padded_traced_form():
    x, y = _data(13)
    with pytest.raises(ValueError, match="mixes inside the model"):
        A.augment_batch(jax.random.key(0), x, y, A.method_params("manifold_mixup", 0.2))
