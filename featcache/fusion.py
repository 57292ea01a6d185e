"""Feature fusion: one cache whose rows join two caches' features of the same images.

`featcache fuse A B --out C` matches the rows of A and B by the sha256 of the
image file (and the augmented view, for caches with views), split by split,
and writes cache C whose rows are A's features followed by B's (spatial
features flattened), in A's row order and with A's labels and paths. Any head
trains on C as on any cache. Caches whose rows do not match (other images,
other splits, other classes, other --augment-views) are refused with how many
rows differ. C's fingerprint holds both caches' fingerprints, so a head
trained on it is never scored on features made differently.

Memory stays bounded: C is written one of A's shards at a time.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .cache import (
    CacheLock,
    FeatureCache,
    ShardInfo,
    ShardWriter,
    SplitReader,
    init_identity,
    new_manifest,
    remove_stale_temporaries,
    shard_relpath,
    write_manifest,
)
from .errors import CacheError, UsageError, param
from .fingerprint import FORMAT_VERSION, canonical_json, fingerprint_hash


@dataclass
class FuseSummary:
    cache: str
    feature_shape: tuple[int, ...]
    splits: dict[str, int]
    sources: list[str]

    def to_json(self) -> dict:
        return {"cache": self.cache, "feature_shape": list(self.feature_shape),
                "splits": self.splits, "sources": self.sources}


def _row_keys(cache: FeatureCache, split: str) -> list[tuple[str, int, int]]:
    """(file sha256, view, n-th occurrence) per row: identical files pair up in order."""
    keys, seen = [], Counter()
    for shard in cache.shards(split):
        with cache.open_shard(shard) as f:
            hashes, views = f.hashes(), f.views()
        for digest, view in zip(hashes, views):
            key = (digest, int(view))
            keys.append((*key, seen[key]))
            seen[key] += 1
    return keys


def match_rows(a: FeatureCache, b: FeatureCache, split: str) -> np.ndarray:
    """For each row of A's split, the row of B's split holding the same image (and view).

    Raises:
        CacheError: the splits do not hold the same rows; says how many differ.
    """
    keys_a, keys_b = _row_keys(a, split), _row_keys(b, split)
    where_b = {k: i for i, k in enumerate(keys_b)}
    only_a = sum(1 for k in keys_a if k not in where_b)
    only_b = len(keys_b) - (len(keys_a) - only_a)
    if only_a or only_b:
        raise CacheError(
            f"cannot fuse {a.path} and {b.path}: {only_a + only_b} rows of split '{split}' differ "
            f"({only_a} only in the first, {only_b} only in the second; rows are matched by image "
            f"content hash). Extract both caches from the same images with the same "
            f"{param('val_fraction')} and {param('augment_views')}.")
    return np.array([where_b[k] for k in keys_a], dtype=np.int64)


def fused_fingerprint(a: FeatureCache, b: FeatureCache, width: int) -> dict:
    dtype = "float16" if a.fingerprint["dtype"] == b.fingerprint["dtype"] == "float16" else "float32"
    return {"format_version": FORMAT_VERSION, "fused": [a.fingerprint, b.fingerprint],
            "feature_shape": [width], "dtype": dtype, "pooling": "none"}


def fuse_caches(first: str, second: str, out: str) -> FuseSummary:
    """Write the fused cache `out` of caches `first` and `second`.

    Raises:
        CacheError: the caches do not hold the same rows, classes or splits.
        FingerprintMismatchError: `out` exists and was fused from other caches.
    """
    a, b = FeatureCache(first), FeatureCache(second)
    if os.path.abspath(out) in (a.path, b.path):
        raise UsageError(f"{param('out')} {out}: write the fused cache to a new folder, not to an input.")
    if a.class_names != b.class_names:
        raise CacheError(f"cannot fuse {a.path} and {b.path}: their classes differ "
                         f"({a.class_names} vs {b.class_names}).")
    if set(a.splits) != set(b.splits):
        raise CacheError(f"cannot fuse {a.path} and {b.path}: their splits differ "
                         f"({', '.join(a.splits)} vs {', '.join(b.splits)}).")
    matches = {split: match_rows(a, b, split) for split in a.splits}
    labels_differ = sum(int(np.sum(a.index(split)[1] != b.index(split)[1][rows_b]))
                        for split, rows_b in matches.items())
    if labels_differ:
        raise CacheError(f"cannot fuse {a.path} and {b.path}: {labels_differ} matching images "
                         "have different labels.")
    width_a = int(np.prod(a.feature_shape))
    width = width_a + int(np.prod(b.feature_shape))
    fingerprint = fused_fingerprint(a, b, width)
    fph = fingerprint_hash(fingerprint)
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    with CacheLock(out):
        init_identity(out, fingerprint, fph)
        remove_stale_temporaries(out)
        shards = []
        for split, rows_b in matches.items():
            shards += _write_split(a, b, split, rows_b, out, fingerprint, fph, width_a)
        manifest = new_manifest(
            fingerprint=fingerprint, fingerprint_hash=fph, class_names=a.class_names,
            shards=shards, source=a.manifest["source"],
            weights={"source": "fused", "fused": [a.manifest.get("weights", {}),
                                                  b.manifest.get("weights", {})]},
            extraction={"fused_from": [a.path, b.path]}, ignored=a.manifest.get("ignored", []))
        write_manifest(out, manifest)
    return FuseSummary(out, (width,), {s: v["rows"] for s, v in manifest["splits"].items()},
                       [a.path, b.path])


def _write_split(a, b, split, rows_b, out, fingerprint, fph, width_a) -> list[ShardInfo]:
    data_a, data_b = SplitReader(a, split), SplitReader(b, split)
    labels_a = data_a.labels()
    written = []
    try:
        start = 0
        for shard in a.shards(split):
            stop = start + shard["rows"]
            plan = hashlib.sha256(canonical_json([fph, shard["plan_hash"]]).encode()).hexdigest()
            relpath = shard_relpath(split, shard["index"], plan)
            if os.path.isfile(os.path.join(out, relpath)):
                os.remove(os.path.join(out, relpath))  # rewritten: cheap, and never stale
            writer = ShardWriter(out, split, shard["index"], plan, shard["rows"],
                                 tuple(fingerprint["feature_shape"]), fingerprint["dtype"], fph,
                                 views=True)
            try:
                if stop > start:
                    own = data_a.read_rows(np.arange(start, stop)).reshape(stop - start, -1)
                    want = rows_b[start:stop]
                    order = np.argsort(want, kind="stable")
                    other = np.empty((stop - start, int(np.prod(b.feature_shape))), np.float32)
                    other[order] = data_b.read_rows(want[order]).reshape(stop - start, -1)
                    with a.open_shard(shard) as f:
                        paths, hashes, views = f.paths(), f.hashes(), f.views()
                    writer.append(np.concatenate([own, other], axis=1), labels_a[start:stop],
                                  paths, hashes, views)
                for item in shard.get("skipped", []):
                    writer.skip(item["path"], item["reason"])
                info = writer.commit()
            except BaseException:
                writer.abort()
                raise
            written.append(info)
            start = stop
    finally:
        data_a.close()
        data_b.close()
    return written
