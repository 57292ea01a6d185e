"""The built-in default job: the whole featcache workflow on a shipped image set.

`featcache demo` extracts MobileNet features of 350 CIFAR-10 images that ship
inside the package, so a newcomer sees the job work in about a minute.
"""

from __future__ import annotations

import os
from importlib import resources

from .extract import ExtractOptions, ExtractSummary, extract

SAMPLE_SET = "cifar10"


def sample_data_dir() -> str:
    """Folder of the shipped CIFAR-10 sample (train/ and val/ class folders)."""
    return str(resources.files("featcache") / "sample_data" / SAMPLE_SET)


def run_demo(out: str = "featcache-demo", backbone: str = "mobilenet",
             weights_dir: str | None = None, progress: bool | None = None) -> ExtractSummary:
    """Extract features of the sample set into `<out>/cache`."""
    options = ExtractOptions(
        data=sample_data_dir(), out=os.path.join(out, "cache"), backbone=backbone,
        weights_dir=weights_dir, progress=progress)
    return extract(options)
