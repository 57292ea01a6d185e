"""The audit's view of a cache: one unit-length feature vector per image, from every split.

Only the image itself is audited: augmented views of an image (rows with
view > 0) are left out, so a duplicate or a label issue is counted once per
file. Spatial features (pooling "none") are averaged over their spatial axes
first; cosine similarity between two images is then the dot product of
their vectors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..cache import FeatureCache


@dataclass
class AuditRows:
    """Every audited image of a cache, all splits stacked in the cache's split order.

    Attributes:
        vectors: (n, d) float32, each of unit length (a zero vector stays zero).
        labels: (n,) class indices into `class_names`.
        splits: (n,) split name of each row.
        paths: paths relative to `root`.
        hashes: sha256 of each image file.
        root: the folder the paths are relative to.
    """

    vectors: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    paths: list[str]
    hashes: np.ndarray
    class_names: list[str]
    root: str

    def __len__(self) -> int:
        return len(self.labels)

    def rows_of(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def file(self, row: int) -> str:
        """The image file of a row, as a path a browser or Pillow can open."""
        return os.path.join(self.root, self.paths[int(row)])

    def describe(self, row: int) -> dict:
        """Path, split and label of one row, as the report's JSON gives them."""
        row = int(row)
        return {"path": self.paths[row], "split": str(self.splits[row]),
                "label": self.class_names[int(self.labels[row])]}


def unit_vectors(features: np.ndarray) -> np.ndarray:
    """(n, ...) features as (n, d) float32 rows of unit length (spatial axes averaged)."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim > 2:
        x = x.reshape(len(x), -1, x.shape[-1]).mean(axis=1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def load_rows(cache: FeatureCache) -> AuditRows:
    """Every split of `cache`, views of augmented images left out, as unit vectors."""
    vectors, labels, splits, paths, hashes = [], [], [], [], []
    for split in cache.splits:
        part = cache.read(split, dtype="float32")
        keep = np.flatnonzero(part.views == 0) if part.views is not None else np.arange(len(part))
        vectors.append(unit_vectors(part.features[keep]))
        labels.append(part.labels[keep])
        splits.append(np.full(len(keep), split, dtype=object))
        paths.extend(part.paths[i] for i in keep)
        hashes.extend(part.hashes[i] for i in keep)
    d = int(np.prod(cache.feature_shape[-1:]))
    return AuditRows(
        vectors=np.concatenate(vectors) if vectors else np.zeros((0, d), np.float32),
        labels=np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64),
        splits=np.concatenate(splits) if splits else np.zeros(0, dtype=object),
        paths=paths, hashes=np.asarray(hashes, dtype=object), class_names=cache.class_names,
        root=cache.manifest.get("source", {}).get("root", cache.path))
