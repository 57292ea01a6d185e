"""Augmented views of training images, stored in the cache (`extract --augment-views K`).

Each training image gets view 0 (the clean image, exactly what extraction
without views stores) and K augmented views 1..K. A view is drawn from a
random generator seeded by (seed, view index, the image file's sha256), so
the same file gives the same view on any machine, in any shard, on any rerun,
and views are independent of the order images are processed in.

The transforms run on the decoded image at the model's input size, in the
decoding threads (Pillow releases the GIL): a horizontal flip (p=0.5), a
rotation of up to `rotation` degrees, a random crop keeping `min_crop` to 1
of the area (scaled back to the input size) and brightness, contrast and
saturation jitter of +-`jitter`. Only the train split gets views; val and test
stay clean, so heads never validate on augmented copies of training images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageEnhance

from .errors import UsageError

MAX_VIEWS = 64


@dataclass(frozen=True)
class AugmentSpec:
    """How augmented views are made; all of it goes into the cache fingerprint."""

    views: int
    seed: int = 0
    flip: bool = True
    rotation: float = 15.0
    min_crop: float = 0.7
    jitter: float = 0.2

    def validate(self) -> None:
        if not 1 <= int(self.views) <= MAX_VIEWS:
            raise UsageError(f"{{param:augment_views}} {self.views}: must be between 1 and {MAX_VIEWS} "
                             "(0 or leaving it out stores no views).")

    def describe(self) -> dict:
        return {"method": "featcache.augment_views/1", **asdict(self)}

    def rng(self, digest: str, view: int) -> np.random.Generator:
        words = [int(digest[i:i + 8], 16) for i in range(0, 64, 8)]
        return np.random.default_rng([int(self.seed), int(view), *words])

    def apply(self, pixels: np.ndarray, digest: str, view: int) -> np.ndarray:
        """View `view` (>= 1) of an (H, W, 3) uint8 image whose file hashes to `digest`."""
        if view == 0:
            return pixels
        rng = self.rng(digest, view)
        height, width = pixels.shape[:2]
        img = Image.fromarray(pixels, "RGB")
        if self.flip and rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        angle = float(rng.uniform(-self.rotation, self.rotation)) if self.rotation else 0.0
        if angle:
            img = img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
        area = float(rng.uniform(self.min_crop, 1.0))
        side = math.sqrt(area)
        cw, ch = max(1, round(width * side)), max(1, round(height * side))
        left = int(rng.integers(0, width - cw + 1))
        top = int(rng.integers(0, height - ch + 1))
        img = img.resize((width, height), Image.Resampling.BILINEAR,
                         box=(left, top, left + cw, top + ch))
        if self.jitter:
            for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                img = enhancer(img).enhance(float(rng.uniform(1 - self.jitter, 1 + self.jitter)))
        return np.asarray(img, dtype=np.uint8)


def views_for(split: str, spec: AugmentSpec | None) -> int:
    """Rows stored per image of a split: 1 + K for train with views, else 1."""
    return 1 + int(spec.views) if spec is not None and split == "train" else 1
