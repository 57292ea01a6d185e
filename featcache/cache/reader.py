"""Reading a finished cache: its manifest, whole splits in memory, or row ranges.

Readers only ever see the last complete state: the manifest is replaced
atomically, and if a writer replaces it in the middle of a read (removing
shards the old one named), the read starts again from the new state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import CacheError
from .layout import IDENTITY_FILE, MANIFEST_FILE, PARTS_DIR
from .manifest import read_manifest
from .shards import ShardReader


@dataclass
class Features:
    """The rows of one split, in memory, in stable order.

    Attributes:
        features: (n, *feature_shape) array in the stored dtype (or the one asked for).
        labels: (n,) int32 indices into `class_names`.
        paths: file paths relative to the data root.
        hashes: sha256 of each image file.
        class_names: class names of the cache.
        split: split name.
        fingerprint: the cache's fingerprint.
        views: per row, which augmented view of its image it is (0: the image
            itself); all zeros for caches made without --augment-views.
    """

    features: np.ndarray
    labels: np.ndarray
    paths: list[str]
    hashes: list[str]
    class_names: list[str]
    split: str
    fingerprint: dict
    views: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


class FeatureCache:
    """Read access to a finished cache (its last complete manifest).

    Raises:
        CacheError: no cache, or an unfinished one, at `path`.
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        manifest = os.path.join(self.path, MANIFEST_FILE)
        if not os.path.isfile(manifest):
            if os.path.isfile(os.path.join(self.path, IDENTITY_FILE)):
                raise CacheError(
                    f"{path}: extraction has not finished (no {MANIFEST_FILE}). Rerun the same "
                    "featcache extract command to resume it.")
            if os.path.isdir(os.path.join(self.path, PARTS_DIR)):
                raise CacheError(f"{path}: holds slices of a sliced extraction but no {MANIFEST_FILE} "
                                 f"yet. Join them with: featcache merge {path}")
            raise CacheError(f"{path}: not a featcache cache (no {MANIFEST_FILE}).")
        self.manifest = self._read_manifest()

    def _read_manifest(self) -> dict:
        return read_manifest(os.path.join(self.path, MANIFEST_FILE))

    def __repr__(self) -> str:
        rows = ", ".join(f"{s} {n}" for s, n in self.splits.items())
        backbone = self.fingerprint.get("backbone", "fused")
        size = sum(s["bytes"] for s in self.manifest["shards"])
        return f"FeatureCache({self.path!r}: {backbone}, {rows}, {size / 2**20:.1f} MiB)"

    def _consistent(self, read):
        """Run `read`; if a writer replaced the manifest meanwhile (and removed
        shards the old one named), start again from the new complete state."""
        for attempt in range(3):
            try:
                return read()
            except CacheError:
                if attempt == 2:
                    raise
                latest = self._read_manifest()
                if latest == self.manifest:
                    raise
                self.manifest = latest

    @property
    def fingerprint(self) -> dict:
        return self.manifest["fingerprint"]

    @property
    def fingerprint_hash(self) -> str:
        return self.manifest["fingerprint_hash"]

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def multi_label(self) -> bool:
        """Whether class_names are label sets of a multi-label list (`featcache.multilabel`)."""
        return bool(self.manifest.get("source", {}).get("multi_label"))

    @property
    def label_names(self) -> list[str]:
        """The labels a head predicts: the classes, or the labels of a multi-label cache's sets."""
        from .labels import vocabulary

        return vocabulary(self.class_names) if self.multi_label else self.class_names

    def label_indicator(self):
        """Multi-label caches: (len(class_names), len(label_names)) 0/1 matrix of the sets."""
        from .labels import indicator

        return indicator(self.class_names, self.label_names)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["fingerprint"]["feature_shape"])

    @property
    def splits(self) -> dict[str, int]:
        return {s: v["rows"] for s, v in self.manifest["splits"].items()}

    def shards(self, split: str) -> list[dict]:
        if split not in self.manifest["splits"]:
            raise CacheError(
                f"{self.path}: no split '{split}'. Available: {', '.join(self.manifest['splits'])}.")
        return sorted((s for s in self.manifest["shards"] if s["split"] == split),
                      key=lambda s: s["index"])

    @property
    def has_views(self) -> bool:
        """Whether rows include augmented views (extracted with augment_views)."""
        return "augment" in self.fingerprint

    def open_shard(self, shard: dict) -> ShardReader:
        """A reader of one of the manifest's shards, checked against the manifest."""
        path = os.path.join(self.path, shard["file"])
        reader = ShardReader(path)
        if reader.fingerprint_hash != self.fingerprint_hash or reader.rows != shard["rows"]:
            reader.close()
            raise CacheError(f"{path}: shard does not match the manifest. Run featcache verify.")
        return reader

    def index(self, split: str) -> tuple[list[str], np.ndarray]:
        """Paths (relative to the data root) and labels of a split, without its features."""
        return self._consistent(lambda: self._index(split))

    def _index(self, split: str) -> tuple[list[str], np.ndarray]:
        paths: list[str] = []
        labels = []
        for shard in self.shards(split):
            with self.open_shard(shard) as f:
                paths.extend(f.paths())
                labels.append(f.labels())
        return paths, (np.concatenate(labels) if labels else np.zeros(0, dtype=np.int32))

    def read(self, split: str, dtype: str | None = None) -> Features:
        """Load every row of a split into memory (the last complete state, even
        while another process rewrites the cache)."""
        return self._consistent(lambda: self._read(split, dtype))

    def _read(self, split: str, dtype: str | None = None) -> Features:
        shards = self.shards(split)
        total = sum(s["rows"] for s in shards)
        stored = np.dtype(self.fingerprint["dtype"])
        out = np.empty((total, *self.feature_shape), dtype=np.dtype(dtype) if dtype else stored)
        labels = np.empty(total, dtype=np.int32)
        views = np.zeros(total, dtype=np.int16)
        paths: list[str] = []
        hashes: list[str] = []
        at = 0
        for shard in shards:
            with self.open_shard(shard) as f:
                n = shard["rows"]
                if n:
                    f.read_features_into(out, at)
                    labels[at:at + n] = f.labels()
                    views[at:at + n] = f.views()
                    paths.extend(f.paths())
                    hashes.extend(f.hashes())
                at += n
        return Features(out, labels, paths, hashes, self.class_names, split, self.fingerprint, views)


class SplitReader:
    """Row-range reads from one split's shards, which stay open until `close`.

    Rows are numbered across the split's shards in their stable order.
    """

    def __init__(self, cache: FeatureCache, split: str):
        self.cache = cache
        self.shards = cache.shards(split)
        self.starts = np.cumsum([0] + [s["rows"] for s in self.shards])
        self.n_rows = int(self.starts[-1])
        self._files: list[ShardReader] = []

    def _file(self, index: int) -> ShardReader:
        if not self._files:
            self._files = [self.cache.open_shard(s) for s in self.shards]
        return self._files[index]

    def labels(self) -> np.ndarray:
        if not self.shards:
            return np.zeros(0, dtype=np.int32)
        return np.concatenate([self._file(i).labels() for i in range(len(self.shards))])

    def read_range(self, start: int, stop: int, out: np.ndarray) -> None:
        """Copy rows [start, stop) into `out` (converting dtype as needed)."""
        at = 0
        while start < stop:
            shard = int(np.searchsorted(self.starts, start, side="right") - 1)
            end = min(stop, int(self.starts[shard + 1]))
            local = start - int(self.starts[shard])
            out[at:at + end - start] = self._file(shard).features(local, local + end - start)
            at += end - start
            start = end

    def read_rows(self, rows: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Features of sorted row indices; each run of consecutive rows is one read."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.cache.feature_shape), dtype=dtype)
        at = 0
        for run in np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1):
            if len(run):
                self.read_range(int(run[0]), int(run[-1]) + 1, out[at:at + len(run)])
                at += len(run)
        return out

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []

    def __enter__(self) -> "SplitReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_features(cache: str, split: str = "train", dtype: str | None = None) -> Features:
    """Load one split of a cache into memory.

    Rows come in a stable order: shards by index, and within the split by the
    files' sorted relative paths. Labels index into `class_names`.

    Args:
        cache: cache folder written by `featcache extract`.
        split: "train", "val" or "test".
        dtype: convert features to this dtype (default: as stored).

    Raises:
        CacheError: missing, unfinished or damaged cache, or unknown split.
    """
    return FeatureCache(cache).read(split, dtype)
