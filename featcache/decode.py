"""Read one image file and turn it into RGB uint8 pixels at the model's size.

Handles what real folders hold: JPEG (CMYK too), PNG with alpha, palette and
16-bit depth, GIF (first frame), BMP, WebP, TIFF, grayscale. EXIF orientation
is applied, transparency is composited over white, and images whose header
claims more than `max_pixels` are refused before anything is allocated.
Any failure raises `BadImageError` with a short reason; callers skip the file
or stop, as the user asked.

Pillow releases the GIL while decoding and resizing, so a thread pool of
decoders runs in parallel with the backbone.
"""

from __future__ import annotations

import hashlib
import io
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
    """

    size: tuple[int, int]
    method: str = "bilinear"
    aspect: str = "stretch"

    def __post_init__(self):
        if self.method not in RESAMPLING:
            raise UsageError(f"{{param:resize}} {self.method}: allowed values are {', '.join(RESAMPLING)}.")
        if self.aspect not in ASPECTS:
            raise UsageError(f"{{param:aspect}} {self.aspect}: allowed values are {', '.join(ASPECTS)}.")

    def describe(self) -> dict:
        return {"size": list(self.size), "method": self.method, "aspect": self.aspect,
                "alpha_background": list(BACKGROUND), "exif_orientation": True}


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


def decode_bytes(data: bytes, spec: ResizeSpec, name: str = "<bytes>",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to an (H, W, 3) uint8 array at `spec.size`.

    Raises:
        BadImageError: empty, not an image, truncated, or too large.
    """
    if not data:
        raise BadImageError(name, "empty file (0 bytes)")
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
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _fit(_to_rgb(img), spec)
            arr = np.asarray(img, dtype=np.uint8)
    except BadImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImageError(name, f"refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
            KeyError, ZeroDivisionError, MemoryError) as exc:
        reason = str(exc) or type(exc).__name__
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
