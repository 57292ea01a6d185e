"""The built-in default job: the whole featcache workflow on a shipped image set.

`featcache demo` extracts MobileNet features of 350 CIFAR-10 images that ship
inside the package, then trains a logistic-regression head on them and
writes its metrics and confusion-matrix plot, so a newcomer sees the job work
in about a minute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources

from .extract import ExtractOptions, ExtractSummary, extract
from .train import TrainSummary, train_head

SAMPLE_SET = "cifar10"


def sample_data_dir() -> str:
    """Folder of the shipped CIFAR-10 sample (train/ and val/ class folders)."""
    return str(resources.files("featcache") / "sample_data" / SAMPLE_SET)


@dataclass
class DemoResult:
    extraction: ExtractSummary
    training: TrainSummary

    def to_json(self) -> dict:
        return {"extract": self.extraction.to_json(), "train_head": self.training.to_json()}


def run_demo(out: str = "featcache-demo", backbone: str = "mobilenet", head: str = "logreg",
             weights_dir: str | None = None, progress: bool | None = None) -> DemoResult:
    """Extract features of the sample set into `<out>/cache`, train `head` into `<out>/head`."""
    extraction = extract(ExtractOptions(
        data=sample_data_dir(), out=os.path.join(out, "cache"), backbone=backbone,
        weights_dir=weights_dir, progress=progress))
    training = train_head(extraction.cache, head, os.path.join(out, "head"), progress=progress)
    return DemoResult(extraction, training)
