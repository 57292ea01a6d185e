"""Multi-label decisions: per-label thresholds tuned for F1, and the label sets they come from.

A multi-label data list names several labels per image in its label column,
separated by `;` ("daisy;white"). The cache stores each distinct label set as
a class name (`featcache.cache.labels`, re-exported here);
`indicator(class_names, label_names)` turns a row's set into the 0/1 vector a
multi-label head fits, one sigmoid (or one-vs-rest classifier) per label.

Thresholds are chosen per label on the validation scores, to maximise that
label's F1 (`tune_thresholds`); without validation data they stay at 0.5.
"""

from __future__ import annotations

import numpy as np

from .cache.labels import SEPARATOR, indicator, label_set, labels_of, vocabulary

DEFAULT_THRESHOLD = 0.5
__all__ = ["SEPARATOR", "DEFAULT_THRESHOLD", "decide", "indicator", "label_set", "labels_of",
           "sigmoid", "tune_thresholds", "vocabulary"]


def tune_thresholds(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-label thresholds that maximise each label's F1 on (targets, scores).

    The threshold is the midpoint between the lowest score kept positive and
    the next score below it, so it generalises a little better than the score
    itself; a label without positives (or without rows) keeps 0.5.
    """
    from sklearn.metrics import precision_recall_curve

    targets = np.asarray(targets)
    thresholds = np.full(targets.shape[1], DEFAULT_THRESHOLD)
    for j in range(targets.shape[1]):
        y, s = targets[:, j], np.asarray(scores[:, j], dtype=np.float64)
        if y.sum() == 0 or y.sum() == len(y):
            continue
        precision, recall, cuts = precision_recall_curve(y, s)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        best = int(np.argmax(f1[:-1]))  # the last point (recall 0) has no threshold
        cut = cuts[best]
        below = s[s < cut]
        thresholds[j] = float((cut + below.max()) / 2) if len(below) else float(cut)
    return thresholds


def decide(scores: np.ndarray, thresholds) -> np.ndarray:
    """0/1 decisions: score at or above the label's threshold."""
    return (np.asarray(scores) >= np.asarray(thresholds)[None, :]).astype(np.int64)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))
