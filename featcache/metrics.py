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
