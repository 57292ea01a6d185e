"""Planning an extraction (pure): shard tasks, slices, and what builds the model.

`plan_shards` cuts the sorted image list of each split into shard tasks whose
names hash the files planned for them, so any change to what a shard would
hold renames it. `BuildSpec` says how any process (this one or a cluster
worker) builds the feature model, and `ShardJob` what else it needs to turn
one task into one finished shard file. Nothing here runs a model or writes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

from ..augment_views import AugmentSpec
from ..cache import shard_relpath
from ..dataset import SPLIT_ORDER, Dataset, ImageRecord
from ..decode import ResizeSpec
from ..fingerprint import canonical_json, fingerprint_hash, library_versions, make_fingerprint


@dataclass(frozen=True)
class ShardTask:
    """One shard to write: a contiguous run of one split's sorted records."""

    split: str
    index: int
    records: tuple[ImageRecord, ...]
    plan_hash: str

    @property
    def relpath(self) -> str:
        return shard_relpath(self.split, self.index, self.plan_hash)


def plan_shards(dataset: Dataset, fingerprint_hash_: str, shard_size: int) -> list[ShardTask]:
    """Cut each split's records into shards of `shard_size` (pure, deterministic).

    A shard's plan hash covers the fingerprint, class names, split and its
    (path, label, size) rows, so any change to what it would hold renames it.
    """
    tasks = []
    for split in SPLIT_ORDER:
        records = [r for r in dataset.records if r.split == split]
        for index, start in enumerate(range(0, len(records), shard_size)):
            chunk = tuple(records[start:start + shard_size])
            plan = canonical_json({
                "fingerprint": fingerprint_hash_, "classes": dataset.class_names, "split": split,
                "rows": [[r.path, r.label, r.size] for r in chunk],
            })
            digest = hashlib.sha256(plan.encode("utf-8", "surrogateescape")).hexdigest()
            tasks.append(ShardTask(split, index, chunk, digest))
    return tasks


def slice_tasks(tasks: list[ShardTask], index: int, count: int) -> list[ShardTask]:
    """The shard tasks of slice `index` of `count`: every count-th task of the plan."""
    return [t for i, t in enumerate(tasks) if i % count == index]


@dataclass(frozen=True)
class BuildSpec:
    """What any process needs to build the feature model (hashable, picklable).

    Cluster workers keep one built model per BuildSpec.
    """

    backbone: str
    image_size: int
    layer: str | None
    pooling: str | None
    weights: str
    weights_dir: str | None
    seed: int
    resize: ResizeSpec
    dtype: str
    augment: AugmentSpec | None = None
    precision: str = "float32"
    runtime: str = "keras"
    int8_model: str | None = None  # precision int8: the quantized model's folder

    def build(self):
        from ..feature_model import build_feature_extractor

        return build_feature_extractor(self.backbone, self.image_size, self.layer, self.pooling,
                                       self.weights, self.weights_dir, self.seed, self.precision,
                                       self.runtime, self.int8_model)


@dataclass
class ExtractorInfo:
    """The parts of a built feature model the cache records (its fingerprint first)."""

    fingerprint: dict
    fingerprint_hash: str
    backbone: str
    feature_shape: tuple[int, ...]
    weights: dict
    tap_name: str


def describe_extractor(extractor, build: BuildSpec) -> ExtractorInfo:
    """The fingerprint of features this extractor makes under `build`'s resize, dtype, views."""
    fingerprint = make_fingerprint(extractor.describe(), build.resize.describe(), build.dtype,
                                   library_versions())
    if build.augment is not None:  # only then, so caches without views keep their fingerprint
        fingerprint["augment"] = build.augment.describe()
    return ExtractorInfo(fingerprint, fingerprint_hash(fingerprint), extractor.spec.name,
                         tuple(extractor.feature_shape), extractor.weights, extractor.tap_name)


@dataclass(frozen=True)
class ShardJob:
    """Everything besides the model and the task that running a shard needs (picklable).

    Attributes:
        root: the data root; task records' paths are relative to it.
        class_names: label order of the cache.
        out: the cache folder shards are written into.
        build: how the model is built (and the resize, dtype and views).
        fingerprint_hash: the cache's; written into every shard.
        batch_size, strict, max_pixels: as in ExtractOptions.
        workers: decoding threads (None: the default).
        after_batch: called as after_batch(writer) after each batch is written
            (tests use it to kill a worker in the middle of a shard).
    """

    root: str
    class_names: tuple[str, ...]
    out: str
    build: BuildSpec
    fingerprint_hash: str
    batch_size: int = 32
    strict: bool = False
    max_pixels: int | None = None
    workers: int | None = None
    after_batch: Callable | None = None
