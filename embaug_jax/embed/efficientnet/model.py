"""EfficientNet B0-B7 and Lite0-4 in Flax Linen: the architectures and the feature extractor.

The paper (section 3.2) embeds each product image as the global average pool of the last
convolutional layer of EfficientNet-B4 (1792 values). The model here reproduces the reference
implementations (Keras applications, efficientnet-pytorch, timm, efficientnet-lite-pytorch) on
their converted weights (`efficientnet.convert`).

Weights' origin decides three numerical details (`efficientnet.weights.WeightsInfo`):
  * padding: "tf" (TensorFlow "SAME": asymmetric for stride 2, what Keras, efficientnet-pytorch
    and timm's `tf_` models were trained with) or "symmetric" (k // 2 each side: timm's native
    PyTorch-trained models);
  * batch-norm epsilon: 1e-3 for TF-trained weights, 1e-5 for PyTorch-trained ones;
  * input normalisation: per-channel `(pixel - mean) / std` on 0..255 pixel values, applied by
    the embedder before the model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util


# (repeats, kernel, stride, expand_ratio, in_filters, out_filters) of the B0 stages; every
# variant scales these (EfficientNet paper, Table 1).
_B0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

# variant -> (width coefficient, depth coefficient, resolution), as the reference builders.
_COEFFICIENTS = {
    "b0": (1.0, 1.0, 224),
    "b1": (1.0, 1.1, 240),
    "b2": (1.1, 1.2, 260),
    "b3": (1.2, 1.4, 300),
    "b4": (1.4, 1.8, 380),
    "b5": (1.6, 2.2, 456),
    "b6": (1.8, 2.6, 528),
    "b7": (2.0, 3.1, 600),
    "lite0": (1.0, 1.0, 224),
    "lite1": (1.0, 1.1, 240),
    "lite2": (1.1, 1.2, 260),
    "lite3": (1.2, 1.4, 280),
    "lite4": (1.4, 1.8, 300),
}
VARIANTS = tuple(_COEFFICIENTS)

PADDINGS = ("tf", "symmetric")
DEPTHWISE_IMPLS = ("auto", "grouped", "shifted")


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channel count scaled by `width`, rounded to a multiple of `divisor` (never down > 10%)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One MBConv block: expand 1x1 -> depthwise kxk -> squeeze-excite -> project 1x1."""

    kernel: int
    stride: int
    expand_ratio: int
    in_filters: int
    out_filters: int
    se_filters: int  # 0: no squeeze-excitation

    @property
    def mid_filters(self) -> int:
        return self.in_filters * self.expand_ratio

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_filters == self.out_filters


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The shapes of one variant: stem width, stages of blocks, head width, activation."""

    variant: str
    resolution: int
    stem_filters: int
    stages: tuple[tuple[BlockSpec, ...], ...]
    head_filters: int
    activation: str  # "swish" | "relu6"

    @property
    def num_blocks(self) -> int:
        return sum(len(s) for s in self.stages)

    def blocks(self) -> list[tuple[int, int, BlockSpec]]:
        """[(stage index, index within stage, spec)] in execution order."""
        return [(s, b, spec) for s, stage in enumerate(self.stages) for b, spec in enumerate(stage)]


def architecture(variant: str) -> Architecture:
    """The compound-scaled architecture of `variant` ("b0".."b7", "lite0".."lite4")."""
    variant = check_variant(variant)
    width, depth, resolution = _COEFFICIENTS[variant]
    lite = variant.startswith("lite")
    stages = []
    for i, (repeats, kernel, stride, expand, fin, fout) in enumerate(_B0_STAGES):
        fin, fout = round_filters(fin, width), round_filters(fout, width)
        # Lite keeps the stem (and so the first block's input) and the first/last stage fixed.
        if lite and i == 0:
            fin = 32
        if not (lite and i in (0, len(_B0_STAGES) - 1)):
            repeats = round_repeats(repeats, depth)
        blocks = []
        for j in range(repeats):
            block_in = fin if j == 0 else fout
            se = 0 if lite else max(1, int(block_in * 0.25))
            blocks.append(BlockSpec(kernel, stride if j == 0 else 1, expand, block_in, fout, se))
        stages.append(tuple(blocks))
    return Architecture(
        variant=variant,
        resolution=resolution,
        stem_filters=32 if lite else round_filters(32, width),
        stages=tuple(stages),
        head_filters=1280 if lite else round_filters(1280, width),
        activation="relu6" if lite else "swish",
    )


def check_variant(variant: str) -> str:
    """The variant's canonical name ("b4" for "EfficientNet-B4" or "efficientnet_b4"); a
    ValueError naming the known variants for anything else."""
    v = str(variant).lower().removeprefix("efficientnet").strip("-_")
    if v not in _COEFFICIENTS:
        raise ValueError(f"unknown EfficientNet variant {variant!r}; choose one of {VARIANTS}")
    return v


def resolve_depthwise_impl(impl: str) -> str:
    """'auto' -> the faster depthwise formulation on the default backend (see the benchmark).

    XLA:CPU lowers `feature_group_count=C` convolutions to a slow generic loop, while k*k
    strided slices times per-channel weights fuse into one vectorised loop; on GPU cuDNN's
    depthwise kernels win.
    """
    if impl not in DEPTHWISE_IMPLS:
        raise ValueError(f"unknown depthwise implementation {impl!r}; choose one of "
                         f"{DEPTHWISE_IMPLS}")
    if impl == "auto":
        return "shifted" if jax.default_backend() == "cpu" else "grouped"
    return impl


def _conv_pads(size: Sequence[int], kernel: int, stride: int, padding: str
               ) -> tuple[tuple[int, int], ...]:
    """Per spatial dim (lo, hi) zero padding for a kxk conv of `stride`."""
    if padding == "symmetric":
        return tuple((kernel // 2, kernel // 2) for _ in size)
    pads = []
    for n in size:  # TensorFlow "SAME": output ceil(n / stride), the odd pixel padded at the end
        out = -(-n // stride)
        total = max((out - 1) * stride + kernel - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


class DepthwiseConv(nn.Module):
    """Depthwise kxk convolution, kernel [k, k, 1, C] (HWIO with one input per group)."""

    kernel_size: int
    stride: int
    padding: str = "tf"
    impl: str = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, c = self.kernel_size, self.stride, x.shape[-1]
        kernel = self.param("kernel", nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                            (k, k, 1, c), jnp.float32).astype(self.dtype)
        x = x.astype(self.dtype)
        pads = _conv_pads(x.shape[1:3], k, s, self.padding)
        if resolve_depthwise_impl(self.impl) == "grouped":
            return jax.lax.conv_general_dilated(
                x, kernel, (s, s), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=c)
        xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
        out_h = (xp.shape[1] - k) // s + 1
        out_w = (xp.shape[2] - k) // s + 1
        out = None
        for i in range(k):
            for j in range(k):
                tap = jax.lax.slice(
                    xp, (0, i, j, 0), (xp.shape[0], i + (out_h - 1) * s + 1,
                                       j + (out_w - 1) * s + 1, c), (1, s, s, 1))
                term = tap * kernel[i, j, 0]
                out = term if out is None else out + term
        return out


class PointwiseConv(nn.Module):
    """1x1 convolution, kernel [1, 1, Cin, Cout] like nn.Conv's, computed as a matmul.

    XLA:CPU runs a [N*H*W, Cin] x [Cin, Cout] dot several times faster than the equivalent
    convolution (benchmarks/image_bench.py); on GPU both lower to the same kernels.
    """

    features: int
    use_bias: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (1, 1, x.shape[-1], self.features), jnp.float32)
        y = jnp.einsum("...c,co->...o", x.astype(self.dtype), kernel[0, 0].astype(self.dtype))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,),
                               jnp.float32).astype(self.dtype)
        return y


class _ConvBN(nn.Module):
    """Bias-free conv, inference batch norm, optional activation."""

    filters: int
    kernel_size: int = 1
    stride: int = 1
    padding: str = "tf"
    activation: str | None = None
    bn_epsilon: float = 1e-3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        if k == 1 and self.stride == 1:
            x = PointwiseConv(self.filters, dtype=self.dtype, name="conv")(x)
        else:
            pads = _conv_pads(x.shape[1:3], k, self.stride, self.padding)
            x = nn.Conv(self.filters, (k, k), (self.stride, self.stride), padding=pads,
                        use_bias=False, dtype=self.dtype, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=self.bn_epsilon, dtype=self.dtype,
                         name="bn")(x)
        return _activate(x, self.activation)


def _activate(x: jax.Array, activation: str | None) -> jax.Array:
    if activation is None:
        return x
    if activation == "swish":
        return nn.swish(x)
    if activation == "relu6":
        return jnp.clip(x, 0, 6)
    raise ValueError(f"unknown activation {activation!r}")


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation (inference: no drop-connect)."""

    spec: BlockSpec
    activation: str = "swish"
    padding: str = "tf"
    bn_epsilon: float = 1e-3
    depthwise: str = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        spec, act = self.spec, self.activation
        bn = functools.partial(nn.BatchNorm, use_running_average=True, epsilon=self.bn_epsilon,
                               dtype=self.dtype)
        x = inputs
        if spec.expand_ratio != 1:
            x = PointwiseConv(spec.mid_filters, dtype=self.dtype, name="expand_conv")(x)
            x = _activate(bn(name="expand_bn")(x), act)
        x = DepthwiseConv(spec.kernel, spec.stride, self.padding, self.depthwise, self.dtype,
                          name="dw_conv")(x)
        x = _activate(bn(name="dw_bn")(x), act)
        if spec.se_filters:
            s = jnp.mean(x, axis=(1, 2), keepdims=True)
            s = _activate(PointwiseConv(spec.se_filters, True, self.dtype, name="se_reduce")(s), act)
            s = PointwiseConv(spec.mid_filters, True, self.dtype, name="se_expand")(s)
            x = x * nn.sigmoid(s)
        x = PointwiseConv(spec.out_filters, dtype=self.dtype, name="project_conv")(x)
        x = bn(name="project_bn")(x)
        return x + inputs if spec.residual else x


class EfficientNet(nn.Module):
    """EfficientNet feature extractor: normalised NHWC images -> pooled last-conv features.

    Attributes:
      arch: `architecture(variant)`.
      padding: "tf" or "symmetric" (see the module docstring).
      bn_epsilon: batch-norm epsilon of the weights' origin.
      depthwise: "auto", "grouped" (feature_group_count conv) or "shifted" (k*k multiply-adds).
      dtype: computation dtype; parameters stay float32 and the pooled output is float32.
    """

    arch: Architecture
    padding: str = "tf"
    bn_epsilon: float = 1e-3
    depthwise: str = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.padding not in PADDINGS:
            raise ValueError(f"unknown padding {self.padding!r}; choose one of {PADDINGS}")
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected images [N, H, W, 3], got shape {x.shape}")
        arch = self.arch
        common = dict(padding=self.padding, bn_epsilon=self.bn_epsilon, dtype=self.dtype)
        x = _ConvBN(arch.stem_filters, 3, 2, activation=arch.activation, name="stem",
                    **common)(x.astype(self.dtype))
        for s, b, spec in arch.blocks():
            x = MBConv(spec, arch.activation, depthwise=self.depthwise, name=f"block{s}_{b}",
                       **common)(x)
        x = _ConvBN(arch.head_filters, 1, activation=arch.activation, name="head", **common)(x)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def init_variables(arch: Architecture, seed: int = 0, *, randomize_stats: bool = False
                   ) -> dict:
    """Random variables {"params", "batch_stats"} as numpy arrays, without compiling anything.

    Kernels are He-normal (fan-in), biases zero, batch norms identity. With `randomize_stats`,
    batch-norm scales, shifts and statistics and the biases are drawn away from those values,
    so tests and benchmarks exercise every leaf.
    """
    rng = np.random.default_rng(seed)
    flat = {}
    for path, leaf in traverse_util.flatten_dict(expected_variables(arch), sep="/").items():
        shape, dtype = leaf.shape, leaf.dtype
        name = path.rsplit("/", 1)[-1]
        if name == "kernel":  # [kh, kw, in (per group), out]: fan-in is all but the last axis
            value = rng.normal(0, np.sqrt(2.0 / max(1, math.prod(shape[:-1]))), shape)
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, shape) if randomize_stats else np.ones(shape)
        else:  # bias, mean
            value = rng.normal(0, 0.1, shape) if randomize_stats else np.zeros(shape)
        flat[path] = value.astype(dtype)
    return traverse_util.unflatten_dict(flat, sep="/")


def expected_variables(arch: Architecture) -> dict:
    """The variable tree (shapes and dtypes only) for `arch`, without computing anything."""
    model = EfficientNet(arch)
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32))
