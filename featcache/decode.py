"""Read one image file and turn it into RGB uint8 pixels at the model's size.

Handles what real folders hold: JPEG (CMYK too), PNG with alpha, palette and
16-bit depth, GIF (first frame), BMP, WebP, TIFF, grayscale. EXIF orientation
is applied, transparency is composited over white, and images whose header
claims more than `max_pixels` are refused before anything is allocated.
Any failure raises `BadImageError` with a short reason; callers skip the file
or stop, as the user asked.

Two decode modes (`ResizeSpec.decode`):

* "exact": every stored pixel is decoded, then resized (what featcache did
  before the mode existed, and what a cache without the key was made with);
* "fast": a JPEG much larger than the target is decoded at 1/2, 1/4 or 1/8
  scale straight from its DCT coefficients (libjpeg through Pillow's
  `Image.draft`), the smallest scale that still leaves at least the target
  size, and the result is resized as in "exact". A 12 MP photo decodes about
  five times faster. The scale is chosen from the stored width and height,
  before EXIF rotation; the resize reads only the box of valid pixels that
  `draft` returns, so a size that is not a multiple of the JPEG's block grid
  leaves no coloured line along the border (python-pillow/Pillow#3419).
  Other formats, and JPEGs too small to reduce, decode exactly as in "exact".

HEIC/HEIF photos (iPhones' default) are read through pillow-heif when it is
installed (`pip install "featcache[heic]"`); it applies their orientation.

Pillow releases the GIL while decoding and resizing, so a thread pool of
decoders runs in parallel with the backbone.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .errors import BadImageError, UsageError

RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "area": Image.Resampling.BOX,
}
ASPECTS = ("stretch", "crop", "pad")
DECODES = ("fast", "exact")
DEFAULT_DECODE = "fast"  # benchmarks/photo_sizes.py: see README "Large photos"
HEIC_HINT = 'a HEIC/HEIF photo: install pillow-heif to read it (pip install "featcache[heic]")'
# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose)
ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
EXIF_ORIENTATION = 0x0112


def _register_heif() -> bool:
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


HEIF_AVAILABLE = _register_heif()
# ISO base media "ftyp" brands of HEIF still images (HEVC- and AV1-coded)
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif")


def looks_like_heif(data: bytes) -> bool:
    return data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS
DEFAULT_MAX_PIXELS = 178_956_970  # twice Pillow's own warning threshold
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class ResizeSpec:
    """How decoded images reach the model's input size.

    Attributes:
        size: output (height, width).
        method: resampling filter name (see RESAMPLING).
        aspect: "stretch" to the size (as Keras' loaders do), "crop" the
            centre to the size's aspect first, or "pad" with black borders.
        decode: "exact" (every pixel) or "fast" (large JPEGs at a reduced
            DCT scale first); see the module docstring.
    """

    size: tuple[int, int]
    method: str = "bilinear"
    aspect: str = "stretch"
    decode: str = "exact"

    def __post_init__(self):
        if self.method not in RESAMPLING:
            raise UsageError(f"{{param:resize}} {self.method}: allowed values are {', '.join(RESAMPLING)}.")
        if self.aspect not in ASPECTS:
            raise UsageError(f"{{param:aspect}} {self.aspect}: allowed values are {', '.join(ASPECTS)}.")
        if self.decode not in DECODES:
            raise UsageError(f"{{param:decode}} {self.decode}: allowed values are {', '.join(DECODES)}.")

    def describe(self) -> dict:
        """The fingerprint's "resize" part; "decode" is written only for the non-exact mode,
        so caches made before the mode existed (exact decode) keep their fingerprint."""
        described = {"size": list(self.size), "method": self.method, "aspect": self.aspect,
                     "alpha_background": list(BACKGROUND), "exif_orientation": True}
        if self.decode != "exact":
            described["decode"] = self.decode
        return described

    @classmethod
    def from_fingerprint(cls, resize: dict) -> "ResizeSpec":
        """The spec a fingerprint's "resize" part describes (no "decode" key: exact)."""
        return cls(tuple(resize["size"]), resize["method"], resize["aspect"],
                   resize.get("decode", "exact"))


def decode_of(fingerprint: dict) -> str:
    """The decode mode of the images behind a cache fingerprint."""
    return fingerprint.get("resize", {}).get("decode", "exact")


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        peak = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        arr8 = np.clip(np.rint(arr.astype(np.float64) * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def _fit(img: Image.Image, spec: ResizeSpec) -> Image.Image:
    height, width = spec.size
    target = (width, height)
    resample = RESAMPLING[spec.method]
    if img.size == target:
        return img
    if spec.aspect == "crop":
        return ImageOps.fit(img, target, method=resample)
    if spec.aspect == "pad":
        return ImageOps.pad(img, target, method=resample, color=(0, 0, 0))
    return img.resize(target, resample=resample)


def _draft(img: Image.Image, spec: ResizeSpec):
    """Ask libjpeg for the smallest DCT scale leaving at least the target size.

    Returns:
        (box of valid pixels, EXIF orientation) when the image was reduced,
        None when it decodes at full size (then nothing differs from "exact").
    """
    stored = img.size
    orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    height, width = spec.size
    if orientation in (5, 6, 7, 8):  # the target in the stored (unrotated) orientation
        width, height = height, width
    if spec.aspect == "pad":  # the image is resized to fit inside the target
        k = min(width / stored[0], height / stored[1])
        width, height = max(1, math.ceil(stored[0] * k)), max(1, math.ceil(stored[1] * k))
    drafted = img.draft(None, (width, height))
    if drafted is None or img.size == stored:
        return None
    return drafted[1], orientation


def _fit_box(img: Image.Image, spec: ResizeSpec, box, orientation: int) -> Image.Image:
    """Resize the valid `box` of a reduced decode to the target, then rotate it upright.

    Resizing before the EXIF rotation keeps the box in the decoder's coordinates;
    the target is taken in the stored orientation, so the result matches "exact".
    """
    height, width = spec.size
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    resample = RESAMPLING[spec.method]
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    if spec.aspect == "crop":  # the centre at the target's aspect, as ImageOps.fit takes it
        if bw / bh > width / height:
            cw = bh * width / height
            x0, x1 = x0 + (bw - cw) / 2, x0 + (bw + cw) / 2
        else:
            ch = bw * height / width
            y0, y1 = y0 + (bh - ch) / 2, y0 + (bh + ch) / 2
        out = img.resize((width, height), resample, box=(x0, y0, x1, y1))
    elif spec.aspect == "pad":  # fit inside, black borders, centred as ImageOps.pad does
        if bw / bh > width / height:
            inner = (width, max(1, round(bh / bw * width)))
        else:
            inner = (max(1, round(bw / bh * height)), height)
        resized = _upright(img.resize(inner, resample, box=box), orientation)
        size = spec.size[::-1]  # upright (width, height): the borders fall as in "exact"
        out = Image.new("RGB", size, (0, 0, 0))
        out.paste(resized, (round((size[0] - resized.width) / 2), round((size[1] - resized.height) / 2)))
        return out
    else:
        out = img.resize((width, height), resample, box=box)
    return _upright(out, orientation)


def _upright(img: Image.Image, orientation: int) -> Image.Image:
    method = ORIENTATIONS.get(orientation)
    return img if method is None else img.transpose(method)


def resize_pixels(pixels: np.ndarray, spec: ResizeSpec) -> np.ndarray:
    """An image already decoded ((H, W, 3) uint8) brought to `spec.size` as a file's would be."""
    return np.asarray(_fit(Image.fromarray(pixels), spec), dtype=np.uint8)


def decode_bytes(data: bytes, spec: ResizeSpec, name: str = "<bytes>",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to an (H, W, 3) uint8 array at `spec.size`.

    Raises:
        BadImageError: empty, not an image, truncated, or too large.
    """
    if not data:
        raise BadImageError(name, "empty file (0 bytes)")
    if not HEIF_AVAILABLE and looks_like_heif(data):
        raise BadImageError(name, HEIC_HINT)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise BadImageError(
                    name, f"{width}x{height} pixels exceeds the {max_pixels:,}-pixel limit "
                    "(decompression bomb?); raise {param:max_pixels} if it is genuine")
            if width < 1 or height < 1:
                raise BadImageError(name, f"invalid size {width}x{height}")
            img.seek(0)  # first frame of animations
            drafted = _draft(img, spec) if spec.decode == "fast" and img.format == "JPEG" else None
            img.load()
            if drafted is None:
                img = ImageOps.exif_transpose(img)
                img = _fit(_to_rgb(img), spec)
            else:
                img = _fit_box(_to_rgb(img), spec, *drafted)
            arr = np.asarray(img, dtype=np.uint8)
    except BadImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImageError(name, f"refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
            KeyError, ZeroDivisionError, MemoryError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__  # one line (libheif ends in \n)
        if "cannot identify image file" in reason:
            reason = "not an image Pillow can read"
        raise BadImageError(name, reason) from None
    if arr.shape != (spec.size[0], spec.size[1], 3):
        raise BadImageError(name, f"decoded to unexpected shape {arr.shape}")
    return arr


def read_image(path: str, spec: ResizeSpec, display: str | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Read a file once: its decoded pixels and the sha256 of its bytes.

    Raises:
        BadImageError: unreadable or undecodable file.
    """
    name = display or path
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            raise BadImageError(name, "not a regular file (pipe, socket or device)")
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise BadImageError(name, "file not found") from None
    except IsADirectoryError:
        raise BadImageError(name, "is a folder") from None
    except OSError as exc:
        raise BadImageError(name, f"cannot read: {exc.strerror or exc}") from None
    pixels = decode_bytes(data, spec, name, max_pixels)
    return pixels, hashlib.sha256(data).hexdigest()
