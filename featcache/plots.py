"""PNG plots of training curves and confusion matrices (matplotlib, no display needed)."""

from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: dict[str, list[float]], path: str, title: str,
                 best_epoch: int | None = None, phase_start: int | None = None,
                 phase_start_point: dict | None = None) -> str | None:
    """Training and validation accuracy and loss per epoch, side by side.

    Args:
        history: Keras-style history ("loss", "accuracy", "val_loss", "val_accuracy").
        path: PNG file to write.
        title: figure title.
        best_epoch: 0-based epoch whose weights were kept (marked with a dot).
        phase_start: 0-based epoch where a second phase (fine-tuning) starts
            (drawn as a dashed vertical line).
        phase_start_point: the second phase's epoch 0, the model evaluated
            before its first update ({"val_accuracy", "val_loss"}), drawn on
            that line and joined to the phase's first validation point.

    Returns:
        The path, or None when there is nothing to plot.
    """
    if not history.get("loss"):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, label in ((axes[0], "accuracy", "accuracy"), (axes[1], "loss", "loss")):
        for key, style, name in ((metric, "-", "training"), (f"val_{metric}", "--", "validation")):
            values = history.get(key)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, marker="o", markersize=3, label=name)
                if best_epoch is not None and key.startswith("val_") and best_epoch < len(values):
                    ax.plot(best_epoch + 1, values[best_epoch], "o", color="black", markersize=7,
                            fillstyle="none", label="kept weights")
        if phase_start is not None:
            ax.axvline(phase_start + 0.5, color="gray", linestyle=":", label="fine-tuning starts")
            start = (phase_start_point or {}).get(f"val_{metric}")
            if start is not None:
                after = (history.get(f"val_{metric}") or [])[phase_start:phase_start + 1]
                ax.plot([phase_start + 0.5, *(phase_start + 1 for _ in after)], [start, *after], ":",
                        color="black", linewidth=1)
                ax.plot(phase_start + 0.5, start, "*", color="black", markersize=9,
                        label="fine-tuning epoch 0 (before any update)")
            if best_epoch is None and start is not None:
                ax.plot(phase_start + 0.5, start, "o", color="black", markersize=12,
                        fillstyle="none", label="kept weights")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(matrix: list[list[int]], class_names: list[str], path: str, title: str) -> str:
    """The confusion matrix with counts in each cell (rows: true class)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    n = len(class_names)
    size = min(4 + 0.45 * n, 16)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=class_names).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45 if n > 4 else "horizontal",
        values_format="d", include_values=n <= 30)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reliability(labels, curves: dict, path: str, title: str, bins: int = 15) -> str:
    """Reliability diagram: accuracy against confidence of the top label, one line per
    set of scores (e.g. {"before": p, "after calibration": q}), with the diagonal.

    Args:
        labels: (N,) true class indices.
        curves: name -> (N, C) scores.
        path: PNG file to write.
        title: figure title.
    """
    from .metrics import expected_calibration_error, reliability_bins

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5))
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfectly calibrated")
    for name, scores in curves.items():
        b = reliability_bins(labels, scores, bins)
        seen = b["count"] > 0
        ece = expected_calibration_error(labels, scores, bins)
        ax.plot(b["confidence"][seen], b["accuracy"][seen], marker="o", markersize=4,
                label=f"{name} (ECE {ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence of the top class")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_leaderboard(rows: list[dict], path: str, title: str, key: str = "val_accuracy",
                     label: str = "validation accuracy") -> str:
    """A validation measure (`key`) against fit seconds (log scale), one labelled point per
    head; the winner is circled."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    scored = [r for r in rows if r.get(key) is not None]
    for r in scored:
        x, y = max(r["fit_seconds"], 1e-3), r[key]
        ax.scatter([x], [y], color="tab:orange" if r.get("winner") else "tab:blue", zorder=3)
        ax.annotate(r["head"], (x, y), fontsize=8, xytext=(4, 3), textcoords="offset points")
        if r.get("winner"):
            ax.scatter([x], [y], s=220, facecolors="none", edgecolors="tab:orange", zorder=3)
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on short spans
    ax.set_xlabel("fit seconds (model selection + final fit, log scale)")
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_per_label(metrics: dict, path: str, title: str) -> str:
    """A multi-label head's precision, recall and F1 per label, as grouped horizontal bars."""
    plt = _pyplot()
    names = metrics["label_names"]
    per = metrics["per_label"]
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.55 * len(names)))
    y = np.arange(len(names))
    for k, (key, colour) in enumerate((("precision", "#4c72b0"), ("recall", "#dd8452"),
                                       ("f1", "#55a868"))):
        ax.barh(y + (k - 1) * 0.27, [per[n][key] for n in names], height=0.27, color=colour,
                label=key)
    ax.set_yticks(y, [f"{n} (t={per[n]['threshold']:.2f})" for n in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score at the label's threshold")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
