"""The paper's downstream classifier (sec. 3.3) and its loss over a split's seen classes."""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

HEADS = ("sigmoid", "softmax")


def _transposed(init):
    """`init` drawn for the transposed shape, then transposed: the same numbers `nn.Dense` would
    hold for the same key and name, stored [out, in]."""
    def transposed_init(key, shape, dtype=jnp.float32):
        return init(key, shape[::-1], dtype).T
    return transposed_init


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _summed_over(x, axis: str):
    """`lax.psum(x, axis)` for a sum whose every consumer is replicated over `axis`: each
    device's share then receives the whole cotangent, which a psum's transpose (another psum)
    would count once per device."""
    return jax.lax.psum(x, axis)


def _summed_fwd(x, axis):
    return jax.lax.psum(x, axis), None


def _summed_bwd(axis, _, g):
    return (g,)


_summed_over.defvjp(_summed_fwd, _summed_bwd)


class Linear(nn.Module):
    """`x @ kernel.T + bias` with the kernel stored [out, in], as `torch.nn.Linear` stores it.

    `nn.Dense` stores [in, out]. The kernel's gradient, `dy.T @ x`, comes out of XLA:CPU's
    matmul as [out, in], and with an [in, out] kernel every AdamW step transposes the first
    layer's 1.2M-element gradient inside its moment updates, strided reads that cost more than
    the update itself (a step at the paper's shapes: 6.2 -> 4.9 ms, benchmarks/README.md,
    section "train"). Initialised to exactly what `nn.Dense` draws (LeCun normal, zero bias).

    With `sum_over`, the name of a mapped axis, x and the kernel hold one device's block of the
    input features: the partial products are summed over the axis (`_summed_over`) before the
    bias, so every device gets the whole layer's output.
    """

    features: int
    sum_over: str | None = None

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", _transposed(nn.initializers.lecun_normal()),
                            (self.features, x.shape[-1]))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        y = jax.lax.dot_general(x, kernel.astype(x.dtype), (((x.ndim - 1,), (1,)), ((), ())))
        if self.sum_over is not None:
            y = _summed_over(y, self.sum_over)
        return y + bias.astype(y.dtype)


class Dropout(nn.Module):
    """Inverted dropout at a rate given per call, which may be traced (a sweep member's).

    `nn.Dropout` holds its rate as a module field and branches on it in Python; here the rate is
    an argument and nothing branches on a traced one, so members with different rates share one
    compiled program (a traced rate of 0 keeps every element, after a draw). For the same rate,
    rng and module path (this class keeps `nn.Dropout`'s auto-names, "Dropout_0", ...) the
    numbers are `nn.Dropout`'s.
    """

    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x, rate, *, deterministic: bool):
        if deterministic or (isinstance(rate, (int, float)) and rate == 0):
            return x
        keep = 1.0 - jnp.asarray(rate, jnp.float32)
        mask = jax.random.bernoulli(self.make_rng(self.rng_collection), keep, x.shape)
        return jax.lax.select(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))


class MLP(nn.Module):
    """Fully connected classifier: each hidden Dense -> Dropout -> ReLU, then a Dense to logits.

    The paper's order (Dense, Dropout(0.3), ReLU) is kept; for ReLU with inverted dropout the
    order does not change the function, only which zeros the mask hits.
    `head` only records how logits become probabilities (`probabilities`) and which loss
    applies (`classification_loss`); the network itself returns logits.
    """

    num_classes: int
    hidden: Sequence[int] = (250, 250)
    dropout: float = 0.3
    head: str = "sigmoid"

    @property
    def first_layer(self) -> str:
        """The name of the layer that reads the input (its kernel's columns are the input's)."""
        return "hidden_0" if self.hidden else "head"

    @nn.compact
    def __call__(self, x, *, train: bool = False, dropout=None, mix_with=None,
                 mix_weights=None, features_axis: str | None = None):
        """Logits [B, C]. With `mix_with` ([B, D] second parents) and `mix_weights` ((lam_a,
        lam_b), each [B, 1]), the first hidden layer's output is mixed, lam_a h(x) + lam_b
        h(mix_with), before the rest of the network: manifold mixup (`augment.manifold_mixup`).

        `dropout` is this call's rate, a number or a traced scalar (a sweep member's; default
        the module's `dropout`). The second parents' dropout draws from the "dropout_b" rng
        collection, so the "dropout" stream -- and with weights (1, 0) the whole result -- is
        what it is without mixing.
        `features_axis`: the name of a mapped axis over whose devices the input's features are
        split (x [B, D / devices] and `first_layer`'s kernel columns: `Linear(sum_over=)`);
        everything after the first layer's sum is computed whole on every device.
        """
        rate = self.dropout if dropout is None else dropout
        mixing = mix_with is not None
        if mixing and not self.hidden:
            raise ValueError("manifold mixup needs a hidden layer to mix; the MLP has none.")
        for i, width in enumerate(self.hidden):
            dense = Linear(width, name=f"hidden_{i}", sum_over=None if i else features_axis)
            x = nn.relu(Dropout()(dense(x), rate, deterministic=not train))
            if mixing and i == 0:
                # Named, so the unnamed Dropouts keep their auto-names (and rng paths).
                h_b = Dropout(name="dropout_b", rng_collection="dropout_b")(
                    dense(mix_with), rate, deterministic=not train)
                lam_a, lam_b = (jnp.asarray(w, x.dtype) for w in mix_weights)
                x = lam_a * x + lam_b * nn.relu(h_b)
        return Linear(self.num_classes, name="head",
                      sum_over=None if self.hidden else features_axis)(x)


def probabilities(logits, head: str = "sigmoid", class_mask=None):
    """Sigmoid (element-wise, the paper's binomial output) or softmax over `class_mask` classes."""
    if head == "sigmoid":
        return jax.nn.sigmoid(logits)
    if head == "softmax":
        return jax.nn.softmax(logits, where=class_mask) if class_mask is not None else (
            jax.nn.softmax(logits))
    raise ValueError(f"unknown head {head!r}; choose one of {HEADS}.")


def classification_loss(logits, targets, weights, class_mask, head: str = "sigmoid"):
    """Mean loss over the examples of a batch, ignoring classes outside `class_mask`.

    Args:
      logits: float [B, C].
      targets: float [B, C] (soft) targets.
      weights: float [B] per-example weights (0 drops a row: the padding rows of halved batches).
      class_mask: bool [C] the split's seen classes; unseen classes get no loss and no gradient.
      head: "sigmoid": binary cross-entropy per class averaged over the seen classes (the paper);
        "softmax": cross-entropy against the targets renormalised over the seen classes.

    Returns:
      scalar sum_b w_b * loss_b / max(sum_b w_b, eps).
    """
    mask = class_mask.astype(logits.dtype)
    if head == "sigmoid":
        per_class = optax.sigmoid_binary_cross_entropy(logits, targets)
        per_example = (per_class * mask).sum(-1) / jnp.maximum(mask.sum(), 1.0)
    elif head == "softmax":
        t = targets * mask
        t = t / jnp.maximum(t.sum(-1, keepdims=True), 1e-12)
        log_p = jax.nn.log_softmax(logits, where=class_mask)
        per_example = -jnp.where(class_mask, t * log_p, 0.0).sum(-1)
    else:
        raise ValueError(f"unknown head {head!r}; choose one of {HEADS}.")
    weights = weights.astype(per_example.dtype)
    return (weights * per_example).sum() / jnp.maximum(weights.sum(), 1e-12)
