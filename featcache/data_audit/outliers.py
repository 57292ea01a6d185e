"""Outliers: images far from every training image, scored by distance to their k-th neighbour.

An image's score is the cosine distance (1 - similarity) to its k-th nearest
training image, itself and byte-identical copies left out, so a pair of
near copies does not hide an image no class resembles. An image is flagged
when its score lies far above the training split's own: more than the
median plus `spread` times the median absolute deviation (a robust cut-off
that does not move when a few outliers are present).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .duplicates import _nearest
from .vectors import AuditRows

K = 5
SPREAD = 5.0


@dataclass
class OutlierScores:
    scores: np.ndarray        # per audited row: cosine distance to the k-th training neighbour
    nearest_class: np.ndarray  # the most common class among those k neighbours
    cutoff: float
    k: int


def score_outliers(rows: AuditRows, train_split: str = "train", k: int = K,
                   spread: float = SPREAD) -> OutlierScores:
    train = rows.rows_of(train_split)
    k = max(1, min(int(k), len(train) - 1))
    # a few more neighbours than k, so dropping the row itself and its exact copies leaves k
    extra = 1 + max(0, len(rows.hashes) - len(set(rows.hashes)))
    sims, nearest = _nearest(rows.vectors[train], rows.vectors, min(len(train), k + min(extra, 8)))
    scores = np.zeros(len(rows))
    classes = np.zeros(len(rows), dtype=np.int64)
    n_classes = len(rows.class_names)
    for i in range(len(rows)):
        keep = [(s, j) for s, j in zip(sims[i], train[nearest[i]])
                if j != i and rows.hashes[j] != rows.hashes[i]][:k]
        if not keep:
            continue
        scores[i] = 1.0 - keep[-1][0]
        votes = np.bincount([rows.labels[j] for _, j in keep], minlength=n_classes)
        classes[i] = int(votes.argmax())
    reference = scores[train]
    median = float(np.median(reference)) if len(reference) else 0.0
    mad = float(np.median(np.abs(reference - median))) if len(reference) else 0.0
    return OutlierScores(scores, classes, median + spread * max(mad, 1e-6), k)
