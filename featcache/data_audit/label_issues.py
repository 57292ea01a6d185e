"""Likely label errors: images whose own label gets little probability from a linear head.

Training images are scored out of fold: a logistic-regression head (the
`logreg` head, on the unit vectors standardised with the training split's
mean and deviation) is trained on the other folds of the
training split, with every image's rows in one fold, so no image is scored
by a model that saw it. Images of the other splits are scored by one head
trained on the whole training split. Each image's self-confidence is the
probability the head gives its own label (the ranking cleanlab calls
`self_confidence`); the lowest come first, each with the class the head
prefers instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .vectors import AuditRows

FOLDS = 5


@dataclass
class LabelScores:
    """Per audited row: self-confidence, the preferred class and its probability."""

    self_confidence: np.ndarray
    preferred: np.ndarray
    preferred_probability: np.ndarray
    folds: int


def _head(seed: int):
    from ..heads import create_head

    return create_head("logreg", seed=seed)


def score_labels(rows: AuditRows, train_split: str = "train", folds: int = FOLDS,
                 seed: int = 0, progress=None) -> LabelScores:
    """Out-of-fold probabilities on `train_split`, a whole-split head's on the other splits.

    Raises:
        UsageError: fewer than 2 training images in some class (no folds possible).
    """
    from sklearn.preprocessing import StandardScaler

    from ..heads.calibration import grouped_folds, image_groups, out_of_fold_scores

    n_classes = len(rows.class_names)
    train = rows.rows_of(train_split)
    others = np.flatnonzero(rows.splits != train_split)
    # unit vectors carry tiny per-feature values: standardised, the head's default C fits them
    x = StandardScaler().fit(rows.vectors[train]).transform(rows.vectors).astype(np.float32)
    y = rows.labels
    cuts = grouped_folds(y[train], image_groups(rows.hashes[train]), folds, seed=seed,
                         what="audit --folds")
    probabilities = np.zeros((len(rows), n_classes))
    probabilities[train], _ = out_of_fold_scores(lambda: _head(seed), x[train], y[train], cuts,
                                                 n_classes, progress=progress)
    if len(others):
        head = _head(seed).fit(x[train], y[train], progress=False)
        probabilities[np.ix_(others, head.classes_.astype(np.int64))] = head.predict_proba(x[others])
    own = probabilities[np.arange(len(rows)), y]
    masked = probabilities.copy()
    masked[np.arange(len(rows)), y] = -1.0
    preferred = masked.argmax(axis=1)
    return LabelScores(own, preferred, masked[np.arange(len(rows)), preferred], len(cuts))


def nearest_of_class(rows: AuditRows, row: int, label: int, among: np.ndarray) -> int | None:
    """The row of class `label` among `among` whose image is most like `row`'s, if any."""
    candidates = among[(rows.labels[among] == label) & (among != row)]
    if not len(candidates):
        return None
    return int(candidates[np.argmax(rows.vectors[candidates] @ rows.vectors[row])])
