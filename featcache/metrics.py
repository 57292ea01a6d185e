"""Classification metrics of a head's scores on one split, as JSON-able data."""

from __future__ import annotations

import numpy as np


def classification_metrics(labels: np.ndarray, scores: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, top-5 accuracy (more than 5 classes), log loss, per-class
    precision/recall/F1 and the confusion matrix (rows: true, columns: predicted).

    Args:
        labels: (N,) true class indices.
        scores: (N, C) class scores, rows summing to 1.
        class_names: the C class names.
    """
    from sklearn.metrics import classification_report, confusion_matrix, log_loss, top_k_accuracy_score

    scores = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, None)
    scores = scores / scores.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 +- 1e-7
    n_classes = len(class_names)
    classes = list(range(n_classes))
    predicted = scores.argmax(axis=1)
    report = classification_report(labels, predicted, labels=classes, target_names=class_names,
                                   output_dict=True, zero_division=0)
    metrics = {
        "rows": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)) if len(labels) else float("nan"),
        "log_loss": float(log_loss(labels, scores, labels=classes)),
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "ece": expected_calibration_error(labels, scores),
        "per_class": {
            name: {"precision": float(report[name]["precision"]),
                   "recall": float(report[name]["recall"]),
                   "f1": float(report[name]["f1-score"]),
                   "support": int(report[name]["support"])}
            for name in class_names
        },
        "class_names": list(class_names),
        "confusion_matrix": confusion_matrix(labels, predicted, labels=classes).tolist(),
    }
    if n_classes > 5:
        metrics["top5_accuracy"] = float(top_k_accuracy_score(labels, scores, k=5, labels=classes))
    return metrics


def _normalised(scores: np.ndarray) -> np.ndarray:
    scores = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, None)
    return scores / scores.sum(axis=1, keepdims=True)


def safe_log_loss(labels: np.ndarray, scores: np.ndarray) -> float:
    """Log loss of (N, C) scores against class indices (columns 0..C-1)."""
    from sklearn.metrics import log_loss

    scores = _normalised(scores)
    return float(log_loss(labels, scores, labels=list(range(scores.shape[1]))))


def reliability_bins(labels: np.ndarray, scores: np.ndarray, bins: int = 15) -> dict:
    """Top-label confidence against accuracy in equal-width confidence bins.

    Returns:
        {"edges": bins + 1 edges, "confidence": mean confidence per bin,
        "accuracy": accuracy per bin, "count": rows per bin} (NaN for empty bins).
    """
    scores = _normalised(scores)
    confidence = scores.max(axis=1)
    correct = (scores.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, confidence, minlength=bins) / count
        accuracy = np.bincount(which, correct, minlength=bins) / count
    return {"edges": edges, "confidence": mean_conf, "accuracy": accuracy, "count": count}


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top label: the row-weighted mean gap between
    confidence and accuracy over `bins` equal-width confidence bins (0: calibrated)."""
    if len(labels) == 0:
        return float("nan")
    b = reliability_bins(labels, scores, bins)
    seen = b["count"] > 0
    gaps = np.abs(b["accuracy"][seen] - b["confidence"][seen])
    return float(np.sum(gaps * b["count"][seen]) / np.sum(b["count"]))


def multilabel_metrics(targets: np.ndarray, scores: np.ndarray, thresholds, label_names: list[str]
                       ) -> dict:
    """Multi-label scores against the true label vectors: micro/macro F1 at the head's
    thresholds (and at 0.5, for comparison), mean average precision (threshold-free),
    subset accuracy, Hamming loss, mean binary log loss and per-label
    precision/recall/F1/AP/threshold.

    Args:
        targets: (N, L) 0/1 true labels.
        scores: (N, L) per-label probabilities.
        thresholds: (L,) decision thresholds.
        label_names: the L labels.
    """
    from sklearn.metrics import average_precision_score, f1_score, hamming_loss, precision_recall_fscore_support

    from .multilabel import DEFAULT_THRESHOLD, decide

    targets = np.asarray(targets, dtype=np.int64)
    scores = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, 1 - 1e-12)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    decided = decide(scores, thresholds)
    at_half = decide(scores, np.full(len(label_names), DEFAULT_THRESHOLD))
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, decided, average=None, zero_division=0)
    present = targets.sum(axis=0) > 0
    ap = np.full(len(label_names), np.nan)
    for j in np.flatnonzero(present):
        ap[j] = average_precision_score(targets[:, j], scores[:, j])
    bce = -(targets * np.log(scores) + (1 - targets) * np.log(1 - scores))
    n = len(targets)
    return {
        "rows": int(n),
        "multi_label": True,
        "accuracy": float(np.mean(np.all(decided == targets, axis=1))) if n else float("nan"),
        "micro_f1": float(f1_score(targets, decided, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(targets, decided, average="macro", zero_division=0)),
        "micro_f1_at_0.5": float(f1_score(targets, at_half, average="micro", zero_division=0)),
        "macro_f1_at_0.5": float(f1_score(targets, at_half, average="macro", zero_division=0)),
        "accuracy_at_0.5": float(np.mean(np.all(at_half == targets, axis=1))) if n else float("nan"),
        "mean_average_precision": float(np.nanmean(ap)) if present.any() else float("nan"),
        "hamming_loss": float(hamming_loss(targets, decided)) if n else float("nan"),
        "log_loss": float(bce.mean()) if n else float("nan"),
        "per_label": {
            name: {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
                   "average_precision": None if np.isnan(ap[j]) else float(ap[j]),
                   "threshold": float(thresholds[j]), "support": int(support[j])}
            for j, name in enumerate(label_names)
        },
        "label_names": list(label_names),
    }
