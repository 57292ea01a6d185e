"""Fine-tune the top of the backbone end to end, starting from a trained head.

The two-phase recipe: the head was trained on frozen features (seconds, from
the cache); now one Keras model is built — augmentation layers, the
backbone's preprocessing, the backbone exactly as the head's cache was made,
and the head initialised from its trained weights — the top of the backbone
is unfrozen and the whole trains with a small learning rate. BatchNorm layers
stay frozen, which in Keras 3 also keeps them in inference mode: they go on
normalising with their ImageNet statistics. (Calling the base with
training=False is not enough in Keras 3: a Functional model passes fit's
training=True down to nested models, keras-team/keras#20285.) Every epoch writes a checkpoint; `resume=True` continues an
interrupted run from its last finished epoch, in the same data order.

The image files are decoded in the first epoch only: their uint8 pixels at
the model's input size are kept for the run (in memory when they fit, else in
a temporary file in the checkpoint folder), so the epochs after it do not
decode again. history.json records, per fine-tuning epoch, the seconds it
took ("epoch_seconds") and the CPU seconds spent decoding files
("decode_seconds"); the decode mode is the head's cache's.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from ._keras import import_keras, load_model_safely
from .artifacts import (
    HISTORY_FILE,
    METRICS_FILE,
    load_head,
    params_from_config,
    prepare_out_folder,
    write_model_files,
)
from .dataset import load_dataset
from .fingerprint import check_same
from .errors import FeatcacheWarning, ParameterError, UsageError, param
from .hardware import check_precision
from .fileio import read_json, write_json_atomic
from .heads.base import OPTIMIZERS, check_optimizer, class_weights, epoch_bar
from .metrics import classification_metrics
from .pipeline import Item

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
MODEL_FILE = "model.keras"
AUGMENTATIONS = ("flip", "rotation", "zoom", "translation")
DEFAULT_AUGMENT = "flip,rotation=0.1,zoom=0.1,translation=0.1"
SCHEDULES = ("cosine", "constant")
# chosen by measurement (benchmarks/finetune_gain.py, RESULTS.md): the unfrozen backbone layers
# learn ten times slower than the head, so the first steps cannot wreck the features the head
# was trained on
BACKBONE_LR_FACTOR = 0.1


@dataclass
class FinetuneOptions:
    """Options of `featcache finetune`; see the CLI help for each."""

    unfreeze_top: int | None = None
    unfreeze_from: str | None = None
    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float | None = None  # None: OPTIMIZERS[optimizer]["finetune"]; the head's peak rate
    backbone_lr_factor: float = BACKBONE_LR_FACTOR  # backbone layers learn at this fraction of it
    warmup_epochs: float = 1.0  # linear warm-up from a tenth of the rate (at most half the run)
    schedule: str = "cosine"
    early_stopping: bool = True
    patience: int = 3
    augment: str | None = DEFAULT_AUGMENT
    class_weight: str | None = None
    precision: str | None = None  # None: the precision of the head's cache
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    seed: int = 0
    workers: int | None = None
    keep_pixels: bool = True  # decode the files once per run, not once per epoch
    # deprecated: precision="float16"
    mixed_precision: bool = field(default=False, repr=False, metadata={"deprecated": True})

    def __post_init__(self):
        if self.mixed_precision:
            warnings.warn(FeatcacheWarning("mixed_precision is deprecated: use precision=float16."),
                          stacklevel=3)
            self.precision, self.mixed_precision = "float16", False

    def validate(self) -> None:
        """Check the options before anything is loaded or built.

        Raises:
            ParameterError: an option has a value fine-tuning cannot use.
            UsageError: options that exclude each other, or a bad `augment`.
        """
        if self.precision is not None:
            check_precision(self.precision)
        if self.unfreeze_top is not None and self.unfreeze_from is not None:
            raise UsageError(f"Pass {param('unfreeze_top')} or {param('unfreeze_from')}, not both.")
        if self.unfreeze_top is not None and self.unfreeze_top < 0:
            raise ParameterError("unfreeze_top", self.unfreeze_top, "must be 0 or more.")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ParameterError(name, getattr(self, name), "must be at least 1.")
        check_optimizer(self.optimizer)
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ParameterError("learning_rate", self.learning_rate, "must be above 0.")
        if not 0.0 < self.backbone_lr_factor <= 1.0:
            raise ParameterError("backbone_lr_factor", self.backbone_lr_factor,
                                 "must be in (0, 1]: the backbone learns at this fraction of the "
                                 "head's rate.")
        if not self.warmup_epochs >= 0.0:
            raise ParameterError("warmup_epochs", self.warmup_epochs, "must be 0 or more.")
        if self.schedule not in SCHEDULES:
            raise ParameterError("schedule", self.schedule, f"allowed values are {', '.join(SCHEDULES)}.")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ParameterError(name, getattr(self, name), "must be a fraction in [0, 1).")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise UsageError(f"{param('val_fraction')} plus {param('test_fraction')} must leave "
                             "some images for training.")
        parse_augment(self.augment)


def parse_augment(text: str | None) -> dict[str, float]:
    """'flip,rotation=0.1' -> {"flip": 1.0, "rotation": 0.1}; None or 'none' -> {}."""
    if not text or text.strip().lower() == "none":
        return {}
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.strip().partition("=")
        if name not in AUGMENTATIONS:
            raise UsageError(f"{{param:augment}} {text}: unknown '{name}'; use {', '.join(AUGMENTATIONS)} "
                             "(with =FACTOR for rotation, zoom and translation) or none.")
        try:
            out[name] = float(value) if value else (1.0 if name == "flip" else 0.1)
        except ValueError:
            raise UsageError(f"{{param:augment}} {text}: '{value}' is not a number.") from None
    return out


def augmentation_layers(keras, augment: dict[str, float], seed: int) -> list:
    """Built-in Keras augmentation layers; they act only while training."""
    layers = []
    if "flip" in augment:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed, name="augment_flip"))
    if "rotation" in augment:
        layers.append(keras.layers.RandomRotation(augment["rotation"], seed=seed + 1,
                                                  name="augment_rotation"))
    if "zoom" in augment:
        layers.append(keras.layers.RandomZoom(augment["zoom"], seed=seed + 2, name="augment_zoom"))
    if "translation" in augment:
        t = augment["translation"]
        layers.append(keras.layers.RandomTranslation(t, t, seed=seed + 3, name="augment_translation"))
    return layers


def top_block_start(backbone, spec) -> int | None:
    """Index of the first layer of the backbone's top block (registry `top_block`), or None.

    None when the block is not in this model (a feature model tapped below it).
    """
    names = [layer.name for layer in backbone.layers]
    if spec.top_block and spec.top_block in names:
        return names.index(spec.top_block)
    if spec.top_block_after and spec.top_block_after in names:
        return names.index(spec.top_block_after) + 1
    return None


def set_trainable(backbone, unfreeze_top: int | None, unfreeze_from: str | None,
                  spec=None) -> list[str]:
    """Unfreeze the top of the backbone; returns the names of the layers with weights that train.

    `unfreeze_top` counts the backbone's last layers that hold weights (so
    activations, pooling and BatchNorm do not use up the count; 0 trains the
    head only); `unfreeze_from` names the first layer to train. With neither,
    the registry's top block of `spec` trains (where the model was tapped below
    it: its last two layers with weights). The rest stays frozen, and so does
    every BatchNorm layer: frozen, it runs in inference mode even inside fit,
    so its moving statistics never drift towards small fine-tuning batches.
    """
    keras = import_keras()
    layers = backbone.layers
    is_bn = [isinstance(layer, keras.layers.BatchNormalization) for layer in layers]
    weighted = [i for i, layer in enumerate(layers) if layer.weights and not is_bn[i]]
    start = None
    if unfreeze_from is not None:
        names = [layer.name for layer in layers]
        if unfreeze_from not in names:
            import difflib

            close = difflib.get_close_matches(unfreeze_from, names, n=4, cutoff=0.5)
            raise UsageError(f"{{param:unfreeze_from}} {unfreeze_from}: the backbone has no such layer."
                             + (f" Close matches: {', '.join(close)}." if close else ""))
        start = names.index(unfreeze_from)
    elif unfreeze_top is None and spec is not None:
        start = top_block_start(backbone, spec)
    if start is None:
        n = 2 if unfreeze_top is None else unfreeze_top
        start = weighted[-n] if 0 < n <= len(weighted) else (0 if n > len(weighted) else len(layers))
    backbone.trainable = True
    for i, layer in enumerate(layers):
        layer.trainable = i >= start and not is_bn[i]
    return [layer.name for i, layer in enumerate(layers) if i >= start and layer.trainable_weights]


def _discriminative(keras, base):
    """`base` (a Keras optimizer class) whose update of chosen variables uses a scaled rate.

    Keras has no per-layer learning rates; this subclass multiplies the rate
    by `factor` for the variables at `scaled` (indices into the list it is
    built on: the model's trainable variables, whose order survives saving).
    Registered with Keras, so a checkpoint holding it loads again.
    """
    name = f"Discriminative{base.__name__}"
    cached = _OPTIMIZER_CLASSES.get(name)
    if cached is not None:
        return cached

    class Discriminative(base):
        def __init__(self, factor=1.0, scaled=(), **kwargs):
            super().__init__(**kwargs)
            self.factor = float(factor)
            self.scaled = [int(i) for i in scaled]

        def build(self, var_list):
            super().build(var_list)
            self._scaled_set = set(self.scaled)

        def update_step(self, gradient, variable, learning_rate):
            if self._get_variable_index(variable) in self._scaled_set:
                learning_rate = learning_rate * self.factor
            return super().update_step(gradient, variable, learning_rate)

        def get_config(self):
            return {**super().get_config(), "factor": self.factor, "scaled": list(self.scaled)}

    Discriminative.__name__ = Discriminative.__qualname__ = name
    cls = keras.saving.register_keras_serializable(package="featcache", name=name)(Discriminative)
    _OPTIMIZER_CLASSES[name] = cls
    return cls


_OPTIMIZER_CLASSES: dict[str, type] = {}
_BASES = {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}


def register_optimizers(keras) -> None:
    """Make the fine-tuning optimizers known to Keras (before loading a checkpoint)."""
    for base in _BASES.values():
        _discriminative(keras, getattr(keras.optimizers, base))


def learning_rate_schedule(keras, options: FinetuneOptions, steps_per_epoch: int):
    """The head's rate per step: a linear warm-up from a tenth of it, then cosine decay to zero.

    The warm-up lasts `warmup_epochs`, at most half the run.
    `schedule="constant"` keeps the warm-up and then holds the rate.
    """
    peak = options.learning_rate or OPTIMIZERS[options.optimizer]["finetune"]
    total = options.epochs * steps_per_epoch
    warmup = min(round(options.warmup_epochs * steps_per_epoch), total // 2)  # at most half
    start = peak / 10 if warmup else peak
    # after the warm-up: cosine decay to zero, or (alpha=1) the peak rate held
    return keras.optimizers.schedules.CosineDecay(
        start, decay_steps=max(total - warmup, 1), alpha=1.0 if options.schedule == "constant" else 0.0,
        warmup_target=peak if warmup else None, warmup_steps=warmup)


def make_finetune_optimizer(keras, options: FinetuneOptions, steps_per_epoch: int,
                            scaled: list[int]):
    """The optimizer: the chosen kind, the rate schedule, discriminative rates for `scaled`."""
    rate = learning_rate_schedule(keras, options, steps_per_epoch)
    kwargs = {"learning_rate": rate}
    if options.optimizer == "sgd":
        kwargs["momentum"] = 0.9
    base = getattr(keras.optimizers, _BASES[options.optimizer])
    if scaled and options.backbone_lr_factor != 1.0:
        return _discriminative(keras, base)(factor=options.backbone_lr_factor, scaled=scaled,
                                            **kwargs)
    return base(**kwargs)


def build_model(extractor, head_model, options: FinetuneOptions, steps_per_epoch: int = 1):
    """Augmentation, preprocessing and backbone, then the head: one compiled Keras model.

    Returns:
        (model, names of the backbone layers that train).
    """
    keras = import_keras()
    size = extractor.image_size
    inputs = keras.Input((size, size, 3), name="pixels")
    x = inputs
    for layer in augmentation_layers(keras, parse_augment(options.augment), options.seed):
        x = layer(x)
    # the backbone computes in its precision (built so by backbone_for_head); its features,
    # the head, the probabilities and the loss stay float32
    outputs = head_model(extractor.model(x))
    model = keras.Model(inputs, outputs, name=f"finetuned_{extractor.spec.name}")
    trainable = set_trainable(extractor.backbone, options.unfreeze_top, options.unfreeze_from,
                              extractor.spec)
    backbone_ids = {id(v) for v in extractor.backbone.trainable_weights}
    scaled = [i for i, v in enumerate(model.trainable_variables) if id(v) in backbone_ids]
    optimizer = make_finetune_optimizer(keras, options, steps_per_epoch, scaled)
    if extractor.precision == "float16":  # small float16 gradients would underflow unscaled
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    # compiled after the trainable flags are set, so the optimizer sees exactly those weights
    model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(),
                  metrics=["accuracy"])
    return model, trainable


@dataclass
class FinetuneSummary:
    out: str
    val_accuracy: float | None
    head_val_accuracy: float | None
    seconds: float
    epochs_run: int
    first_epoch: int
    trainable_layers: list[str]
    resumed_from: int | None
    metrics: dict = field(default_factory=dict)
    before_finetune: dict | None = None  # the model evaluated before the first update
    best_epoch: int | None = None  # 1-based fine-tuning epoch kept; 0: the starting weights
    seconds_per_epoch: float | None = None  # training and validation, median over epochs
    images_per_second: float | None = None  # training images through the model, per second
    precision: str = "float32"
    pixels: dict = field(default_factory=dict)  # where the decoded pixels were kept

    def to_json(self) -> dict:
        return {"out": self.out, "val_accuracy": self.val_accuracy,
                "head_val_accuracy": self.head_val_accuracy,
                "before_finetune": self.before_finetune, "seconds": round(self.seconds, 3),
                "epochs_run": self.epochs_run, "first_epoch": self.first_epoch,
                "best_epoch": self.best_epoch,
                "seconds_per_epoch": _rounded(self.seconds_per_epoch, 3),
                "images_per_second": _rounded(self.images_per_second, 2),
                "precision": self.precision,
                "trainable_layers": list(self.trainable_layers),
                "trainable_layer_count": len(self.trainable_layers),
                "resumed_from": self.resumed_from, "top5_accuracy": self.metrics.get("top5_accuracy"),
                "pixels_kept": self.pixels}


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _items(dataset, class_names: list[str], split: str) -> list[Item]:
    index = {name: i for i, name in enumerate(class_names)}
    return [Item(0, dataset.abspath(r), r.path, index[r.label])
            for r in dataset.records if r.split == split]


def _save_model_atomic(model, path: str) -> None:
    tmp = f"{path[:-len('.keras')]}-{os.getpid()}.tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)


BEST_WEIGHTS = "best-weights.npz"


def _save_weights(model, path: str) -> None:
    """The model's weights alone (no optimizer state), written whole or not at all."""
    tmp = f"{path}-{os.getpid()}.tmp.npz"
    np.savez(tmp, *model.get_weights())
    os.replace(tmp, path)


def _load_weights(model, path: str) -> None:
    with np.load(path) as saved:
        model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])


def _checkpoint_callback(keras, folder: str, state: dict, patience: int, early_stopping: bool,
                         feeds=()):
    """Saves the last model, the best weights and the run state each epoch; stops after
    `patience` epochs without a better one. Better: a higher validation accuracy, or the same
    and a lower validation loss (without validation data: a lower training loss). The
    starting weights count as epoch 0, so a run none of whose epochs beats them keeps them,
    and a run never ends below the accuracy it started from. Also records each epoch's
    seconds and the decode CPU seconds of `feeds`."""

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._began = time.perf_counter()
            self._trained = None

        def on_test_begin(self, logs=None):  # validation starts: the training part is over
            if getattr(self, "_began", None) is not None and self._trained is None:
                self._trained = time.perf_counter() - self._began

        def on_epoch_end(self, epoch, logs=None):
            took = time.perf_counter() - self._began
            logs = {k: float(v) for k, v in (logs or {}).items()}
            logs["epoch_seconds"] = round(took, 3)
            logs["decode_seconds"] = round(sum(f.take_decode_seconds() for f in feeds), 3)
            for key, value in logs.items():
                state["history"].setdefault(key, []).append(value)
            state.setdefault("epoch_seconds", []).append(took)
            state.setdefault("train_seconds", []).append(self._trained or took)
            state["epochs_done"] += 1
            if _improves(state, logs):
                state["best_loss"] = logs.get("val_loss", logs.get("loss"))
                state["best_accuracy"] = logs.get("val_accuracy")
                state["best_epoch"], state["wait"] = epoch, 0
                _save_weights(self.model, os.path.join(folder, BEST_WEIGHTS))
            else:
                state["wait"] += 1
            _save_model_atomic(self.model, os.path.join(folder, "last.keras"))
            write_json_atomic(os.path.join(folder, STATE_FILE), state)
            if early_stopping and "val_loss" in logs and state["wait"] >= patience:
                self.model.stop_training = True

    return Checkpoint()


def _improves(state: dict, logs: dict) -> bool:
    """Whether an epoch's `logs` beat the best weights so far (see `_checkpoint_callback`)."""
    if state["best_loss"] is None:
        return True
    loss = logs.get("val_loss", logs.get("loss"))
    accuracy, best = logs.get("val_accuracy"), state.get("best_accuracy")
    if accuracy is None or best is None:  # no validation data (or a run begun by older featcache)
        return loss < state["best_loss"]
    return accuracy > best or (accuracy == best and loss < state["best_loss"])


@dataclass
class _Setup:
    """What a fine-tuning run works from, checked before anything heavy is built."""

    data: str
    head_dir: str
    out: str
    options: FinetuneOptions
    head: object
    head_config: dict
    head_model: object
    fingerprint: dict
    dataset: object
    checkpoint: str

    @property
    def state_path(self) -> str:
        return os.path.join(self.checkpoint, STATE_FILE)


def _prepare(data, head_dir, out, options, resume, trust) -> _Setup:
    head, head_config, fingerprint = load_head(head_dir, trust=trust)
    if head.multi_label:
        raise UsageError(f"{{param:head}} {head_dir} is a multi-label head; fine-tuning trains "
                         "single-label heads only for now.")
    head_model = head.to_keras()  # scikit-learn heads other than linear ones cannot be fine-tuned
    dataset = load_dataset(data, options.val_fraction, options.test_fraction)
    if dataset.class_names != head.class_names:
        raise UsageError(f"{{param:data}} {data} has classes {dataset.class_names}; the head in {head_dir} "
                         f"was trained on {head.class_names}.")
    checkpoint = os.path.join(os.path.abspath(out), CHECKPOINT_DIR)
    state_path = os.path.join(checkpoint, STATE_FILE)
    if os.path.isfile(state_path) and not resume:
        done = read_json(state_path)
        raise UsageError(f"{{param:out}} {out} holds an unfinished fine-tuning run ({done['epochs_done']} of "
                         f"{done['epochs']} epochs done): pass {{param:resume}}=True to continue it, or choose "
                         "another {param:out}.")
    if resume and not os.path.isfile(state_path):
        raise UsageError(f"{{param:resume}}=True: no unfinished fine-tuning run in {out}.")
    if resume:
        started = read_json(state_path).get("head_fingerprint")
        if started is not None:  # the checkpoint's backbone must be this head's backbone
            check_same(started["fingerprint"], fingerprint["fingerprint"],
                       f"the unfinished run in {{param:out}} {out}",
                       f"Resume it with the head it was started from, not {head_dir}, "
                       "or choose another {param:out}.")
    # an unfinished run's own folder is reused as it is; anything else must be new or empty
    out = os.path.abspath(out) if resume else prepare_out_folder(out)
    os.makedirs(checkpoint, exist_ok=True)
    return _Setup(data, head_dir, out, options, head, head_config, head_model, fingerprint, dataset,
                  checkpoint)


def finetune(data: str, head_dir: str, out: str, options: FinetuneOptions | None = None,
             resume: bool = False, weights_dir: str | None = None, weights: str | None = None,
             progress: bool | None = None, trust: bool = False) -> FinetuneSummary:
    """Fine-tune backbone + head on the images of `data`; write the result to `out`.

    Args:
        data: image folder or CSV/TSV list (classes must match the head's).
        head_dir: a head folder from `featcache train-head`.
        out: folder for the fine-tuned model; holds the checkpoint while running.
        options: what to unfreeze and how to train.
        resume: continue the unfinished run in `out`.
        weights_dir, weights: where to find the backbone's weights (as for predict).
        progress: epoch bar (None: only on a terminal).
        trust: load a pickled head featcache did not write for this user.

    Raises:
        FeatcacheError subclasses with one-line messages.
    """
    options = options or FinetuneOptions()
    options.validate()
    keras = import_keras()
    setup = _prepare(data, head_dir, out, options, resume, trust)
    return _run(keras, setup, resume, weights_dir, weights, progress)


def _run(keras, setup: _Setup, resume, weights_dir, weights, progress) -> FinetuneSummary:
    from .prediction import backbone_for_head

    options, head = setup.options, setup.head
    backbone = backbone_for_head(setup.fingerprint, setup.head_config, weights_dir, weights,
                                 options.precision, runtime="keras")  # Keras trains it
    head_history_path = os.path.join(setup.head_dir, HISTORY_FILE)
    head_history = read_json(head_history_path) if os.path.isfile(head_history_path) else {}
    head_epochs = len(head_history.get("loss", []))

    train_items = _items(setup.dataset, head.class_names, "train")
    val_items = _items(setup.dataset, head.class_names, "val")
    if not train_items:
        raise UsageError(f"{{param:data}} {setup.data}: no training images.")
    per_class = class_weights(np.array([i.label for i in train_items]), head.n_classes,
                              options.class_weight)
    first = read_json(setup.state_path)["epochs_done"] if resume else 0
    stores = _pixel_stores(setup, options, backbone.resize, train_items, val_items)
    train_feed = image_batches_for(keras, train_items, backbone.resize, head.n_classes, options,
                                   True, first, per_class, stores[0])
    val_feed = (image_batches_for(keras, val_items, backbone.resize, head.n_classes, options, False, 0,
                                  store=stores[1])
                if val_items else None)
    best_weights = os.path.join(setup.checkpoint, BEST_WEIGHTS)
    if resume:
        state = read_json(setup.state_path)
        register_optimizers(keras)
        model = load_model_safely(os.path.join(setup.checkpoint, "last.keras"))
    else:
        model, trainable = build_model(backbone.extractor, setup.head_model, options, len(train_feed))
        # the starting point, before any update: it must score what the head scored on the
        # cache (same images, same features), and it is the weights to beat
        before = _evaluate(model, val_feed)
        state = {"epochs": options.epochs, "epochs_done": 0, "best_loss": None, "best_epoch": None,
                 "wait": 0, "history": {}, "trainable_layers": trainable,
                 "head_epochs": head_epochs, "options": asdict(options),
                 "precision": backbone.extractor.precision,
                 "head_fingerprint": setup.fingerprint, "before_finetune": before}
        if before is not None:
            state["best_loss"], state["best_accuracy"] = before["val_loss"], before["val_accuracy"]
            _save_weights(model, best_weights)
        write_json_atomic(setup.state_path, state)

    feeds = [f for f in (train_feed, val_feed) if f is not None]
    callbacks = [_checkpoint_callback(keras, setup.checkpoint, state, options.patience,
                                      options.early_stopping, feeds),
                 epoch_bar(keras, options.epochs - first, progress, desc="fine-tune")]
    stopped = options.early_stopping and val_feed is not None and state["wait"] >= options.patience
    started = time.perf_counter()
    try:
        if first < options.epochs and not stopped:
            model.fit(train_feed, validation_data=val_feed, callbacks=callbacks, verbose=0,
                      initial_epoch=head_epochs + first, epochs=head_epochs + options.epochs)
    finally:
        kept = _kept_pixels(stores)
        for store in stores:
            if store is not None:
                store.close()
    seconds = time.perf_counter() - started

    if options.early_stopping and os.path.isfile(best_weights):  # else: the last epoch's weights
        _load_weights(model, best_weights)
    scores, labels = _score(model, val_items or train_items, backbone.resize, options)
    metrics = classification_metrics(labels, scores, head.class_names)
    metrics["split"] = "val" if val_items else "train"
    _write_outputs(setup, model, metrics, state, head_history, seconds)
    head_metrics = os.path.join(setup.head_dir, METRICS_FILE)
    epoch_seconds, train_seconds = state.get("epoch_seconds", []), state.get("train_seconds", [])
    return FinetuneSummary(
        out=setup.out, val_accuracy=metrics["accuracy"] if val_items else None,
        head_val_accuracy=read_json(head_metrics)["accuracy"] if os.path.isfile(head_metrics) else None,
        seconds=seconds, epochs_run=state["epochs_done"], first_epoch=head_epochs + 1,
        trainable_layers=state["trainable_layers"], resumed_from=first if resume else None,
        metrics=metrics, before_finetune=state.get("before_finetune"), pixels=kept,
        best_epoch=_kept_epoch(state),
        seconds_per_epoch=float(np.median(epoch_seconds)) if epoch_seconds else None,
        images_per_second=len(train_items) / float(np.median(train_seconds)) if train_seconds else None,
        precision=state.get("precision", "float32"))


def _kept_epoch(state: dict) -> int | None:
    """1-based fine-tuning epoch whose weights were kept, 0 for the starting weights."""
    if not state["options"].get("early_stopping", True):
        return state["epochs_done"]
    if state["best_epoch"] is not None:
        return state["best_epoch"] - state["head_epochs"] + 1
    return 0 if state.get("before_finetune") else None


def _evaluate(model, feed) -> dict | None:
    """Loss and accuracy of `model` on a validation feed (inference mode), or None without one."""
    if feed is None:
        return None
    scores = model.evaluate(feed, verbose=0, return_dict=True)
    return {"val_loss": float(scores["loss"]), "val_accuracy": float(scores["accuracy"])}


def _write_outputs(setup: _Setup, model, metrics, state, head_history, seconds) -> None:
    out, head = setup.out, setup.head
    head_epochs = state["head_epochs"]
    _save_model_atomic(_without_optimizer_state(model), os.path.join(out, MODEL_FILE))
    history = {k: list(head_history.get(k, [])) + v for k, v in state["history"].items()}
    write_model_files(
        out, kind="finetuned", head=head.name, model_file=MODEL_FILE, class_names=head.class_names,
        feature_shape=head.feature_shape_, spatial=head.spatial_,
        params=params_from_config(setup.head_config), cache=setup.head_config.get("cache", {}),
        backbone=setup.head_config.get("backbone", {}), fingerprint=setup.fingerprint,
        source_head=os.path.abspath(setup.head_dir),
        finetune={**asdict(setup.options), "precision": state.get("precision", "float32"),
                  "trainable_layers": state["trainable_layers"],
                  "head_epochs": head_epochs, "epochs_done": state["epochs_done"],
                  "best_epoch": state["best_epoch"], "kept_epoch": _kept_epoch(state),
                  "before_finetune": state.get("before_finetune"),
                  "epoch_seconds": [round(t, 3) for t in state.get("epoch_seconds", [])],
                  "seconds": round(seconds, 3),
                  "data": os.path.abspath(setup.data)})
    write_json_atomic(os.path.join(out, METRICS_FILE), metrics)
    write_json_atomic(os.path.join(out, HISTORY_FILE),
                      {**history, "finetune_start_epoch": head_epochs,
                       "before_finetune": state.get("before_finetune"),
                       "kept_epoch": _kept_epoch(state)})
    _plots(out, history, head_epochs, state, metrics, head.class_names)
    shutil.rmtree(setup.checkpoint, ignore_errors=True)


def _without_optimizer_state(model):
    """The same layers and weights as an uncompiled model: the file then holds no optimizer,
    so loading it needs nothing of featcache's and warns about no optimizer state."""
    keras = import_keras()
    return keras.Model(model.input, model.output, name=model.name)


def image_batches_for(keras, items, resize, n_classes, options, shuffle, first_epoch, weights=None,
                      store=None):
    from .image_feed import image_batches

    return image_batches(keras, items, resize, n_classes, options.batch_size, shuffle, options.seed,
                         first_epoch, options.workers, weights, store)


def _pixel_stores(setup: _Setup, options: FinetuneOptions, resize, train_items, val_items):
    """Where the run keeps its decoded pixels: (train store, val store), None when not kept."""
    from .image_feed import PixelStore, available_memory, MEMORY_FRACTION

    if not options.keep_pixels:
        return None, None
    for name in os.listdir(setup.checkpoint):  # an interrupted run's: its pixels are decoded again
        if name.startswith("pixels-") and name.endswith(".tmp"):
            os.remove(os.path.join(setup.checkpoint, name))
    free = available_memory()
    budget = int(free * MEMORY_FRACTION) if free else 1 << 30
    train = PixelStore(len(train_items), resize.size, setup.checkpoint, budget)
    left = budget - train.nbytes if train.where == "memory" else 0
    val = PixelStore(len(val_items), resize.size, setup.checkpoint, max(0, left)) if val_items else None
    return train, val


def _kept_pixels(stores) -> dict:
    """What the run's pixel stores held: bytes in memory and in a temporary file."""
    kept = {"memory_bytes": 0, "file_bytes": 0, "file": None}
    for store in stores:
        if store is None:
            continue
        if store.where == "memory":
            kept["memory_bytes"] += store.nbytes
        else:
            kept["file_bytes"] += store.nbytes
            kept["file"] = kept["file"] or os.path.dirname(store.path)
    return kept


def _score(model, items, resize, options) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a pixels-to-probabilities model on images, in order (unreadable ones left out)."""
    from .prediction import keras_scores, scored_items

    kept = [(item.label, row) for item, row, _ in
            scored_items(keras_scores(model), items, resize, options.batch_size, options.workers)
            if row is not None]
    return np.array([row for _, row in kept]), np.array([label for label, _ in kept])


def _plots(out, history, head_epochs, state, metrics, class_names) -> None:
    from .plots import plot_confusion, plot_history

    best = state["best_epoch"]
    if not state["options"].get("early_stopping", True):  # the last epoch is what was kept
        best = head_epochs + state["epochs_done"] - 1 if state["epochs_done"] else None
    plot_history(history, os.path.join(out, "history.png"), "head, then fine-tuning",
                 best_epoch=None if best is None else best, phase_start=head_epochs,
                 phase_start_point=state.get("before_finetune"))
    plot_confusion(metrics["confusion_matrix"], class_names, os.path.join(out, "confusion_matrix.png"),
                   f"fine-tuned: {metrics['split']} accuracy {metrics['accuracy']:.3f}")
