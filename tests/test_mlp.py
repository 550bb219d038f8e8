"""Tests for embaug_jax.train.mlp against a PyTorch oracle."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from embaug_jax.train.mlp import MLP, classification_loss, probabilities


def _setup(b=6, d=10, c=7, seed=0):
    model = MLP(num_classes=c, hidden=(8, 5), dropout=0.3)
    x = jax.random.normal(jax.random.key(seed), (b, d))
    params = model.init(jax.random.key(1), x)
    rng = np.random.default_rng(seed)
    targets = rng.dirichlet(np.ones(c), size=b).astype(np.float32)
    weights = np.array([1, 1, 0, 1, 0.5, 1], np.float32)[:b]
    mask = np.ones(c, bool)
    mask[[1, 4]] = False
    return model, params, x, targets, weights, mask


def _torch_mlp(params):
    p = params["params"]
    layers = []
    for name in ("hidden_0", "hidden_1"):
        # Kernels are stored [out, in], as torch.nn.Linear stores its weight.
        lin = torch.nn.Linear(*p[name]["kernel"].shape[::-1])
        lin.weight.data = torch.tensor(np.asarray(p[name]["kernel"]))
        lin.bias.data = torch.tensor(np.asarray(p[name]["bias"]))
        layers += [lin, torch.nn.Dropout(0.3), torch.nn.ReLU()]
    head = torch.nn.Linear(*p["head"]["kernel"].shape[::-1])
    head.weight.data = torch.tensor(np.asarray(p["head"]["kernel"]))
    head.bias.data = torch.tensor(np.asarray(p["head"]["bias"]))
    return torch.nn.Sequential(*layers, head).eval()


def test_logits_match_torch_and_dropout_only_in_training():
    model, params, x, *_ = _setup()
    logits = model.apply(params, x)
    ref = _torch_mlp(params)(torch.tensor(np.asarray(x))).detach().numpy()
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-6)
    a = model.apply(params, x, train=True, rngs={"dropout": jax.random.key(2)})
    b = model.apply(params, x, train=True, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(a, b) and not np.allclose(a, logits)
    assert jax.tree.map(jnp.shape, params["params"]["hidden_1"]) == {"bias": (5,), "kernel": (5, 8)}


def test_sigmoid_loss_matches_torch_bce_over_seen_classes():
    model, params, x, targets, weights, mask = _setup()
    logits = model.apply(params, x)
    loss = classification_loss(logits, targets, weights, mask, "sigmoid")
    lt = torch.tensor(np.asarray(logits))[:, mask]
    per_ex = torch.nn.functional.binary_cross_entropy_with_logits(
        lt, torch.tensor(targets)[:, mask], reduction="none").mean(1).numpy()
    np.testing.assert_allclose(loss, (weights * per_ex).sum() / weights.sum(), rtol=1e-6)


def test_softmax_loss_matches_torch_ce_renormalised():
    model, params, x, targets, weights, mask = _setup()
    logits = model.apply(params, x)
    loss = classification_loss(logits, targets, weights, mask, "softmax")
    t = targets[:, mask] / targets[:, mask].sum(1, keepdims=True)
    per_ex = torch.nn.functional.cross_entropy(
        torch.tensor(np.asarray(logits))[:, mask], torch.tensor(t), reduction="none").numpy()
    np.testing.assert_allclose(loss, (weights * per_ex).sum() / weights.sum(), rtol=1e-5)
    p = probabilities(logits, "softmax", mask)
    np.testing.assert_allclose(np.asarray(p)[:, mask].sum(1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("head", ["sigmoid", "softmax"])
def test_unseen_classes_and_zero_weight_rows_get_no_gradient(head):
    model, params, x, targets, weights, mask = _setup()

    def loss_of_logits(logits):
        return classification_loss(logits, targets, weights, mask, head)

    g = jax.grad(loss_of_logits)(model.apply(params, x))
    chex.assert_tree_all_finite(g)
    assert np.all(np.asarray(g)[:, ~mask] == 0)
    assert np.all(np.asarray(g)[weights == 0] == 0)
    assert np.abs(np.asarray(g)[weights > 0][:, mask]).min() > 0


def test_unknown_head():
    with pytest.raises(ValueError, match="unknown head"):
        classification_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.ones(2),
                            jnp.ones(3, bool), "tanh")


def test_manifold_mixup_mixes_the_first_hidden_layer_as_torch_does():
    model, params, x, *_ = _setup()
    x_b = jax.random.normal(jax.random.key(9), x.shape)
    lam_a = jax.random.uniform(jax.random.key(10), (x.shape[0], 1))
    got = model.apply(params, x, mix_with=x_b, mix_weights=(lam_a, 1 - lam_a))
    net = _torch_mlp(params)
    with torch.no_grad():
        h_a = net[2](net[0](torch.tensor(np.asarray(x))))  # Linear -> (Dropout, eval) -> ReLU
        h_b = net[2](net[0](torch.tensor(np.asarray(x_b))))
        lam = torch.tensor(np.asarray(lam_a))
        want = net[3:](lam * h_a + (1 - lam) * h_b).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Weights (1, 0) give the unmixed network; in training each parent gets its own dropout.
    plain = model.apply(params, x, mix_with=x_b, mix_weights=(jnp.ones_like(lam_a),
                                                             jnp.zeros_like(lam_a)))
    np.testing.assert_allclose(plain, model.apply(params, x), rtol=1e-6, atol=1e-6)
    # In training the second parents draw their own dropout ("dropout_b"): weights (1, 0) give
    # exactly the unmixed network's training output.
    rngs = {"dropout": jax.random.key(3), "dropout_b": jax.random.key(4)}
    alone = model.apply(params, x, train=True, rngs={"dropout": jax.random.key(3)})
    ones = (jnp.ones_like(lam_a), jnp.zeros_like(lam_a))
    np.testing.assert_array_equal(
        model.apply(params, x, mix_with=x_b, mix_weights=ones, train=True, rngs=rngs), alone)
    mixed = model.apply(params, x, mix_with=x, mix_weights=(lam_a, 1 - lam_a), train=True,
                        rngs=rngs)
    assert not np.allclose(mixed, alone)  # the same input, dropped out twice differently


def test_linear_holds_what_flax_dense_draws_transposed():
    # Same key and module name: the [out, in] kernel is nn.Dense's [in, out] kernel, transposed,
    # and the layer computes the same function.
    import flax.linen as nn

    from embaug_jax.train.mlp import Linear

    x = jax.random.normal(jax.random.key(0), (3, 11))
    dense = nn.Dense(4, name="hidden_0")
    lin = Linear(4, name="hidden_0")
    pd, pl = dense.init(jax.random.key(5), x), lin.init(jax.random.key(5), x)
    np.testing.assert_array_equal(pl["params"]["kernel"], pd["params"]["kernel"].T)
    np.testing.assert_array_equal(pl["params"]["bias"], pd["params"]["bias"])
    pd = jax.tree.map(lambda a: a + 0.1, pd)  # a non-zero bias too
    pl = {"params": {"kernel": pd["params"]["kernel"].T, "bias": pd["params"]["bias"]}}
    np.testing.assert_allclose(lin.apply(pl, x), dense.apply(pd, x), rtol=1e-6, atol=1e-6)
