"""The inputs `check_augmentation` feeds a method, and what it reads back from the outputs.

The inputs are ones a checker can recognise, so a checked function keeps the plain signature
`fn(key, x, y, alpha, **kw) -> (x_out, y_out)`: row i of the batch carries the one-hot label of
class i, and at least one further class is held by no input row. An output row's labels then name
its parents (the input rows it was made from) and their weights, which is the lambda the method
reports. Softened labels are first unsoftened by the paper's rule (section 2.4); the class no
input holds is always a negative class, so it shows the share every negative class received.
"""

from __future__ import annotations

import dataclasses

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Example", "LABEL_TOL", "SHARE_TOL", "examples", "parent_weights"]

# The domain examples are drawn from. Few distinct shapes, because each new shape compiles the
# method again (the Beta sampler alone takes seconds of CPU); alpha, seed and scale cost nothing.
# An odd width exercises packed random bits, an odd batch a pairing's unpaired middle row; a
# width of 1 and a batch of 2 are the smallest cases.
BATCHES = {"half": (2, 8), "all": (3, 8)}
DIMS = (1, 7)
EXTRA_CLASSES = 2
SCALES = (1.0, 1e-3, 1e3)
ALPHA_RANGE = (0.05, 2.0)
# The one shape of the transformation checks (jit, vmap, grad), in their first dtype only: one
# compile per method. Its eager calls share the programs of the drawn examples of that shape.
TRANSFORM_SHAPE = (8, 7)
# Label entries are float32: row sums are compared to LABEL_TOL (absolute), and entries equal
# to the negative classes' share within SHARE_TOL are taken for negative classes.
LABEL_TOL = 1e-5
SHARE_TOL = 1e-6


@dataclasses.dataclass(frozen=True)
class Example:
    """One drawn input, rebuilt exactly by `inputs()`: a failure's example reproduces with

        key, x, y = example.inputs()
        x_out, y_out = fn(key, x, y, example.alpha)

    x is `scale` times standard normals from numpy's generator at `seed`, in `dtype`; y is
    float32, row i one-hot at class i of `classes` (batch + 2: two classes no input holds).
    """

    batch: int
    dim: int
    classes: int
    dtype: str
    alpha: float
    seed: int
    scale: float = 1.0

    def inputs(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(key, x [batch, dim], y [batch, classes]) of this example."""
        rng = np.random.default_rng(self.seed)
        x = (rng.standard_normal((self.batch, self.dim)) * self.scale).astype(np.float32)
        y = np.eye(self.batch, self.classes, dtype=np.float32)
        return jax.random.key(self.seed), jnp.asarray(x, self.dtype), jnp.asarray(y)

    def __str__(self) -> str:
        return (f"batch={self.batch}, dim={self.dim}, classes={self.classes}, dtype={self.dtype}, "
                f"alpha={self.alpha:.6g}, seed={self.seed}, scale={self.scale:g}")


@st.composite
def _examples(draw, batches, dims, dtypes):
    batch = draw(st.sampled_from(batches))
    return Example(
        batch=batch, dim=draw(st.sampled_from(dims)), classes=batch + EXTRA_CLASSES,
        dtype=draw(st.sampled_from(dtypes)), alpha=draw(st.floats(*ALPHA_RANGE)),
        seed=draw(st.integers(0, 2**32 - 1)), scale=draw(st.sampled_from(SCALES)))


def examples(rows: str | None, dtypes: tuple[str, ...], *, transform: bool = False):
    """The hypothesis strategy of `Example`s for a method with `rows` ("half" needs an even
    batch; None draws even batches too); `transform` fixes the shape to `TRANSFORM_SHAPE` and
    the dtype to the first of `dtypes`."""
    if transform:
        batch, dim = TRANSFORM_SHAPE
        return _examples((batch,), (dim,), dtypes[:1])
    return _examples(BATCHES["all" if rows == "all" else "half"], DIMS, dtypes)


def parent_weights(y_out, batch: int, label_mass, softness: float = 0.05) -> np.ndarray:
    """The weight of each input row in each output row, read from the output labels.

    Args:
      y_out: [R, C] output labels of inputs made by `Example.inputs` (row i = class i).
      batch: B, the number of input rows.
      label_mass: the declared row total (weights are the labels divided by it) or "soft".
      softness: what the softening subtracted from each positive class.
    Returns:
      W [R, B] float64; a mixing method's output rows should be W @ x (convex_mix).

    Undoing the softening: a negative class holds exactly the share of the class no input has;
    every other class was positive before softening. A positive class left above 0 had its
    entry + softness; one clamped to 0 had the rest of its row's mass (at most one per pair,
    since softness < 1/2 leaves the larger weight above it). Inconsistent rows are not fixed
    here: the label_mass check reports them.
    """
    y = np.asarray(y_out, np.float64)
    if label_mass != "soft":
        return y[:, :batch] / float(label_mass)
    share = y[:, batch:batch + 1]
    negative = np.abs(y - share) <= SHARE_TOL
    kept = ~negative & (y > SHARE_TOL)
    weights = np.where(kept, y + softness, 0.0)
    clamped = ~negative & ~kept
    single = clamped.sum(axis=1, keepdims=True) == 1
    weights = np.where(clamped & single, 1.0 - weights.sum(axis=1, keepdims=True), weights)
    return weights[:, :batch]
