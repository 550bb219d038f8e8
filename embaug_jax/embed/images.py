"""Images for the embedders: decoding files or bytes to RGB, resizing, per-channel normalisation."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class BadImageError(ValueError):
    """An image that is missing, unreadable or corrupt; the message names it."""


def decode_image(source: str | os.PathLike | bytes) -> np.ndarray:
    """Decodes a file (path) or encoded bytes into uint8 RGB [H, W, 3].

    Grayscale, palette, CMYK and alpha images are converted to RGB (alpha composited onto
    white, as a viewer shows it). Raises BadImageError naming the source if it cannot be read.
    """
    from PIL import Image, UnidentifiedImageError

    label = f"{len(source)} bytes" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        if isinstance(source, (bytes, bytearray)):
            handle = io.BytesIO(source)
        else:
            if not Path(source).is_file():
                raise BadImageError(f"image {label}: no such file")
            handle = source
        with Image.open(handle) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, img)
            img = img.convert("RGB")
            arr = np.asarray(img, dtype=np.uint8)
    except BadImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadImageError(f"image {label} could not be decoded: {e}") from e
    if arr.ndim != 3 or arr.shape[-1] != 3 or 0 in arr.shape:
        raise BadImageError(f"image {label} decoded to an unusable shape {arr.shape}")
    return arr


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Center-crops the largest square and resizes it to size x size (bicubic, antialiased).

    The same region as "resize the shorter side to `size`, then center-crop", resampled once
    instead of twice. Accepts uint8 [H, W, 3] or [H, W] (grayscale) arrays.
    """
    from PIL import Image

    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(image[top:top + side, left:left + side])
    return np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float],
              dtype: Any = jnp.float32) -> jax.Array:
    """uint8 (or float 0..255) [N, H, W, 3] -> (images - mean) / std per channel."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return ((images.astype(jnp.float32) - mean) / std).astype(dtype)
