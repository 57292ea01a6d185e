"""Keras heads: small dense networks trained on cached features.

`linear` (softmax regression), `dense256` (Dense 256 relu, Dropout 0.5, as
in the VGG16 tutorial), `dense512` (global average pooling, Dense 512 relu,
Dropout 0.5, as in the NASNet tutorial), `sigmoid` (one unit, binary, as in
the cats-vs-dogs tutorial) and a configurable `mlp`. They train from the
shuffled schedule of `featcache.reader`, in memory or streamed, with early
stopping on validation loss that restores the best weights.
"""

from __future__ import annotations

import os

import numpy as np

from .._keras import import_keras
from ..errors import UsageError
from ..reader import Schedule
from .base import FitResult, Head, class_weights

MODEL_FILE = "model.keras"
OPTIMIZERS = {"adam": 1e-3, "sgd": 1e-2, "rmsprop": 1e-3}


def _make_sequence(keras, schedule: Schedule, n_classes: int, binary: bool,
                   weights: np.ndarray | None):
    """A keras.utils.PyDataset over a Schedule, advancing one epoch per pass."""

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)

        def __len__(self):
            return len(schedule)

        def __getitem__(self, index):
            features, labels, _ = schedule.batch(index)
            if binary:
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


def _epoch_bar(keras, epochs: int, enabled: bool | None):
    """A Keras callback driving a tqdm bar over epochs (None: only on a terminal)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=epochs, unit="epoch", desc="train head", leave=False,
               disable=None if enabled is None else not enabled)

    class EpochBar(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            shown = ("loss", "accuracy", "val_loss", "val_accuracy")
            bar.set_postfix({k: f"{v:.3f}" for k, v in (logs or {}).items() if k in shown})
            bar.update(1)

        def on_train_end(self, logs=None):
            bar.close()

    return EpochBar()


class KerasHead(Head):
    """A Keras head; `model` maps feature rows to class probabilities."""

    model = None
    progress: bool | None = None

    @property
    def binary(self) -> bool:
        return self.spec.name == "sigmoid"

    def validate(self) -> None:
        if self.binary and self.n_classes != 2:
            raise UsageError(
                f"--model sigmoid is for two classes; this cache has {self.n_classes}. "
                "Use linear, dense256, dense512 or mlp.")
        if self.options.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer {self.options.optimizer}: allowed values are "
                             f"{', '.join(OPTIMIZERS)}.")

    def build(self):
        keras = import_keras()
        o = self.options
        regularizer = keras.regularizers.L2(o.l2) if o.l2 else None
        inputs, x = self.keras_input(keras)
        hidden = {"linear": (), "sigmoid": (), "dense256": (256,), "dense512": (512,),
                  "mlp": tuple(o.units)}[self.spec.name]
        for i, units in enumerate(hidden):
            x = keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer,
                                   name=f"dense_{i}")(x)
            if o.dropout:
                x = keras.layers.Dropout(o.dropout, name=f"dropout_{i}")(x)
        if self.binary:
            outputs = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
        else:
            outputs = keras.layers.Dense(self.n_classes, activation="softmax",
                                         kernel_regularizer=regularizer, name="probabilities")(x)
        return keras.Model(inputs, outputs, name=f"head_{self.spec.name}")

    def _optimizer(self, keras):
        o = self.options
        lr = o.learning_rate or OPTIMIZERS[o.optimizer]
        if o.optimizer == "sgd":
            return keras.optimizers.SGD(learning_rate=lr, momentum=0.9)
        if o.optimizer == "rmsprop":
            return keras.optimizers.RMSprop(learning_rate=lr)
        return keras.optimizers.Adam(learning_rate=lr)

    def fit(self, train, val=None) -> FitResult:
        keras = import_keras()
        o = self.options
        keras.utils.set_random_seed(int(o.seed))
        self.model = self.build()
        if self.binary:
            loss = keras.losses.BinaryCrossentropy(label_smoothing=o.label_smoothing)
        else:
            loss = keras.losses.CategoricalCrossentropy(label_smoothing=o.label_smoothing)
        self.model.compile(optimizer=self._optimizer(keras), loss=loss, metrics=["accuracy"])
        weights = class_weights(train.labels, self.n_classes, o.class_weight)
        train_batches = _make_sequence(
            keras, Schedule(train, o.batch_size, o.seed, True, o.shuffle_window),
            self.n_classes, self.binary, weights)
        val_batches = None
        if val is not None and val.n_rows:
            val_batches = _make_sequence(
                keras, Schedule(val, o.batch_size, shuffle=False, window_rows=o.shuffle_window),
                self.n_classes, self.binary, None)
        callbacks = [_epoch_bar(keras, o.epochs, self.progress)]
        stopper = None
        if val_batches is not None and o.early_stopping:
            stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=o.patience,
                                                    restore_best_weights=True)
            callbacks.append(stopper)
        history = self.model.fit(train_batches, validation_data=val_batches, epochs=o.epochs,
                                 callbacks=callbacks, verbose=0)
        hist = {k: [float(v) for v in values] for k, values in history.history.items()}
        best = None
        if "val_loss" in hist:
            best = int(np.argmin(hist["val_loss"])) if stopper is not None else len(hist["val_loss"]) - 1
        return FitResult(history=hist, best_epoch=best,
                         notes={"epochs_run": len(hist.get("loss", []))})

    def predict_proba(self, features: np.ndarray, chunk: int = 4096) -> np.ndarray:
        # a direct call: for a head this small, model.predict's per-call machinery costs
        # far more than the arithmetic
        keras = import_keras()
        x = np.asarray(features, dtype=np.float32)
        parts = [keras.ops.convert_to_numpy(self.model(x[i:i + chunk], training=False))
                 for i in range(0, len(x), chunk)]
        probs = (np.concatenate(parts) if parts else np.zeros((0, 1 if self.binary else self.n_classes))
                 ).astype(np.float64)
        if self.binary:
            probs = np.hstack([1.0 - probs, probs])
        return probs

    def save(self, folder: str) -> str:
        self.model.save(os.path.join(folder, MODEL_FILE))
        return MODEL_FILE

    def load(self, folder: str, file_name: str) -> None:
        from .._keras import load_model_safely

        self.model = load_model_safely(os.path.join(folder, file_name), compile=False)

    def to_keras(self):
        """The head as a model ending in an N-class softmax (sigmoid becomes softmax([0, z]))."""
        if not self.binary:
            return self.model
        keras = import_keras()
        last = self.model.get_layer("probability")
        kernel, bias = last.get_weights()
        logits_in = last.input
        dense = keras.layers.Dense(2, activation="softmax", name="probabilities")
        outputs = dense(logits_in)
        dense.set_weights([np.hstack([np.zeros_like(kernel), kernel]), np.array([0.0, bias[0]], "float32")])
        return keras.Model(self.model.inputs, outputs, name=self.model.name)
