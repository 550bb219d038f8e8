"""EfficientNet B0-B7 and Lite0-4 in Flax Linen, image preprocessing, and `ImageEmbedder`.

The paper (section 3.2) embeds each product image as the global average pool of the last
convolutional layer of EfficientNet-B4 (1792 values). The model here reproduces the reference
implementations (Keras applications, efficientnet-pytorch, timm, efficientnet-lite-pytorch) on
their converted weights; `embaug_jax.embed.convert` writes those weights to safetensors.

Weights' origin decides three numerical details, all recorded in the converted file's metadata:
  * padding: "tf" (TensorFlow "SAME": asymmetric for stride 2, what Keras, efficientnet-pytorch
    and timm's `tf_` models were trained with) or "symmetric" (k // 2 each side: timm's native
    PyTorch-trained models);
  * batch-norm epsilon: 1e-3 for TF-trained weights, 1e-5 for PyTorch-trained ones;
  * input normalisation: per-channel `(pixel - mean) / std` on 0..255 pixel values.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from embaug_jax.embed.images import (
    decode_image,
    normalize,
    resize_center_crop,
)

# ---------------------------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------------------------

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

# 0..255 pixel statistics. Keras builds its own (ImageNet) normalisation into the model and the
# converter reads it from the file; these are the defaults for the other origins.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# TF's EfficientNet-Lite (and so the ported Lite weights) scales pixels to [-1, 1).
LITE_MEAN = (127.0, 127.0, 127.0)
LITE_STD = (128.0, 128.0, 128.0)


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
    variant = _check_variant(variant)
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


def _check_variant(variant: str) -> str:
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


# ---------------------------------------------------------------------------------------------
# ImageEmbedder
# ---------------------------------------------------------------------------------------------

ORIGINS = ("keras", "pytorch", "timm", "timm_tf", "lite")


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    """What a converted file says about its weights (safetensors metadata, all strings)."""

    variant: str
    origin: str  # "keras" | "pytorch" | "timm" | "timm_tf" | "lite" | "random"
    padding: str
    bn_epsilon: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_metadata(self) -> dict[str, str]:
        return {"format": "embaug_jax.efficientnet/1", "variant": self.variant,
                "origin": self.origin, "padding": self.padding,
                "bn_epsilon": repr(self.bn_epsilon),
                "mean": json.dumps(list(self.mean)), "std": json.dumps(list(self.std))}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], *, source: str = "weights") -> "WeightsInfo":
        missing = [k for k in ("variant", "origin", "padding", "bn_epsilon", "mean", "std")
                   if k not in meta]
        if missing:
            raise ValueError(
                f"{source} lacks metadata {missing}; it was not written by "
                "`embaug convert efficientnet` -- convert the original checkpoint first")
        return cls(variant=_check_variant(meta["variant"]), origin=meta["origin"],
                   padding=meta["padding"], bn_epsilon=float(meta["bn_epsilon"]),
                   mean=tuple(json.loads(meta["mean"])), std=tuple(json.loads(meta["std"])))


def default_weights_info(variant: str, origin: str) -> WeightsInfo:
    """Padding, epsilon and normalisation conventional for weights of `origin`."""
    variant = _check_variant(variant)
    if origin == "lite" or (origin == "pytorch" and variant.startswith("lite")):
        return WeightsInfo(variant, "lite", "tf", 1e-3, LITE_MEAN, LITE_STD)
    if origin in ("keras", "pytorch", "timm_tf", "random"):
        # efficientnet-pytorch's weights are TF ports: TF padding and epsilon, ImageNet stats.
        return WeightsInfo(variant, origin, "tf", 1e-3, IMAGENET_MEAN, IMAGENET_STD)
    if origin == "timm":
        return WeightsInfo(variant, origin, "symmetric", 1e-5, IMAGENET_MEAN, IMAGENET_STD)
    raise ValueError(f"unknown weights origin {origin!r}; choose one of {ORIGINS}")


@functools.lru_cache(maxsize=None)
def _compiled_forward(arch: Architecture, padding: str, bn_epsilon: float, depthwise: str,
                      dtype: str, mean: tuple[float, ...], std: tuple[float, ...]):
    """One jitted uint8 -> features program per setting, shared by every embedder using it."""
    model = EfficientNet(arch, padding=padding, bn_epsilon=bn_epsilon, depthwise=depthwise,
                         dtype=jnp.dtype(dtype))

    def forward(variables, images):
        return model.apply(variables, normalize(images, mean, std, jnp.dtype(dtype)))

    return jax.jit(forward)


class ImageEmbedder:
    """Images -> pooled EfficientNet features, batched and sharded across devices.

    Build with `from_pretrained(converted.safetensors)` or `random(variant)`; call `embed`.
    """

    def __init__(self, variables: dict, info: WeightsInfo, *, dtype: str = "float32",
                 batch_size: int = 16, devices: Sequence[jax.Device] | None = None,
                 depthwise: str = "auto", weights_path: str | os.PathLike | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
        if info.padding not in PADDINGS:
            raise ValueError(f"unknown padding {info.padding!r}; choose one of {PADDINGS}")
        self.info = info
        self.arch = architecture(info.variant)
        self.dtype = dtype
        self.depthwise = resolve_depthwise_impl(depthwise)
        self.devices = list(devices) if devices is not None else jax.local_devices()[:1]
        if not self.devices:
            raise ValueError("devices is empty")
        n_dev = len(self.devices)
        # Every device gets the same share, so the global batch is a multiple of their count.
        self.batch_size = -(-batch_size // n_dev) * n_dev
        self.weights_path = Path(weights_path) if weights_path is not None else None
        from embaug_jax.embed.weights import merge_strict
        variables = merge_strict(expected_variables(self.arch),
                                 traverse_util.flatten_dict(variables, sep="/"),
                                 source=str(weights_path or "variables"))
        self.mesh = jax.sharding.Mesh(np.array(self.devices), ("batch",))
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        self._data_sharding = jax.sharding.NamedSharding(
            self.mesh, jax.sharding.PartitionSpec("batch"))
        self.variables = jax.device_put(variables, replicated)
        self._forward = _compiled_forward(self.arch, info.padding, info.bn_epsilon,
                                          self.depthwise, dtype, tuple(info.mean),
                                          tuple(info.std))

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, variant: str | None = "b4",
                        origin: str | None = None, dtype: str = "float32",
                        batch_size: int = 16, devices: Sequence[jax.Device] | None = None,
                        depthwise: str = "auto") -> "ImageEmbedder":
        """Loads a safetensors file written by `embaug convert efficientnet`.

        Args:
          path: the converted `.safetensors` file.
          variant: expected variant; None accepts the file's. A mismatch is an error.
          origin: None reads padding/epsilon/normalisation from the file's metadata; a name
            ("keras", "pytorch", "timm", "timm_tf", "lite") imposes that origin's conventions
            (use for safetensors written elsewhere in this module's naming).
        """
        from embaug_jax.embed.weights import load_safetensors

        path = Path(path)
        flat, meta = load_safetensors(path)
        if origin is None:
            info = WeightsInfo.from_metadata(meta, source=str(path))
        else:
            file_variant = meta.get("variant", variant)
            if file_variant is None:
                raise ValueError(f"{path} names no variant; pass variant=")
            info = default_weights_info(file_variant, origin)
        if variant is not None and _check_variant(variant) != info.variant:
            raise ValueError(f"{path} holds EfficientNet-{info.variant} weights but variant="
                             f"{variant!r} was asked for; pass variant={info.variant!r} or None")
        return cls(traverse_util.unflatten_dict(flat, sep="/"), info, dtype=dtype,
                   batch_size=batch_size, devices=devices, depthwise=depthwise, weights_path=path)

    @classmethod
    def random(cls, variant: str = "b0", seed: int = 0, *, origin: str = "pytorch",
               **kwargs: Any) -> "ImageEmbedder":
        """Randomly initialised weights (batch-norm statistics randomised too): tests, benches."""
        info = dataclasses.replace(default_weights_info(variant, origin), origin="random")
        variables = init_variables(architecture(variant), seed, randomize_stats=True)
        embedder = cls(variables, info, **kwargs)
        embedder._random_seed = seed
        return embedder

    # -- properties ---------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.arch.head_filters

    @property
    def resolution(self) -> int:
        return self.arch.resolution

    def fingerprint(self) -> str:
        """sha256 over the weights file and every setting that changes the features."""
        from embaug_jax.embed.weights import hash_files

        settings = dict(self.info.to_metadata(), dtype=self.dtype,
                        resolution=self.resolution, resize="center-square-crop+bicubic")
        if self.weights_path is not None:
            settings["weights"] = hash_files([self.weights_path])
        else:
            settings["random_seed"] = getattr(self, "_random_seed", None)
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    # -- embedding ----------------------------------------------------------------------------

    def preprocess(self, images: Any) -> np.ndarray:
        """Images (uint8 [N, H, W, 3], or a sequence of paths / bytes / arrays) -> uint8
        [N, R, R, 3] at this variant's resolution."""
        r = self.resolution
        if isinstance(images, np.ndarray) or isinstance(images, jax.Array):
            arr = np.asarray(images)
            if arr.ndim != 4 or arr.shape[-1] != 3:
                raise ValueError(f"expected uint8 images [N, H, W, 3], got shape {arr.shape}")
            if arr.dtype != np.uint8:
                raise ValueError(f"expected uint8 images (0..255), got dtype {arr.dtype}; "
                                 "convert with np.clip(x, 0, 255).astype(np.uint8)")
            if arr.shape[1:3] == (r, r):
                return arr
            return np.stack([resize_center_crop(a, r) for a in arr]) if len(arr) else \
                np.zeros((0, r, r, 3), np.uint8)
        out = []
        for item in images:
            if isinstance(item, (str, os.PathLike, bytes, bytearray)):
                item = decode_image(item)
            out.append(resize_center_crop(np.asarray(item), r))
        return np.stack(out) if out else np.zeros((0, r, r, 3), np.uint8)

    def embed(self, images: Any, *, progress: bool = False) -> np.ndarray:
        """Pooled features float32 [N, dim] of uint8 images [N, H, W, 3] or paths/arrays.

        Images are preprocessed batch by batch (so a long list of paths is never decoded all
        at once); the last batch is padded to the compiled batch size.
        """
        from tqdm.auto import tqdm

        is_array = isinstance(images, (np.ndarray, jax.Array))
        if not is_array:
            images = list(images)
        n = len(images)
        out = np.zeros((n, self.dim), np.float32)
        bs = self.batch_size
        for start in tqdm(range(0, n, bs), disable=not progress, desc="embedding images",
                          unit="batch"):
            batch = self.preprocess(images[start:start + bs])
            m = len(batch)
            if m < bs:
                batch = np.concatenate([batch, np.zeros((bs - m,) + batch.shape[1:], np.uint8)])
            x = jax.device_put(batch, self._data_sharding)
            out[start:start + m] = np.asarray(self._forward(self.variables, x))[:m]
        if not np.all(np.isfinite(out)):
            raise ValueError("the model produced non-finite features; check the weights file")
        return out
