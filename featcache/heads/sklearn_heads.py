"""scikit-learn heads: classic classifiers on cached features.

Each is a scikit-learn Pipeline: optional standardisation, optional PCA, the
classifier. `--search` cross-validates the classifier's main hyper-parameter
with GridSearchCV, its folds run in parallel through joblib. `sgd` trains by
`partial_fit` over the same shuffled schedule as the Keras heads, so it also
trains from caches streamed from disk; the others need the features in memory.

Scores: linear heads (logreg, linear-svm, sgd, ridge) give the softmax of
their decision function (for logistic regression that is exactly its
probabilities; for the others a monotone score, not a calibrated
probability). kNN and random forest give `predict_proba`.
"""

from __future__ import annotations

import os

import joblib
import numpy as np

from ..errors import ExportError, UsageError
from ..reader import Schedule
from .base import FitResult, Head, class_weights, reduce_spatial

MODEL_FILE = "model.joblib"
LINEAR = ("logreg", "linear-svm", "sgd", "ridge")
SEARCH_GRIDS = {
    "logreg": ("C", [0.01, 0.1, 1.0, 10.0]),
    "linear-svm": ("C", [0.001, 0.01, 0.1, 1.0]),
    "sgd": ("alpha", [1e-5, 1e-4, 1e-3, 1e-2]),
    "ridge": ("alpha", [0.1, 1.0, 10.0, 100.0]),
    "knn": ("n_neighbors", [1, 3, 5, 9, 15]),
    "random-forest": ("max_depth", [None, 8, 16]),
}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class SklearnHead(Head):
    """A scikit-learn Pipeline head."""

    model = None
    progress: bool | None = None

    def _classifier(self):
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.svm import LinearSVC

        o = self.options
        weight = o.class_weight
        if weight not in (None, "balanced"):
            raise UsageError(f"--class-weight {weight}: the only mode is 'balanced'.")
        name = self.spec.name
        if name == "logreg":
            return LogisticRegression(C=o.C, max_iter=3000, class_weight=weight)
        if name == "linear-svm":
            return LinearSVC(C=o.C, max_iter=5000, class_weight=weight, random_state=o.seed)
        if name == "sgd":  # partial_fit takes class weights as sample weights instead
            return SGDClassifier(loss="log_loss", alpha=o.alpha, random_state=o.seed,
                                 class_weight=weight if (o.search or o.pca) else None)
        if name == "ridge":
            return RidgeClassifier(alpha=o.alpha, class_weight=weight)
        if name == "knn":
            if weight:
                raise UsageError("--class-weight does not apply to knn.")
            return KNeighborsClassifier(n_neighbors=o.neighbors, metric="cosine")
        if name == "random-forest":
            return RandomForestClassifier(n_estimators=o.trees, n_jobs=-1, random_state=o.seed,
                                          class_weight=weight)
        raise UsageError(f"Unknown scikit-learn head '{name}'.")

    def validate(self) -> None:
        self._pipeline()  # raises on options this estimator cannot take

    def _pipeline(self):
        from sklearn.decomposition import PCA
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        o = self.options
        steps = []
        if o.scale:
            steps.append(("scale", StandardScaler()))
        if o.pca:
            steps.append(("pca", PCA(n_components=o.pca, random_state=o.seed)))
        steps.append(("clf", self._classifier()))
        return Pipeline(steps)

    def _inputs(self, features: np.ndarray) -> np.ndarray:
        return reduce_spatial(np.asarray(features, dtype=np.float32), self.spatial)

    def fit(self, train, val=None) -> FitResult:
        o = self.options
        if self.spec.name == "sgd" and not (o.search or o.pca):
            return self._fit_by_partial_fit(train)
        if not train.in_memory:
            raise UsageError(
                f"--model {self.spec.name}" + (" with --search or --pca" if self.spec.name == "sgd" else "")
                + " needs the training features in memory; use --model sgd or a Keras head to "
                "train from disk, or raise --max-memory.")
        X, y = self._inputs(train.all_features()), train.labels
        if not o.search:
            self.model = self._pipeline().fit(X, y)
            return FitResult()
        from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold

        param, grid = SEARCH_GRIDS[self.spec.name]
        folds = min(o.cv, int(np.bincount(y).min()))
        if folds < 2:
            raise UsageError("--search needs at least 2 training images of every class.")
        groups = None
        if "augment" in getattr(train.cache, "fingerprint", {}):
            # augmented views of one image stay in one fold: no validating on copies of training rows
            paths = train.cache.index(train.split)[0]
            groups = np.unique(paths, return_inverse=True)[1]
            cv = StratifiedGroupKFold(folds, shuffle=True, random_state=o.seed)
        else:
            cv = StratifiedKFold(folds, shuffle=True, random_state=o.seed)
        search = GridSearchCV(self._pipeline(), {f"clf__{param}": grid}, n_jobs=-1, cv=cv)
        search.fit(X, y, groups=groups)
        self.model = search.best_estimator_
        return FitResult(notes={"search": {
            "param": param, "grid": grid, "folds": folds,
            "best": search.best_params_[f"clf__{param}"],
            "mean_cv_accuracy": [float(v) for v in search.cv_results_["mean_test_score"]],
        }})

    def _fit_by_partial_fit(self, train) -> FitResult:
        """SGD over the shuffled schedule: the same model in memory or streamed from disk."""
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        o = self.options
        batch = o.batch_size
        scaler = None
        if o.scale:
            scaler = StandardScaler()
            plain = Schedule(train, batch, shuffle=False, window_rows=o.shuffle_window)
            for i in range(len(plain)):
                scaler.partial_fit(self._inputs(plain.batch(i)[0]))
        clf = self._classifier()
        classes = np.arange(self.n_classes)
        weights = class_weights(train.labels, self.n_classes, o.class_weight)
        schedule = Schedule(train, batch, o.seed, True, o.shuffle_window)
        for _ in range(o.epochs):
            for i in range(len(schedule)):
                features, labels, _ = schedule.batch(i)
                X = self._inputs(features)
                clf.partial_fit(scaler.transform(X) if scaler is not None else X, labels,
                                classes=classes,
                                sample_weight=None if weights is None else weights[labels])
            schedule.next_epoch()
        self.model = Pipeline(([("scale", scaler)] if scaler is not None else []) + [("clf", clf)])
        return FitResult(notes={"epochs": o.epochs, "streamed": not train.in_memory})

    def decision(self, features: np.ndarray) -> np.ndarray:
        scores = self.model.decision_function(self._inputs(features))
        if scores.ndim == 1:
            scores = np.stack([np.zeros_like(scores), scores], axis=1)
        return scores

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        if self.spec.name in LINEAR:
            return _softmax(np.asarray(self.decision(features), dtype=np.float64))
        probs = np.zeros((len(features), self.n_classes))
        probs[:, self.model.classes_] = self.model.predict_proba(self._inputs(features))
        return probs

    def save(self, folder: str) -> str:
        joblib.dump(self.model, os.path.join(folder, MODEL_FILE))
        return MODEL_FILE

    def load(self, folder: str, file_name: str) -> None:
        self.model = joblib.load(os.path.join(folder, file_name))

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole linear pipeline as one map: scores = x @ W + b (float64)."""
        W = None
        b = None
        for name, step in self.model.steps:
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
        if self.spec.name not in LINEAR:
            raise ExportError(
                f"A {self.spec.name} head cannot be written as Keras layers; export works for "
                f"Keras heads and the linear scikit-learn heads ({', '.join(LINEAR)}).")
        from .._keras import import_keras

        keras = import_keras()
        W, b = self.affine()
        inputs, x = self.keras_input(keras)
        dense = keras.layers.Dense(self.n_classes, activation="softmax", name="probabilities")
        outputs = dense(x)
        dense.set_weights([W.astype("float32"), b.astype("float32")])
        return keras.Model(inputs, outputs, name=f"head_{self.spec.name}")
