"""`SklearnHead`: a scikit-learn classifier, named by dotted path, on cached features.

The fitted model is a Pipeline: optional standardisation, optional PCA, the
classifier. `search=True` cross-validates the entry's `search_grid` (one
classifier parameter) with GridSearchCV, its folds run in parallel through
joblib. With `incremental=True` (the `sgd` entry) the classifier trains by
`partial_fit` over the same shuffled schedule as the Keras heads, so it also
trains from caches streamed from disk; the others need the features in memory.

Scores: linear classifiers (those with `coef_`: logreg, linear-svm, sgd,
ridge) give the softmax of their decision function (for logistic regression
that is exactly its probabilities; for the others a monotone score, not a
calibrated probability). Others (kNN, random forest) give `predict_proba`.
`calibrate` wraps the fitted pipeline in a temperature-scaled
CalibratedClassifierCV, whose probabilities are then the scores; a calibrated
linear head is still one affine map plus a softmax, so it still exports.

Multi-label data: the classifier is wrapped in a OneVsRestClassifier, one
binary classifier per label; linear heads score the sigmoid of each decision
value (logistic regression's own probabilities), the others `predict_proba`.
A search then scores folds by mean average precision.
"""

from __future__ import annotations

import importlib
import inspect

import joblib
import numpy as np

from ..errors import ExportError, ParameterError, UsageError, param
from .base import class_weights, reduce_spatial
from .estimator import HeadBase
from .feed import Schedule

MODEL_FILE = "model.joblib"
# featcache's parameter name -> the wrapped estimator's
ESTIMATOR_PARAMS = {"C": "C", "alpha": "alpha", "neighbors": "n_neighbors", "trees": "n_estimators",
                    "class_weight": "class_weight"}
_PARTIAL_FIT_ONLY = ("epochs", "batch_size", "shuffle_window")


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def resolve(path: str):
    """The object a dotted path names, e.g. "sklearn.linear_model.LogisticRegression"."""
    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ParameterError("estimator", path, f"cannot be imported ({exc}).") from None


def _estimator_param_names(path: str) -> set[str]:
    return set(inspect.signature(resolve(path)).parameters)


class SklearnHead(HeadBase):
    """A scikit-learn classifier behind optional scaling and PCA.

    Args:
        name: registry name, for messages.
        estimator: dotted path of the classifier class.
        estimator_params: fixed keyword arguments for it (e.g. max_iter).
        C, alpha, neighbors, trees: passed to the classifier as C, alpha,
            n_neighbors, n_estimators (only where it has that parameter).
        scale: standardise features first.
        pca: reduce to this many PCA components first (None: no PCA).
        search: cross-validate `search_grid` instead of using the value given.
        search_grid: (classifier parameter, values) for `search`.
        cv: folds for `search`.
        class_weight: None or "balanced".
        spatial: how (H, W, C) rows are reduced: "flatten", "avg" or "max".
        incremental: train by partial_fit over the shuffled schedule
            (unless search or pca is set).
        epochs, batch_size, shuffle_window: that schedule (incremental only).
        seed: the classifier's random_state (where it has one), PCA's and the folds'.
    """

    STRUCTURAL = ("name", "estimator", "estimator_params", "search_grid", "incremental")

    def __init__(self, name="sklearn", estimator="sklearn.linear_model.LogisticRegression",
                 estimator_params=None, C=None, alpha=None, neighbors=None, trees=None, scale=False,
                 pca=None, search=False, search_grid=None, cv=5, class_weight=None, spatial="avg",
                 incremental=False, epochs=None, batch_size=32, shuffle_window=None, seed=0):
        self.name = name
        self.estimator = estimator
        self.estimator_params = estimator_params
        self.C = C
        self.alpha = alpha
        self.neighbors = neighbors
        self.trees = trees
        self.scale = scale
        self.pca = pca
        self.search = search
        self.search_grid = search_grid
        self.cv = cv
        self.class_weight = class_weight
        self.spatial = spatial
        self.incremental = incremental
        self.epochs = epochs
        self.batch_size = batch_size
        self.shuffle_window = shuffle_window
        self.seed = seed

    @classmethod
    def head_params(cls, params: dict) -> list[str]:
        """User-facing parameters that apply: C, alpha, neighbors, trees and class_weight
        only where the classifier takes them, epochs, batch_size and shuffle_window only
        with incremental."""
        accepted = _estimator_param_names(params.get("estimator", cls().estimator))
        names = []
        for name in cls._get_param_names():
            if name in cls.STRUCTURAL:
                continue
            if name in ESTIMATOR_PARAMS and ESTIMATOR_PARAMS[name] not in accepted:
                continue
            if name in _PARTIAL_FIT_ONLY and not params.get("incremental"):
                continue
            names.append(name)
        return names

    @property
    def _by_partial_fit(self) -> bool:
        return bool(self.incremental) and not (self.search or self.pca)

    def can_stream(self) -> bool:
        return self._by_partial_fit

    def _check_params(self, n_classes, feature_shape, multi_label=False) -> None:
        if multi_label and self._by_partial_fit:
            raise ParameterError("incremental", True, f"head '{self.name}' trains by partial_fit, "
                                 "for single-label data only; use logreg or a Keras head for "
                                 "multi-label data.")
        if self.class_weight not in (None, "balanced"):
            raise ParameterError("class_weight", self.class_weight, "the only mode is 'balanced'.")
        if self.search and not self.search_grid:
            raise ParameterError("search", self.search, f"head '{self.name}' has no search grid.")
        if self._by_partial_fit and (self.epochs is None or int(self.epochs) < 1):
            raise ParameterError("epochs", self.epochs, "must be at least 1.")
        self._classifier()  # raises on parameters the classifier cannot take

    def _classifier(self):
        cls = resolve(self.estimator)
        accepted = set(inspect.signature(cls).parameters)
        kwargs = dict(self.estimator_params or {})
        for ours, theirs in ESTIMATOR_PARAMS.items():
            value = getattr(self, ours)
            if value is None:
                continue
            if theirs not in accepted:
                raise ParameterError(ours, value, f"does not apply to head '{self.name}'.")
            kwargs[theirs] = value
        if self._by_partial_fit:  # partial_fit takes class weights as sample weights instead
            kwargs.pop("class_weight", None)
        if "random_state" in accepted:
            kwargs["random_state"] = self.seed
        return cls(**kwargs)

    def _pipeline(self):
        from sklearn.decomposition import PCA
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        steps = []
        if self.scale:
            steps.append(("scale", StandardScaler()))
        if self.pca:
            steps.append(("pca", PCA(n_components=self.pca, random_state=self.seed)))
        clf = self._classifier()
        if self.multi_label:
            from sklearn.multiclass import OneVsRestClassifier

            clf = OneVsRestClassifier(clf)
        steps.append(("clf", clf))
        return Pipeline(steps)

    def _inputs(self, features: np.ndarray) -> np.ndarray:
        return reduce_spatial(np.asarray(features, dtype=np.float32), self.spatial_)

    def _train(self, train, val, progress):
        if self._by_partial_fit:
            return self._fit_by_partial_fit(train)
        if not train.in_memory:
            raise UsageError(
                f"Head '{self.name}'" + (" with search or pca" if self.incremental else "")
                + f" needs the training features in memory; use {param('model')}=sgd or a Keras "
                f"head to train from disk, or raise {param('max_memory')}.")
        X, y = self._inputs(train.all_features()), train.labels
        targets = y if not self.multi_label else train.label_indicator[y].astype(np.int64)
        if not self.search:
            return self._pipeline().fit(X, targets), {}, None, {}
        from sklearn.model_selection import (GridSearchCV, GroupKFold, KFold, StratifiedGroupKFold,
                                             StratifiedKFold)

        searched, grid = self.search_grid
        grid = list(grid)
        # multi-label: folds stratified by label set while every set can fill them
        folds = min(int(self.cv), int(np.bincount(y).min())) if not self.multi_label else int(self.cv)
        stratified = not self.multi_label or int(np.bincount(y).min()) >= folds
        if folds < 2:
            raise ParameterError("search", True, "needs at least 2 training rows of every class.")
        groups = None
        if "augment" in getattr(train.cache, "fingerprint", {}):
            # augmented views of one image stay in one fold: no validating on copies of training rows
            paths = train.cache.index(train.split)[0]
            groups = np.unique(paths, return_inverse=True)[1]
            cv = (StratifiedGroupKFold(folds, shuffle=True, random_state=self.seed) if stratified
                  else GroupKFold(folds))
        else:
            cv = (StratifiedKFold(folds, shuffle=True, random_state=self.seed) if stratified
                  else KFold(folds, shuffle=True, random_state=self.seed))
        key = f"clf__estimator__{searched}" if self.multi_label else f"clf__{searched}"
        search = GridSearchCV(self._pipeline(), {key: grid}, n_jobs=-1,
                              cv=list(cv.split(X, y, groups)),
                              scoring="average_precision" if self.multi_label else None)
        search.fit(X, targets)
        return search.best_estimator_, {}, None, {"search": {
            "param": searched, "grid": grid, "folds": folds,
            "best": search.best_params_[key],
            "mean_cv_accuracy": [float(v) for v in search.cv_results_["mean_test_score"]],
        }}

    def _fit_by_partial_fit(self, train):
        """SGD over the shuffled schedule: the same model in memory or streamed from disk."""
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        batch = self.batch_size
        scaler = None
        if self.scale:
            scaler = StandardScaler()
            plain = Schedule(train, batch, shuffle=False, window_rows=self.shuffle_window)
            for i in range(len(plain)):
                scaler.partial_fit(self._inputs(plain.batch(i)[0]))
        clf = self._classifier()
        n_classes = len(self.classes_)
        classes = np.arange(n_classes)
        weights = class_weights(train.labels, n_classes, self.class_weight)
        schedule = Schedule(train, batch, self.seed, True, self.shuffle_window)
        for _ in range(self.epochs):
            for i in range(len(schedule)):
                features, labels, _ = schedule.batch(i)
                X = self._inputs(features)
                clf.partial_fit(scaler.transform(X) if scaler is not None else X, labels,
                                classes=classes,
                                sample_weight=None if weights is None else weights[labels])
            schedule.next_epoch()
        model = Pipeline(([("scale", scaler)] if scaler is not None else []) + [("clf", clf)])
        return model, {}, None, {"epochs": self.epochs, "streamed": not train.in_memory}

    @property
    def calibrated(self) -> bool:
        """Whether the fitted model is wrapped in a CalibratedClassifierCV (see `calibrate`)."""
        return hasattr(self.model_, "calibrated_classifiers_")

    def pipeline(self):
        """The fitted scaling/PCA/classifier Pipeline (inside the calibration, if any)."""
        if self.calibrated:
            return self.model_.calibrated_classifiers_[0].estimator
        return self.model_

    @property
    def is_linear(self) -> bool:
        """Whether the fitted classifier is one affine map (it has coef_; multi-label: each of
        its one-vs-rest classifiers)."""
        clf = self.pipeline().steps[-1][1]
        if self.multi_label:  # a label constant in training gets a constant predictor instead
            return any(hasattr(e, "coef_") for e in clf.estimators_)
        return hasattr(clf, "coef_")

    def decision(self, features: np.ndarray) -> np.ndarray:
        """Decision values (N, C) of a linear head (two columns for two classes), uncalibrated."""
        scores = self.pipeline().decision_function(self._inputs(features))
        if scores.ndim == 1:
            scores = np.stack([np.zeros_like(scores), scores], axis=1)
        return scores

    def _scores(self, X: np.ndarray) -> np.ndarray:
        model = self.model_
        if self.multi_label:
            from ..multilabel import sigmoid

            if self.is_linear:
                return sigmoid(np.asarray(model.decision_function(self._inputs(X)), dtype=np.float64))
            return np.asarray(model.predict_proba(self._inputs(X)), dtype=np.float64)
        if self.is_linear and not self.calibrated:
            return _softmax(np.asarray(self.decision(X), dtype=np.float64))
        probs = np.zeros((len(X), self.n_classes))
        probs[:, model.classes_] = model.predict_proba(self._inputs(X))
        return probs

    def calibrate(self, X, labels: np.ndarray, folds) -> "SklearnHead":
        """Replace the fitted model by a temperature-scaled one (CalibratedClassifierCV).

        The pipeline, with the parameters it was fitted with, is refitted on all of
        `X`; the temperature is fitted to its out-of-fold scores over `folds` (held-out
        training rows, see `featcache.heads.calibration.grouped_folds`).

        Returns:
            self, calibrated.
        """
        from sklearn.base import clone
        from sklearn.calibration import CalibratedClassifierCV

        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        base = clone(self.pipeline())
        calibrated = CalibratedClassifierCV(base, method="temperature", cv=list(folds), ensemble=False)
        calibrated.fit(self._inputs(self._rows(X)), np.asarray(labels))
        self.model_ = calibrated
        return self

    @property
    def temperature(self) -> float | None:
        """The fitted temperature (1 / beta) of a calibrated head, else None."""
        if not self.calibrated:
            return None
        return 1.0 / float(self.model_.calibrated_classifiers_[0].calibrators[0].beta_)

    def _save_model(self, folder: str) -> str:
        import os

        joblib.dump(self.model_, os.path.join(folder, MODEL_FILE))
        return MODEL_FILE

    def _load_model(self, path: str):
        return joblib.load(path)

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole linear pipeline as one map: scores = x @ W + b (float64)."""
        W = None
        b = None
        for name, step in self.pipeline().steps:
            if name == "scale":
                A = np.diag(1.0 / step.scale_)
                c = -step.mean_ / step.scale_
            elif name == "pca":
                A = step.components_.T.astype(np.float64)
                if step.whiten:
                    A = A / np.sqrt(step.explained_variance_)
                c = -step.mean_ @ A
            else:
                coef = np.atleast_2d(step.coef_).astype(np.float64)
                intercept = np.atleast_1d(step.intercept_).astype(np.float64)
                if coef.shape[0] == 1:  # binary: one decision value, class 1 vs class 0
                    coef = np.vstack([np.zeros_like(coef), coef])
                    intercept = np.array([0.0, intercept[0]])
                A, c = coef.T, intercept
            W, b = (A, c) if W is None else (W @ A, b @ A + c)
        return W, b

    def to_keras(self):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        if self.multi_label:
            raise ExportError(f"A multi-label {self.name} head cannot be written as Keras layers "
                              "yet; export a multi-label Keras head (dense256, linear, ...).")
        if not self.is_linear:
            from . import HEADS

            linear = [n for n, s in HEADS.items() if s.kind == "sklearn" and s.exportable]
            raise ExportError(
                f"A {self.name} head cannot be written as Keras layers; export works for "
                f"Keras heads and the linear scikit-learn heads ({', '.join(linear)}).")
        from .._keras import import_keras

        keras = import_keras()
        W, b = self.affine()
        if self.calibrated:
            # scikit-learn scales the logits (-d, d) of a binary head, or the C decision values,
            # by beta; our two columns are (0, d): softmax(beta * (-d, d)) = softmax((0, 2 beta d))
            beta = 1.0 / self.temperature
            scale = 2.0 * beta if np.atleast_2d(self.pipeline().steps[-1][1].coef_).shape[0] == 1 else beta
            W, b = W * scale, b * scale
        inputs, x = self.keras_input(keras)
        dense = keras.layers.Dense(self.n_classes, activation="softmax", name="probabilities")
        outputs = dense(x)
        dense.set_weights([W.astype("float32"), b.astype("float32")])
        return keras.Model(inputs, outputs, name=f"head_{self.name}")
