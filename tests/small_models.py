"""Feature models shared by test modules in one session (built once: builds cost seconds)."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=None)
def mobilenet96(weights_dir: Path):
    """MobileNet with the offline ImageNet weights file, at 96 px (small and fast)."""
    from featcache.feature_model import build_feature_extractor

    return build_feature_extractor("mobilenet", 96,
                                   weights=str(Path(weights_dir) / "mobilenet_1_0_224_tf_no_top.h5"))
