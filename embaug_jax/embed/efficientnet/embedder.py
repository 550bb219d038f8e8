"""`ImageEmbedder`: images -> pooled EfficientNet features, batched and sharded across devices.

Images are decoded, center-cropped and resized to the variant's resolution on the host
(`embed.images`), normalised with the weights' own mean and std, and run through
`efficientnet.model.EfficientNet` in one compiled program per setting.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from embaug_jax import interrupt
from embaug_jax.embed.efficientnet.convert import convert_checkpoint
from embaug_jax.embed.efficientnet.model import (
    PADDINGS,
    Architecture,
    EfficientNet,
    architecture,
    check_variant,
    expected_variables,
    init_variables,
    resolve_depthwise_impl,
)
from embaug_jax.embed.efficientnet.weights import WeightsInfo, default_weights_info
from embaug_jax.embed.images import decode_image, normalize, resize_center_crop
from embaug_jax.embed.weights import hash_files, load_safetensors, merge_strict


def _in_package_naming(path: Path) -> bool:
    """Whether `path` is a safetensors file in this package's naming ("params/...") rather than a
    checkpoint for the converters (Keras, PyTorch, timm)."""
    if path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return "padding" in (f.metadata() or {}) or any(
                k.startswith(("params/", "batch_stats/")) for k in f.keys())
    except Exception:  # a corrupt file: load_safetensors names it
        return True


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
        """Loads EfficientNet weights: converted safetensors, or any checkpoint the converters read.

        Args:
          path: a `.safetensors` file written by `embaug convert efficientnet`; or a checkpoint
            that is converted in memory on every load (`embaug convert` once saves the time):
            Keras `.h5` / `.keras`, efficientnet-pytorch or -lite `.pth` / `.pt` / `.bin`, timm
            `.safetensors` or `.pth`.
          variant: expected variant; None accepts the file's. A mismatch is an error.
          origin: for a converted file, None reads padding/epsilon/normalisation from its
            metadata; a name ("keras", "pytorch", "timm", "timm_tf", "lite") imposes that
            origin's conventions (use for safetensors written elsewhere in this package's naming).
            For a checkpoint, where its weights come from (None guesses from the file, as
            `embaug convert` does).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no EfficientNet weights at {path}")
        if not _in_package_naming(path):
            flat, info = convert_checkpoint(path, origin=origin, variant=variant)
        else:
            flat, meta = load_safetensors(path)
            if origin is None:
                info = WeightsInfo.from_metadata(meta, source=str(path))
            else:
                file_variant = meta.get("variant", variant)
                if file_variant is None:
                    raise ValueError(f"{path} names no variant; pass variant=")
                info = default_weights_info(file_variant, origin)
        if variant is not None and check_variant(variant) != info.variant:
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

    def embed(self, images: Any, *, progress: bool = False,
              on_batch: Callable[[int], Any] | None = None) -> np.ndarray:
        """Pooled features float32 [N, dim] of uint8 images [N, H, W, 3] or paths/arrays.

        Images are preprocessed batch by batch (so a long list of paths is never decoded all
        at once); the last batch is padded to the compiled batch size. `on_batch(n)` is called
        as each batch of n images is done (a caller's progress bar).
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
            if on_batch is not None:
                on_batch(m)
            interrupt.check()
        if not np.all(np.isfinite(out)):
            raise ValueError("the model produced non-finite features; check the weights file")
        return out
