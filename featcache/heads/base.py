"""Training helpers shared by the heads and fine-tuning, declared once.

The optimizer table and its default learning rates, class weights, the epoch
progress bar, and the spatial modes that reduce (H, W, C) feature rows. Light
to import: neither Keras nor scikit-learn is loaded here.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError

SPATIAL_MODES = ("flatten", "avg", "max")

# The one optimizer table: default learning rates for a head trained on cached
# features and for fine-tuning, where it is the head's peak rate and the unfrozen backbone
# layers learn at a fraction of it (featcache.finetuning.BACKBONE_LR_FACTOR).
OPTIMIZERS: dict[str, dict[str, float]] = {
    "adam": {"head": 1e-3, "finetune": 1e-4},
    "sgd": {"head": 1e-2, "finetune": 1e-3},
    "rmsprop": {"head": 1e-3, "finetune": 1e-4},
}


def check_optimizer(name: str) -> None:
    """Raises ParameterError unless `name` is in OPTIMIZERS."""
    if name not in OPTIMIZERS:
        raise ParameterError("optimizer", name, f"allowed values are {', '.join(OPTIMIZERS)}.")


def make_optimizer(keras, name: str, learning_rate: float | None, phase: str = "head"):
    """A Keras optimizer; learning_rate None (or 0) means the table's default for `phase`.

    sgd uses momentum 0.9.
    """
    check_optimizer(name)
    lr = learning_rate or OPTIMIZERS[name][phase]
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=0.9)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr)
    return keras.optimizers.Adam(learning_rate=lr)


def class_weights(labels: np.ndarray, n_classes: int, mode: str | None) -> np.ndarray | None:
    """Per-class weights: "balanced" gives n / (k * count), as scikit-learn does."""
    if not mode:
        return None
    if mode != "balanced":
        raise ParameterError("class_weight", mode, "the only mode is 'balanced'.")
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(n_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights.astype(np.float32)


def epoch_bar(keras, epochs: int, enabled: bool | None, desc: str = "train head"):
    """A Keras callback driving a tqdm bar over epochs (None: only on a terminal)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=epochs, unit="epoch", desc=desc, leave=False,
               disable=None if enabled is None else not enabled)

    class EpochBar(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            shown = ("loss", "accuracy", "val_loss", "val_accuracy")
            bar.set_postfix({k: f"{v:.3f}" for k, v in (logs or {}).items() if k in shown})
            bar.update(1)

        def on_train_end(self, logs=None):
            bar.close()

    return EpochBar()


def spatial_mode(spatial: str | None, feature_shape: tuple[int, ...]) -> str:
    """How a head reduces feature rows of this shape: "none" for flat features."""
    if len(feature_shape) == 1:
        return "none"
    if spatial not in SPATIAL_MODES:
        raise ParameterError("spatial", spatial, f"allowed values are {', '.join(SPATIAL_MODES)}.")
    return spatial


def reduce_spatial(features: np.ndarray, mode: str) -> np.ndarray:
    """Apply a spatial mode to a batch of features in numpy (scikit-learn heads)."""
    if mode == "none":
        return features
    if mode == "flatten":
        return features.reshape(len(features), -1)
    axes = tuple(range(1, features.ndim - 1))
    return features.mean(axis=axes) if mode == "avg" else features.max(axis=axes)
