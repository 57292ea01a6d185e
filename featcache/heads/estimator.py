"""The scikit-learn estimator contract every head follows, on cached feature rows.

A head maps feature rows (N, *feature_shape) to class scores (N, C). Flat
(N, D) rows and spatial (N, H, W, C) rows are both allowed; `spatial` says
how spatial rows are reduced. `HeadBase.fit(X, y)` trains on arrays and
`HeadBase.fit_cache(train, val)` on cache splits (`featcache.heads.feed`), and
both reach the same training loop, so the fitted state is the same either way.

Multi-label: with a 0/1 indicator matrix `y` (N, L), or a multi-label cache
(`featcache.multilabel`), a head scores each label on its own (sigmoids, or
one-vs-rest classifiers); `predict` returns the (N, L) 0/1 decisions at the
per-label `thresholds_`.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ..errors import UsageError
from .base import spatial_mode


class HeadBase(ClassifierMixin, BaseEstimator):
    """A classifier on cached feature rows, following the scikit-learn contract.

    Subclasses store their keyword arguments in `__init__` and implement
    `_check_params`, `_train`, `_scores`, `_save_model`, `_load_model` and
    `to_keras`.

    Fitted attributes:
        classes_: the classes, in score-column order (np.unique(y), or the
            cache's class names).
        n_features_in_: numbers per row (the product of `feature_shape_`).
        feature_shape_: shape of one row, e.g. (512,) or (7, 7, 512).
        spatial_: the spatial mode used ("none" for flat rows).
        history_: per-epoch training curves (empty when there are none).
        best_epoch_: the epoch whose weights were kept, or None.
        notes_: anything else worth recording (epochs run, search results).
        model_: the trained model.
        multi_label_: whether it scores labels independently (multi-label).
        thresholds_: multi-label only: per-label decision thresholds (0.5 until
            `tune_thresholds`).
    """

    #: parameters a registry entry sets, not a user
    STRUCTURAL: tuple[str, ...] = ("name",)

    @classmethod
    def head_params(cls, params: dict) -> list[str]:
        """The user-facing parameters that apply to a head configured with `params`."""
        return [p for p in cls._get_param_names() if p not in cls.STRUCTURAL]

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def __repr__(self, N_CHAR_MAX=700) -> str:
        """scikit-learn's repr, plus the validation score of a head trained by featcache."""
        text = super().__repr__(N_CHAR_MAX)
        score = self.__dict__.get("val_accuracy_")
        return text if score is None else f"{text}  # val accuracy {score:.4f}"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, progress: bool | None = None):
        """Train on arrays.

        Args:
            X: feature rows (N, D) or (N, H, W, C).
            y: class labels (N,), any values np.unique can sort.
            progress: show an epoch bar (None: only on a terminal).

        Returns:
            self, fitted.
        """
        from .feed import ArraySplit

        X, labels, classes, sets = self._training_arrays(X, y)
        return self._fit_split(ArraySplit(X, labels, classes, "X", sets), None, progress, classes)

    def fit_cache(self, train, val=None, progress: bool | None = None):
        """Train on cache splits (`featcache.heads.feed.FeatureSplit`), in memory or streamed.

        Args:
            train: the training split; its class names (a multi-label cache's label
                names) become `classes_`.
            val: optional validation split (Keras heads: early stopping).
            progress: show an epoch bar (None: only on a terminal).

        Returns:
            self, fitted.
        """
        return self._fit_split(train, val, progress, np.array(train.label_names))

    def _training_arrays(self, X, y):
        """(X, label indices, classes, label sets): label sets is the (sets, L) indicator
        of a multi-label `y` (label indices then index its rows), else None."""
        from sklearn.utils.multiclass import check_classification_targets, type_of_target
        from sklearn.utils.validation import check_X_y

        if type_of_target(y) == "multilabel-indicator":
            X, y = check_X_y(X, y, allow_nd=True, dtype="numeric", multi_output=True)
            sets, labels = np.unique(np.asarray(y, dtype=np.float32), axis=0, return_inverse=True)
            return X.astype(np.float32, copy=False), labels.ravel(), np.arange(y.shape[1]), sets
        X, y = check_X_y(X, y, allow_nd=True, dtype="numeric")
        check_classification_targets(y)
        classes, labels = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise UsageError(f"{type(self).__name__} needs at least two classes in y; "
                             f"got one class ({classes[0]!r}).")
        return X.astype(np.float32, copy=False), labels, classes, None

    def _label_indices(self, y) -> np.ndarray:
        """Map labels to indices into classes_ (validation data)."""
        from sklearn.utils.validation import column_or_1d

        y = column_or_1d(y)
        index = np.searchsorted(self.classes_, y)
        index = np.clip(index, 0, len(self.classes_) - 1)
        bad = self.classes_[index] != y
        if np.any(bad):
            raise UsageError(f"y has labels not seen in training: {sorted(set(np.asarray(y)[bad]))[:5]}.")
        return index

    def _fit_split(self, train, val, progress, classes):
        feature_shape = tuple(int(d) for d in train.feature_shape)
        multi_label = train.label_indicator is not None
        self._check_params(len(classes), feature_shape, multi_label)
        for attr in ("model_", "history_", "best_epoch_", "notes_", "source_", "val_accuracy_",
                     "metrics_", "summary_", "thresholds_"):
            self.__dict__.pop(attr, None)
        self.multi_label_ = multi_label
        if multi_label:
            from ..multilabel import DEFAULT_THRESHOLD

            self.thresholds_ = np.full(len(classes), DEFAULT_THRESHOLD)
        self.classes_ = np.asarray(classes)
        self.feature_shape_ = feature_shape
        self.n_features_in_ = int(np.prod(feature_shape))
        self.spatial_ = spatial_mode(self.spatial, feature_shape)
        model, history, best_epoch, notes = self._train(train, val, progress)
        self.history_, self.best_epoch_, self.notes_ = history, best_epoch, notes
        self.model_ = model
        return self

    def check_params(self, n_classes: int, feature_shape: tuple[int, ...],
                     multi_label: bool = False) -> None:
        """Refuse parameters this head cannot use for such data, before any is read.

        Raises:
            ParameterError: naming the parameter.
        """
        self._check_params(n_classes, tuple(feature_shape), multi_label)
        spatial_mode(self.spatial, tuple(feature_shape))

    def can_stream(self) -> bool:
        """Whether this head, as configured, can train from a split streamed from disk."""
        return False

    # ------------------------------------------------------------------ predicting
    def _rows(self, X) -> np.ndarray:
        from sklearn.utils.validation import check_array, check_is_fitted

        check_is_fitted(self)
        X = check_array(X, allow_nd=True, dtype="numeric")
        if tuple(X.shape[1:]) != self.feature_shape_:
            got = int(np.prod(X.shape[1:]))
            shape = "" if got != self.n_features_in_ else f" (shape {tuple(X.shape[1:])}, not {self.feature_shape_})"
            raise UsageError(f"X has {got} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input{shape}.")
        return X.astype(np.float32, copy=False)

    def predict_proba(self, X) -> np.ndarray:
        """Class scores (N, C), columns in `classes_` order; rows sum to 1 (multi-label:
        each label's own probability, in [0, 1]).

        Raises:
            NotFittedError: before fit.
        """
        return self._scores(self._rows(X))

    def predict(self, X) -> np.ndarray:
        """The most likely class of each row.

        Raises:
            NotFittedError: before fit.
        """
        scores = self.predict_proba(X)  # first: raises NotFittedError before fit
        if self.multi_label:
            from ..multilabel import decide

            return decide(scores, self.thresholds_)
        return self.classes_[np.argmax(scores, axis=1)]

    @property
    def multi_label(self) -> bool:
        """Whether the fitted head scores labels independently (see the module docstring)."""
        return bool(self.__dict__.get("multi_label_", False))

    def tune_thresholds(self, X, Y) -> "HeadBase":
        """Multi-label: set `thresholds_` to those maximising each label's F1 on (X, Y).

        Args:
            X: feature rows; Y: their (N, L) 0/1 indicator matrix.
        """
        from ..multilabel import tune_thresholds

        if not self.multi_label:
            raise UsageError("tune_thresholds applies to multi-label heads only.")
        self.thresholds_ = tune_thresholds(np.asarray(Y), self.predict_proba(X))
        return self

    @property
    def class_names(self) -> list[str]:
        """`classes_` as a list of str (the cache's class names)."""
        return [str(c) for c in np.asarray(self.classes_).tolist()]

    @property
    def n_classes(self) -> int:
        return len(self.classes_)

    # ------------------------------------------------------------------ files
    def save(self, folder: str) -> str:
        """Write the trained model into `folder`; returns the file name written."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        return self._save_model(folder)

    def restore(self, path: str, class_names: list[str], feature_shape: tuple[int, ...],
                spatial: str, history: dict | None = None, training: dict | None = None,
                multi_label: dict | None = None) -> "HeadBase":
        """Load a saved model from `path` and set the fitted state it was saved with.

        Args:
            multi_label: a multi-label head's config entry ({"thresholds": [...]}).

        Returns:
            self, fitted.
        """
        training = training or {}
        self.classes_ = np.array(class_names)
        self.feature_shape_ = tuple(int(d) for d in feature_shape)
        self.n_features_in_ = int(np.prod(self.feature_shape_))
        self.spatial_ = spatial
        self.history_ = dict(history or {})
        self.best_epoch_ = training.get("best_epoch")
        self.notes_ = {k: v for k, v in training.items() if k in ("epochs_run", "search", "epochs",
                                                                    "streamed")}
        self.multi_label_ = multi_label is not None
        if multi_label is not None:
            self.thresholds_ = np.asarray(multi_label["thresholds"], dtype=np.float64)
        self.model_ = self._load_model(path)
        return self

    def keras_input(self, keras):
        """(inputs, x): a Keras input for one feature row and its spatial reduction."""
        inputs = keras.Input(self.feature_shape_, name="features")
        layer = {"flatten": lambda: keras.layers.Flatten(name="flatten"),
                 "avg": lambda: keras.layers.GlobalAveragePooling2D(name="avg_pool"),
                 "max": lambda: keras.layers.GlobalMaxPooling2D(name="max_pool")}.get(self.spatial_)
        return inputs, (layer()(inputs) if layer else inputs)

    # ------------------------------------------------------------------ subclass hooks
    def _check_params(self, n_classes: int, feature_shape: tuple[int, ...],
                      multi_label: bool = False) -> None:
        """Raise ParameterError for values this head cannot use (on such data)."""

    def _train(self, train, val, progress):
        """Train on splits; returns (model, history, best_epoch, notes)."""
        raise NotImplementedError

    def _scores(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _save_model(self, folder: str) -> str:
        raise NotImplementedError

    def _load_model(self, path: str):
        raise NotImplementedError

    def to_keras(self):
        """A Keras model mapping feature rows to the same scores, for export.

        Raises:
            ExportError: the head cannot be expressed with Keras layers.
        """
        raise NotImplementedError
