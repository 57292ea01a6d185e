"""What every head shares: its registry entry, its options, and its interface.

A head maps cached feature rows (N, *feature_shape) to class scores (N, C).
Keras heads and scikit-learn heads implement the same `Head` interface, so
training, evaluation, prediction, export and the benchmarks treat them alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..errors import UsageError

SPATIAL_MODES = ("flatten", "avg", "max")


@dataclass(frozen=True)
class HeadSpec:
    """A registered head.

    Attributes:
        name: registry name, e.g. "dense256".
        kind: "keras" or "sklearn".
        description: one line for listings.
        spatial: how spatial (H, W, C) features reach it by default:
            "flatten", "avg" or "max" global pooling.
        streamable: can train from a cache streamed from disk.
        exportable: can become Keras layers for `featcache export`.
        defaults: option values that differ from HeadOptions' for this head.
    """

    name: str
    kind: str
    description: str
    spatial: str = "avg"
    streamable: bool = False
    exportable: bool = False
    defaults: tuple[tuple[str, object], ...] = ()


@dataclass
class HeadOptions:
    """Every option `featcache train-head` takes; None means "the head's default".

    Keras heads use the training-loop options; scikit-learn heads use the
    estimator ones. `seed` makes either repeat exactly.
    """

    epochs: int | None = None
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float | None = None
    early_stopping: bool = True
    patience: int = 5
    class_weight: str | None = None
    label_smoothing: float = 0.0
    units: tuple[int, ...] = (512, 128)
    dropout: float = 0.5
    l2: float = 0.0
    C: float | None = None
    alpha: float | None = None
    neighbors: int | None = None
    trees: int | None = None
    scale: bool | None = None
    pca: int | None = None
    search: bool = False
    cv: int = 5
    spatial: str | None = None
    shuffle_window: int | None = None
    seed: int = 0

    def resolved(self, spec: HeadSpec) -> "HeadOptions":
        """A copy with the head's own defaults filled into unset (None) fields."""
        values = asdict(self)
        for key, value in spec.defaults:
            if values.get(key) is None:
                values[key] = value
        return HeadOptions(**values)

    def to_json(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> "HeadOptions":
        known = {f.name for f in fields(cls)}
        values = {k: (tuple(v) if k == "units" else v) for k, v in data.items() if k in known}
        return cls(**values)


def class_weights(labels: np.ndarray, n_classes: int, mode: str | None) -> np.ndarray | None:
    """Per-class weights: "balanced" gives n / (k * count), as scikit-learn does."""
    if not mode:
        return None
    if mode != "balanced":
        raise UsageError(f"--class-weight {mode}: the only mode is 'balanced'.")
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(n_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights.astype(np.float32)


def spatial_mode(spec: HeadSpec, options: HeadOptions, feature_shape: tuple[int, ...]) -> str:
    """How this head reduces the cache's features: "none" for flat features."""
    if len(feature_shape) == 1:
        return "none"
    mode = options.spatial or spec.spatial
    if mode not in SPATIAL_MODES:
        raise UsageError(f"--spatial {mode}: allowed values are {', '.join(SPATIAL_MODES)}.")
    return mode


def reduce_spatial(features: np.ndarray, mode: str) -> np.ndarray:
    """Apply a spatial mode to a batch of features in numpy (scikit-learn heads)."""
    if mode == "none":
        return features
    if mode == "flatten":
        return features.reshape(len(features), -1)
    axes = tuple(range(1, features.ndim - 1))
    return features.mean(axis=axes) if mode == "avg" else features.max(axis=axes)


@dataclass
class FitResult:
    """What fitting reports back: per-epoch history and anything worth recording."""

    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int | None = None
    notes: dict = field(default_factory=dict)


class Head(ABC):
    """A trained or trainable classifier on cached features.

    Attributes:
        spec: registry entry.
        options: resolved options.
        class_names: output classes, in label order.
        feature_shape: shape of one cached feature row.
        spatial: resolved spatial mode ("none" for flat features).
    """

    def __init__(self, spec: HeadSpec, options: HeadOptions, class_names: list[str],
                 feature_shape: tuple[int, ...]):
        self.spec = spec
        self.options = options
        self.class_names = list(class_names)
        self.feature_shape = tuple(feature_shape)
        self.spatial = spatial_mode(spec, options, self.feature_shape)

    def validate(self) -> None:
        """Refuse options this head cannot use, before any data is read."""

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def keras_input(self, keras):
        """(inputs, x): a Keras input for one feature row and its spatial reduction."""
        inputs = keras.Input(self.feature_shape, name="features")
        layer = {"flatten": lambda: keras.layers.Flatten(name="flatten"),
                 "avg": lambda: keras.layers.GlobalAveragePooling2D(name="avg_pool"),
                 "max": lambda: keras.layers.GlobalMaxPooling2D(name="max_pool")}.get(self.spatial)
        return inputs, (layer()(inputs) if layer else inputs)

    @abstractmethod
    def fit(self, train, val=None) -> FitResult:
        """Train on a `featcache.reader.FeatureSplit` (val optional)."""

    @abstractmethod
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class scores (N, C) for raw cached feature rows; rows sum to 1."""

    @abstractmethod
    def save(self, folder: str) -> str:
        """Write the model into `folder`; returns the file name written."""

    @abstractmethod
    def to_keras(self):
        """A Keras model mapping feature rows to the same scores, for export.

        Raises:
            ExportError: the head cannot be expressed with Keras layers.
        """
