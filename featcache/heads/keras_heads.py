"""`KerasHead`: a small dense network trained on cached features.

One class covers every Keras head in the registry; `linear`, `dense256`,
`dense512`, `sigmoid` and `mlp` differ only in their default parameters. It
trains from the shuffled schedule of `featcache.heads.feed`, in memory or
streamed, with early stopping on validation loss that restores the best
weights. On multi-label data the output is one sigmoid per label, trained
with binary cross-entropy.
"""

from __future__ import annotations

import os

import numpy as np

from .._keras import import_keras
from ..errors import ParameterError
from .base import check_optimizer, class_weights, epoch_bar, make_optimizer
from .estimator import HeadBase
from .feed import Schedule

MODEL_FILE = "model.keras"
OUTPUTS = ("softmax", "sigmoid")


def _make_sequence(keras, schedule: Schedule, n_classes: int, binary: bool,
                   weights: np.ndarray | None, label_indicator: np.ndarray | None = None):
    """A keras.utils.PyDataset over a Schedule, advancing one epoch per pass."""

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)

        def __len__(self):
            return len(schedule)

        def __getitem__(self, index):
            features, labels, _ = schedule.batch(index)
            if label_indicator is not None:  # multi-label: each row's 0/1 label vector
                targets = label_indicator[labels]
            elif binary:
                targets = labels.astype(np.float32)[:, None]
            else:
                targets = np.eye(n_classes, dtype=np.float32)[labels]
            if weights is None:
                return features, targets
            return features, targets, weights[labels]

        def on_epoch_end(self):
            if schedule.shuffle:
                schedule.next_epoch()

    return Batches()


class KerasHead(HeadBase):
    """Dense layers on feature rows, ending in a softmax (or one sigmoid unit).

    Args:
        name: registry name, used to name the Keras model ("head_<name>").
        units: hidden Dense layer sizes (relu); () for softmax regression.
        dropout: dropout after each hidden layer (0: none).
        l2: L2 weight penalty on the Dense kernels.
        output: "softmax" (any number of classes) or "sigmoid" (two classes).
        epochs: most epochs.
        batch_size: rows per step.
        optimizer: "adam", "sgd" (momentum 0.9) or "rmsprop".
        learning_rate: None: the optimizer's default (featcache.heads.base.OPTIMIZERS).
        early_stopping: with validation data, stop after `patience` epochs without
            a lower validation loss and keep the best weights.
        patience: see early_stopping.
        class_weight: None or "balanced".
        label_smoothing: for the cross-entropy loss.
        spatial: how (H, W, C) rows are reduced: "flatten", "avg" or "max".
        shuffle_window: rows shuffled together (None: about 64 MiB of rows).
        seed: makes training repeat exactly.
    """

    STRUCTURAL = ("name",)

    def __init__(self, name="keras", units=(256,), dropout=0.5, l2=0.0, output="softmax",
                 epochs=30, batch_size=32, optimizer="adam", learning_rate=None,
                 early_stopping=True, patience=5, class_weight=None, label_smoothing=0.0,
                 spatial="avg", shuffle_window=None, seed=0):
        self.name = name
        self.units = units
        self.dropout = dropout
        self.l2 = l2
        self.output = output
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.early_stopping = early_stopping
        self.patience = patience
        self.class_weight = class_weight
        self.label_smoothing = label_smoothing
        self.spatial = spatial
        self.shuffle_window = shuffle_window
        self.seed = seed

    @property
    def binary(self) -> bool:
        return self.output == "sigmoid"

    def can_stream(self) -> bool:
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = not self.binary  # one sigmoid unit: two classes only
        return tags

    def fit(self, X, y, validation_data=None, progress: bool | None = None):
        """Train on arrays.

        Args:
            X: feature rows (N, D) or (N, H, W, C).
            y: class labels (N,).
            validation_data: optional (X_val, y_val), for early stopping.
            progress: show an epoch bar (None: only on a terminal).

        Returns:
            self, fitted.
        """
        from .feed import ArraySplit

        X, labels, classes, sets = self._training_arrays(X, y)
        val = None
        if validation_data is not None:
            from sklearn.utils.validation import check_array

            Xv, yv = validation_data
            Xv = check_array(Xv, allow_nd=True, dtype="numeric").astype(np.float32, copy=False)
            if sets is not None:  # multi-label: the validation rows' own label sets
                _, yl, _, vsets = self._training_arrays(Xv, yv)
                val = ArraySplit(Xv, yl, classes, "validation_data", vsets)
            else:
                self.classes_ = classes  # _label_indices maps onto the training classes
                val = ArraySplit(Xv, self._label_indices(yv), classes, "validation_data")
        return self._fit_split(ArraySplit(X, labels, classes, "X", sets), val, progress, classes)

    def _check_params(self, n_classes, feature_shape, multi_label=False) -> None:
        if self.output not in OUTPUTS:
            raise ParameterError("output", self.output, f"allowed values are {', '.join(OUTPUTS)}.")
        if multi_label and self.binary:
            raise ParameterError(
                "output", self.output, f"head '{self.name}' has one sigmoid unit, for two classes; "
                "multi-label data gets one sigmoid per label from linear, dense256, dense512 or mlp.")
        if multi_label and self.class_weight:
            raise ParameterError("class_weight", self.class_weight,
                                 "applies to single-label data only.")
        if self.binary and n_classes != 2:
            raise ParameterError(
                "output", self.output,
                f"Only binary classification is supported. Head '{self.name}' has one sigmoid "
                f"unit, for two classes; this data has {n_classes}. Use linear, dense256, dense512 "
                "or mlp.")
        check_optimizer(self.optimizer)
        for key in ("epochs", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise ParameterError(key, getattr(self, key), "must be at least 1.")
        class_weights(np.zeros(1, dtype=np.int64), 1, self.class_weight)  # checks the mode

    def build(self, n_classes: int | None = None):
        """The untrained Keras model for the fitted feature shape and classes."""
        keras = import_keras()
        n_classes = n_classes or len(self.classes_)
        regularizer = keras.regularizers.L2(self.l2) if self.l2 else None
        inputs, x = self.keras_input(keras)
        for i, units in enumerate(tuple(self.units)):
            x = keras.layers.Dense(int(units), activation="relu", kernel_regularizer=regularizer,
                                   name=f"dense_{i}")(x)
            if self.dropout:
                x = keras.layers.Dropout(self.dropout, name=f"dropout_{i}")(x)
        if self.binary:
            outputs = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
        elif self.multi_label:  # one independent probability per label
            outputs = keras.layers.Dense(n_classes, activation="sigmoid",
                                         kernel_regularizer=regularizer, name="probabilities")(x)
        else:
            outputs = keras.layers.Dense(n_classes, activation="softmax",
                                         kernel_regularizer=regularizer, name="probabilities")(x)
        return keras.Model(inputs, outputs, name=f"head_{self.name}")

    def _train(self, train, val, progress):
        keras = import_keras()
        n_classes = len(self.classes_)
        keras.utils.set_random_seed(int(self.seed))
        model = self.build(n_classes)
        accuracy = "accuracy"
        if self.binary or self.multi_label:
            loss = keras.losses.BinaryCrossentropy(label_smoothing=self.label_smoothing)
            if self.multi_label:  # the share of label decisions right at 0.5
                accuracy = keras.metrics.BinaryAccuracy(name="accuracy")
        else:
            loss = keras.losses.CategoricalCrossentropy(label_smoothing=self.label_smoothing)
        model.compile(optimizer=make_optimizer(keras, self.optimizer, self.learning_rate),
                      loss=loss, metrics=[accuracy])
        weights = None if self.multi_label else class_weights(train.labels, n_classes,
                                                               self.class_weight)
        train_batches = _make_sequence(
            keras, Schedule(train, self.batch_size, self.seed, True, self.shuffle_window),
            n_classes, self.binary, weights, train.label_indicator)
        val_batches = None
        if val is not None and val.n_rows:
            val_batches = _make_sequence(
                keras, Schedule(val, self.batch_size, shuffle=False, window_rows=self.shuffle_window),
                n_classes, self.binary, None, val.label_indicator)
        callbacks = [epoch_bar(keras, self.epochs, progress)]
        stopper = None
        if val_batches is not None and self.early_stopping:
            stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.patience,
                                                    restore_best_weights=True)
            callbacks.append(stopper)
        history = model.fit(train_batches, validation_data=val_batches, epochs=self.epochs,
                            callbacks=callbacks, verbose=0)
        hist = {k: [float(v) for v in values] for k, values in history.history.items()}
        best = None
        if "val_loss" in hist:
            best = int(np.argmin(hist["val_loss"])) if stopper is not None else len(hist["val_loss"]) - 1
        return model, hist, best, {"epochs_run": len(hist.get("loss", []))}

    def _scores(self, X: np.ndarray, chunk: int = 4096) -> np.ndarray:
        # a direct call: for a head this small, model.predict's per-call machinery costs
        # far more than the arithmetic
        keras = import_keras()
        parts = [keras.ops.convert_to_numpy(self.model_(X[i:i + chunk], training=False))
                 for i in range(0, len(X), chunk)]
        probs = (np.concatenate(parts) if parts else np.zeros((0, 1 if self.binary else self.n_classes))
                 ).astype(np.float64)
        if self.binary:
            probs = np.hstack([1.0 - probs, probs])
        return probs

    def _save_model(self, folder: str) -> str:
        self.model_.save(os.path.join(folder, MODEL_FILE))
        return MODEL_FILE

    def _load_model(self, path: str):
        from .._keras import load_model_safely

        return load_model_safely(path, compile=False)

    def to_keras(self):
        """The head as a model ending in an N-class softmax (sigmoid becomes softmax([0, z]));
        a multi-label head's model, one sigmoid per label, as it is."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        if not self.binary:
            return self.model_
        keras = import_keras()
        last = self.model_.get_layer("probability")
        kernel, bias = last.get_weights()
        dense = keras.layers.Dense(2, activation="softmax", name="probabilities")
        outputs = dense(last.input)
        dense.set_weights([np.hstack([np.zeros_like(kernel), kernel]), np.array([0.0, bias[0]], "float32")])
        return keras.Model(self.model_.inputs, outputs, name=self.model_.name)
