"""Decoding the image files real folders hold, built here with Pillow."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from featcache.decode import ResizeSpec, decode_bytes, read_image
from featcache.errors import BadImageError, UsageError

SPEC = ResizeSpec((16, 16))
RED = (220, 20, 30)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def mean_color(arr: np.ndarray) -> np.ndarray:
    assert arr.shape == (16, 16, 3) and arr.dtype == np.uint8
    return arr.reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("fmt,kw", [("JPEG", {"quality": 95}), ("PNG", {}), ("BMP", {}),
                                    ("WEBP", {"lossless": True}), ("TIFF", {}), ("GIF", {})])
def test_common_formats_decode_to_rgb_at_size(fmt, kw):
    arr = decode_bytes(encode(Image.new("RGB", (50, 30), RED), fmt, **kw), SPEC)
    np.testing.assert_allclose(mean_color(arr), RED, atol=6)


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("RGB", (20, 20), RED).convert("CMYK")
    arr = decode_bytes(encode(cmyk, "JPEG", quality=95), SPEC)
    np.testing.assert_allclose(mean_color(arr), RED, atol=12)


def test_grayscale_is_replicated_to_three_channels():
    arr = decode_bytes(encode(Image.new("L", (20, 20), 77), "PNG"), SPEC)
    assert (arr == 77).all()


def test_16_bit_png_is_scaled_not_clipped():
    data = np.full((8, 8), 32896, dtype=np.uint16)  # 32896 / 257 = 128
    data[:4] = 65535
    img = Image.fromarray(data)
    assert img.mode.startswith("I")
    arr = decode_bytes(encode(img, "PNG"), ResizeSpec((8, 8), method="nearest"))
    assert arr[0, 0, 0] == 255 and arr[-1, -1, 0] == 128


def test_transparent_pixels_composite_over_white():
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # fully transparent black
    arr = decode_bytes(encode(rgba, "PNG"), SPEC)
    assert (arr == 255).all()


def test_palette_png_with_transparency_index():
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (0, 0, 5, 10))  # left half red, right half palette 0 (transparent)
    arr = decode_bytes(encode(pal, "PNG", transparency=0), ResizeSpec((10, 10), method="nearest"))
    assert tuple(arr[5, 1]) == (255, 0, 0) and tuple(arr[5, 8]) == (255, 255, 255)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (12, 12), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    arr = decode_bytes(buf.getvalue(), SPEC)
    assert arr[..., 0].mean() > 200 and arr[..., 2].mean() < 50


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    arr = decode_bytes(encode(img, "JPEG", exif=exif.tobytes(), quality=95),
                       ResizeSpec((40, 20), method="nearest"))
    assert arr.shape == (40, 20, 3)
    assert arr[:15].mean() > 200 and arr[25:].mean() < 50  # white on top after rotation


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"this is plain text, not a picture", "not an image"),
])
def test_non_images_raise_bad_image(data, reason):
    with pytest.raises(BadImageError, match=reason):
        decode_bytes(data, SPEC, name="x.jpg")


def test_truncated_jpeg_is_refused():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)),
                  "JPEG")
    with pytest.raises(BadImageError, match="truncated"):
        decode_bytes(data[: len(data) // 2], SPEC, name="cut.jpg")


def test_oversized_header_is_refused_before_decoding():
    data = encode(Image.new("L", (300, 300)), "PNG")
    with pytest.raises(BadImageError, match="pixel limit"):
        decode_bytes(data, SPEC, name="bomb.png", max_pixels=10_000)


def test_read_image_returns_content_hash(tmp_path):
    path = tmp_path / "a.PNG"
    Image.new("RGB", (5, 5), RED).save(path)
    arr, digest = read_image(str(path), SPEC)
    import hashlib

    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(BadImageError, match="file not found"):
        read_image(str(tmp_path / "missing.jpg"), SPEC)


@pytest.mark.parametrize("aspect", ["stretch", "crop", "pad"])
def test_aspect_modes_keep_the_output_size(aspect):
    arr = decode_bytes(encode(Image.new("RGB", (80, 20), RED), "PNG"), ResizeSpec((16, 16), aspect=aspect))
    assert arr.shape == (16, 16, 3)
    if aspect == "pad":
        assert (arr[0] == 0).all() and (arr[8] != 0).any()


def test_unknown_resize_method_names_the_flag():
    with pytest.raises(UsageError, match="^resize fancy"):
        ResizeSpec((8, 8), method="fancy")
