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


# --- the fast decode: large JPEGs at a reduced DCT scale (Image.draft) -------------------------

def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth picture with four differently coloured quadrants: any wrong rotation shows."""
    yy, xx = np.mgrid[0:height, 0:width]
    arr = np.empty((height, width, 3), np.uint8)
    arr[..., 0] = np.where(xx < width // 2, 230, 30)
    arr[..., 1] = np.where(yy < height // 2, 210, 40)
    arr[..., 2] = (xx * 255 // width).astype(np.uint8)
    return Image.fromarray(arr)


def with_orientation(img: Image.Image, orientation: int, **kw) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", exif=exif.tobytes(), quality=kw.pop("quality", 92), **kw)


def test_fast_decode_is_the_exact_decode_for_small_images_and_other_formats():
    # twice the target or less: nothing to reduce, the very same pixels
    for data in (encode(photo(60, 40), "JPEG", quality=90), encode(photo(600, 400), "PNG"),
                 encode(photo(600, 400), "WEBP", quality=90)):
        exact = decode_bytes(data, ResizeSpec((32, 48)))
        np.testing.assert_array_equal(decode_bytes(data, ResizeSpec((32, 48), decode="fast")), exact)


def test_fast_decode_reads_large_jpegs_at_a_reduced_scale():
    from featcache.decode import _draft

    data = encode(photo(1608, 1200), "JPEG", quality=92)
    img = Image.open(io.BytesIO(data))
    box, orientation = _draft(img, ResizeSpec((100, 100), decode="fast"))
    img.load()
    assert img.size == (201, 150) and box == (0, 0, 201, 150) and orientation == 1  # 1/8
    img = Image.open(io.BytesIO(data))
    _draft(img, ResizeSpec((300, 300), decode="fast"))
    assert img.size == (402, 300)  # 1/4: 1/8 would leave less than 300 rows
    img = Image.open(io.BytesIO(data))
    assert _draft(img, ResizeSpec((700, 700), decode="fast")) is None  # 1/2 is too small


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("aspect", ["stretch", "crop", "pad"])
def test_fast_decode_matches_the_exact_decode_in_every_orientation(orientation, aspect):
    # the scale is chosen from the stored size; the picture comes out upright as in "exact"
    data = with_orientation(photo(1280, 720), orientation)
    exact = decode_bytes(data, ResizeSpec((48, 80), aspect=aspect)).astype(float)
    fast = decode_bytes(data, ResizeSpec((48, 80), aspect=aspect, decode="fast")).astype(float)
    assert fast.shape == exact.shape == (48, 80, 3)
    assert np.abs(fast - exact).mean() < 3.0, np.abs(fast - exact).mean()


def test_fast_decode_leaves_no_coloured_line_when_the_size_is_not_a_block_multiple():
    # Pillow#3419: 1001 x 803 is no multiple of the 8/16-pixel blocks, so the last decoded
    # column and row at 1/8 scale hold only 1/8 of a pixel of the image; read as whole pixels,
    # the magenta edge below becomes a magenta line along the border of the result
    arr = np.zeros((803, 1001, 3), np.uint8)
    arr[...] = (40, 160, 90)
    arr[:, -1] = (255, 0, 255)
    arr[-3:, :] = (255, 0, 255)
    data = encode(Image.fromarray(arr), "JPEG", quality=95)
    spec = ResizeSpec((100, 100))
    exact = decode_bytes(data, spec).astype(int)
    fast = decode_bytes(data, ResizeSpec((100, 100), decode="fast")).astype(int)
    drafted = Image.open(io.BytesIO(data))
    drafted.draft(None, (100, 100))
    naive = np.asarray(drafted.resize((100, 100), Image.Resampling.BILINEAR)).astype(int)
    for edge in (np.s_[:, -1], np.s_[-1, :]):
        assert np.abs(naive[edge] - exact[edge]).mean() > 80  # the line the box avoids
        assert np.abs(fast[edge] - exact[edge]).mean() < 25
    assert np.abs(fast - exact).mean() < 2.0


def test_decode_mode_is_written_only_when_not_exact():
    exact, fast = ResizeSpec((8, 8)), ResizeSpec((8, 8), decode="fast")
    assert "decode" not in exact.describe()  # caches made before the mode existed keep their key
    assert fast.describe()["decode"] == "fast"
    assert ResizeSpec.from_fingerprint(exact.describe()) == exact
    assert ResizeSpec.from_fingerprint(fast.describe()) == fast
    with pytest.raises(UsageError, match="^decode quick"):
        ResizeSpec((8, 8), decode="quick")


# --- HEIC / HEIF ---------------------------------------------------------------------------------

def test_heic_decodes_upright_like_the_same_jpeg():
    pytest.importorskip("pillow_heif")
    img = photo(120, 80)
    for orientation in (1, 6, 3):
        exif = Image.Exif()
        exif[0x0112] = orientation
        heic = encode(img, "HEIF", exif=exif.tobytes(), quality=90)
        spec = ResizeSpec((24, 36))
        got = decode_bytes(heic, spec, name="x.heic").astype(float)
        want = decode_bytes(with_orientation(img, orientation, quality=95), spec).astype(float)
        assert np.abs(got - want).mean() < 6.0, orientation


def test_heic_without_pillow_heif_says_how_to_install_it(tmp_path):
    pytest.importorskip("pillow_heif")
    import subprocess
    import sys

    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(encode(photo(40, 30), "HEIF", quality=80))
    code = ("import sys; sys.modules['pillow_heif'] = None\n"
            "from featcache.decode import read_image, ResizeSpec\n"
            "from featcache.errors import BadImageError\n"
            f"try:\n    read_image({str(path)!r}, ResizeSpec((8, 8)))\n"
            "except BadImageError as exc:\n    print(exc.reason)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'pip install "featcache[heic]"' in done.stdout
