"""Exact and near duplicates, across splits (leaks) and inside each split.

Exact duplicates share the sha256 of their file bytes. Near duplicates are
pairs of different files whose feature vectors have a cosine similarity of
at least `threshold`: the same photo re-encoded, resized, cropped a little or
shot twice in a burst. Neighbours come from scikit-learn's brute-force
search on unit vectors (a matrix product per block of rows), so the memory
a query needs is bounded whatever the cache's size.

Across splits, every row of a later split is matched against the rows of the
splits before it (val against train, test against train and val): a copy of
a training image in validation makes every validation figure optimistic.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .vectors import AuditRows

# cosine similarity of pooled MobileNet features above which two different files are
# reported as the same picture; benchmarks/audit_recall.py measured where re-encoded and resized
# copies fall against the closest distinct images of real sets: on hymenoptera and cats_dogs
# every clean val image stays below 0.84, resized copies fall at 0.89-0.98 (RESULTS.md §13)
NEAR_THRESHOLD = 0.90
# neighbours looked at per image inside a split (a group of more near copies than this is
# still found, pair by pair, through its members)
NEIGHBOURS = 5


def _nearest(reference: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices into reference) of each query's k nearest reference rows."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(reference))
    index = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean").fit(reference)
    distances, indices = index.kneighbors(queries, n_neighbors=k)
    return 1.0 - distances.astype(np.float64) ** 2 / 2.0, indices


def exact_groups(rows: AuditRows) -> tuple[list[list[int]], list[list[int]]]:
    """Rows sharing file content: (groups spanning several splits, groups inside one split)."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(rows.hashes):
        by_hash[digest].append(i)
    across, within = [], []
    for group in by_hash.values():
        if len(group) > 1:
            (across if len({rows.splits[i] for i in group}) > 1 else within).append(group)
    return across, within


def near_across_splits(rows: AuditRows, threshold: float) -> list[tuple[float, int, int]]:
    """(similarity, earlier-split row, later-split row) of each later-split row's nearest
    earlier-split image, where it is at least `threshold` similar and not the same file."""
    found = []
    order = list(dict.fromkeys(rows.splits.tolist()))
    for i, split in enumerate(order[1:], start=1):
        reference = np.flatnonzero(np.isin(rows.splits, order[:i]))
        queries = rows.rows_of(split)
        if not len(reference) or not len(queries):
            continue
        sims, nearest = _nearest(rows.vectors[reference], rows.vectors[queries], 1)
        for q, sim, j in zip(queries, sims[:, 0], reference[nearest[:, 0]]):
            if sim >= threshold and rows.hashes[q] != rows.hashes[j]:
                found.append((float(sim), int(j), int(q)))
    return sorted(found, key=lambda f: -f[0])


def near_within_splits(rows: AuditRows, threshold: float,
                       neighbours: int = NEIGHBOURS) -> list[tuple[float, int, int]]:
    """(similarity, row, row) of near-duplicate pairs of different files inside each split."""
    pairs: dict[tuple[int, int], float] = {}
    for split in dict.fromkeys(rows.splits.tolist()):
        members = rows.rows_of(split)
        if len(members) < 2:
            continue
        sims, nearest = _nearest(rows.vectors[members], rows.vectors[members], neighbours + 1)
        for a, row_sims, row_nearest in zip(members, sims, nearest):
            for sim, b in zip(row_sims, members[row_nearest]):
                if b != a and sim >= threshold and rows.hashes[a] != rows.hashes[b]:
                    pairs[(min(a, b), max(a, b))] = float(sim)
    return sorted(((s, int(a), int(b)) for (a, b), s in pairs.items()), key=lambda f: -f[0])
