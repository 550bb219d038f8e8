"""Tests for embaug_jax.embed.images: decoding to RGB, errors that name the source, resizing."""

import io

import numpy as np
import pytest
from PIL import Image

from embaug_jax.embed import images


# --- preprocessing ------------------------------------------------------------------------


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "RGB", "LA"])
def test_decode_image_converts_modes_to_rgb(mode, tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    img = rgb.convert(mode)
    path = tmp_path / "img.png"
    img.save(path)
    arr = images.decode_image(path)
    assert arr.shape == (8, 8, 3) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr, images.decode_image(path.read_bytes()))
    if mode in ("L", "RGB"):
        np.testing.assert_array_equal(arr, np.asarray(img.convert("RGB")))


def test_decode_image_alpha_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    arr = images.decode_image(_encode(Image.fromarray(rgba, "RGBA")))
    assert np.all(arr == 255)


def test_decode_image_errors_name_the_source(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(images.BadImageError, match="nope.jpg"):
        images.decode_image(missing)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(_encode(Image.new("RGB", (16, 16)), "JPEG")[:40])
    with pytest.raises(images.BadImageError, match="corrupt.jpg"):
        images.decode_image(corrupt)
    with pytest.raises(ValueError, match="bytes"):  # BadImageError is a ValueError
        images.decode_image(b"not an image")


def test_resize_center_crop_keeps_the_center():
    img = np.zeros((40, 100, 3), np.uint8)
    img[:, :30] = 255  # a left band the center crop must cut away
    img[:, 30:70] = 100
    out = images.resize_center_crop(img, 20)
    assert out.shape == (20, 20, 3)
    assert np.all(out == 100)
    gray = images.resize_center_crop(np.full((10, 10), 7, np.uint8), 10)
    assert gray.shape == (10, 10, 3) and np.all(gray == 7)
