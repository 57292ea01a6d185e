"""Build the frozen feature model: raw pixels in, one feature tap out.

The model is `pixels (0-255, RGB) -> preprocessing -> backbone up to the tap
-> optional global pooling`. It is an ordinary Keras functional model, so it
runs on the TensorFlow, JAX or PyTorch backend, and the same construction is
reused by fine-tuning and export.
"""

from __future__ import annotations

import contextlib
import difflib
import warnings
from dataclasses import dataclass, field

from . import preprocessing
from ._keras import import_keras
from .backbones import BackboneSpec, get_backbone
from .errors import FeatcacheWarning, UsageError, WeightsError, param
from .fileio import sha256_file
from .hardware import check_precision
from .runtimes import check_runtime, describe_runtime, import_openvino
from .weights import (
    RANDOM_WEIGHTS_WARNING,
    WeightsChoice,
    keras_cache_path,
    offline_hint,
    resolve_weights,
)

POOLINGS = ("avg", "max", "none")
# Keras dtype policies: weights stay float32, the backbone computes in the reduced type
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Build Keras layers computing in `precision` inside this block (weights stay float32)."""
    keras = import_keras()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(_POLICIES[check_precision(precision)])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@dataclass
class FeatureExtractor:
    """A built feature model and everything that shaped its output.

    Attributes:
        model: Keras model mapping (N, S, S, 3) float pixels in [0, 255] to features.
        spec: the backbone's registry entry.
        image_size: S.
        layer: the layer asked for, or None for the backbone's final output.
        tap_name: the name of the tapped layer (Keras numbers some names per
            session, so only `layer` goes into fingerprints).
        pooling: "avg", "max" or "none" (spatial map kept, or a flat layer).
        include_top: whether the full network (with its classifier top) was built.
        weights: identity of the loaded weights: {"source", "file", "sha256"} or
            {"source": "none", "seed"}.
        feature_shape: shape of one row of features.
        backbone: the Keras model from the backbone's input to the tap, nested in
            `model`; fine-tuning unfreezes its top layers (see finetuning.py).
    """

    model: object
    spec: BackboneSpec
    image_size: int
    layer: str | None
    tap_name: str
    pooling: str
    include_top: bool
    weights: dict
    feature_shape: tuple[int, ...] = field(default=())
    backbone: object = None
    precision: str = "float32"
    runtime: str = "keras"
    quantized: object = None  # quantize.Quantized, for precision int8
    _buffer: object = field(default=None, repr=False, compare=False)
    _call: object = field(default=None, repr=False, compare=False)

    def _infer(self):
        """The fastest way found to run the model on one fixed-shape batch, as numpy.

        On TensorFlow a plain `tf.function` of the call: measured 10-80 % faster
        than `predict_on_batch`, whose per-call data handling costs more than the
        arithmetic for small backbones (benchmarks/inference_overhead.py). No XLA:
        on CPU it ran these backbones 5-15x slower. Other backends compile
        `predict_on_batch` themselves.
        """
        if self._call is None:
            import numpy as np

            keras = import_keras()
            model = self.model
            if self.runtime == "openvino":
                from .runtimes import openvino_call

                self._call = openvino_call(
                    model, self.precision,
                    model_file=self.quantized.model_path if self.quantized is not None else None)
            elif keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                compiled = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
                self._call = lambda x: compiled(x).numpy()
            else:
                self._call = lambda x: np.asarray(model.predict_on_batch(x))
        return self._call

    def features(self, pixels, batch_size: int | None = None):
        """Features of decoded pixels (N, S, S, 3), in batches of `batch_size` (default N).

        Each call runs on a batch of exactly `batch_size` rows (the last one
        padded with zeros and trimmed), so the compiled model never sees a
        new shape and a batch's padding never depends on earlier batches.
        """
        import numpy as np

        pixels = np.asarray(pixels)
        size = int(batch_size or len(pixels) or 1)
        padded = self._buffer
        if padded is None or padded.shape != (size, *pixels.shape[1:]):
            padded = self._buffer = np.zeros((size, *pixels.shape[1:]), dtype=np.float32)
        out = []
        for start in range(0, len(pixels), size):
            chunk = pixels[start:start + size]
            padded[:len(chunk)] = chunk
            padded[len(chunk):] = 0
            out.append(self._infer()(padded)[:len(chunk)])
        if not out:
            return np.zeros((0, *self.feature_shape), dtype=np.float32)
        return np.concatenate(out)

    def describe(self) -> dict:
        """The fields of this extractor that shape the features, as JSON-able data."""
        return {
            "backbone": self.spec.name,
            "builder": self.spec.builder_path,
            "input_size": [self.image_size, self.image_size],
            "include_top": self.include_top,
            "layer": self.layer,
            "pooling": self.pooling,
            "preprocessing": preprocessing.describe(self.spec.preprocess),
            # the bytes loaded, not where they came from: the same file found through
            # --weights-dir, Keras' cache or --weights PATH gives the same features
            "weights": ({"sha256": self.weights["sha256"]} if "sha256" in self.weights
                        else {"random_seed": self.weights["seed"]}),
            "feature_shape": list(self.feature_shape),
            # only when reduced, so float32 caches made before precisions existed keep their key
            **({"precision": self.precision} if self.precision != "float32" else {}),
            **({"runtime": self._describe_runtime()} if self.runtime != "keras" else {}),
        }

    def _describe_runtime(self) -> dict:
        described = describe_runtime(self.runtime)
        if self.quantized is not None:  # which images calibrated the int8 model
            described["calibration"] = dict(self.quantized.calibration)
        return described


def check_options(spec: BackboneSpec, image_size: int, layer: str | None, pooling: str | None) -> None:
    """Validate size, tap and pooling before anything heavy is built.

    Raises:
        UsageError: a value the backbone cannot take.
    """
    if image_size < spec.min_size:
        raise UsageError(
            f"{{param:image_size}} {image_size} is below {spec.name}'s minimum of {spec.min_size} pixels."
        )
    if pooling is not None and pooling not in POOLINGS:
        raise UsageError(f"{{param:pooling}} {pooling}: allowed values are {', '.join(POOLINGS)}.")
    if layer in spec.top_layers and image_size != spec.input_size:
        raise UsageError(
            f"{{param:layer}} {layer} is part of {spec.name}'s fully connected top, which only "
            f"takes {spec.input_size}x{spec.input_size} images: use {{param:image_size}} {spec.input_size}."
        )


def resolve_builder(spec: BackboneSpec):
    """The function that builds a backbone: a Keras application or "module:function"."""
    if ":" in spec.builder:
        import importlib

        module, _, name = spec.builder.partition(":")
        return getattr(importlib.import_module(module), name)
    return getattr(import_keras().applications, spec.builder)


def _build_base(keras, spec: BackboneSpec, choice: WeightsChoice, image_size: int, include_top: bool):
    builder = resolve_builder(spec)
    if choice.source == "none":
        weights_arg = None
    elif choice.path is not None:
        weights_arg = choice.path
    else:
        weights_arg = "imagenet"
    try:
        return builder(
            include_top=include_top, weights=weights_arg, input_shape=(image_size, image_size, 3)
        )
    except Exception as exc:  # Keras raises bare Exception for download failures
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if weights_arg == "imagenet" and ("URL fetch failure" in text or isinstance(exc, OSError)):
            raise WeightsError(
                f"Could not get ImageNet weights for {spec.name} ({choice.file_name}) from "
                f"Keras' cache or the internet: {text}. {offline_hint(choice)}"
            ) from exc
        if choice.path is not None and not isinstance(exc, (TypeError, NameError, AttributeError)):
            raise WeightsError(
                f"Could not load weights file {choice.path} into {spec.builder}"
                f"(include_top={include_top}): {text}"
            ) from exc
        if isinstance(exc, ValueError):
            raise UsageError(f"{spec.builder_path} refused the options: {text}") from exc
        raise


def _weights_identity(choice: WeightsChoice, seed: int) -> dict:
    if choice.source == "none":
        return {"source": "none", "seed": int(seed)}
    path = choice.path or keras_cache_path(choice.file_name)
    identity = {"source": choice.source, "file": choice.file_name}
    if choice.source == "file":
        identity["path"] = choice.path
    identity["sha256"] = sha256_file(path) if path else f"keras:{choice.file_name}"
    return identity


def _tap(keras, base, spec: BackboneSpec, layer: str | None):
    if layer is None:
        return base, base.layers[-1].name
    try:
        target = base.get_layer(layer)
    except ValueError:
        names = [lyr.name for lyr in base.layers]
        close = difflib.get_close_matches(layer, names, n=4, cutoff=0.5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise UsageError(
            f"{{param:layer}} {layer}: {spec.name} has no such layer.{hint} "
            f"List them with: featcache layers {spec.name}"
        ) from None
    return keras.Model(base.inputs, target.output, name=f"{spec.name}_to_{layer}"), layer


def build_feature_extractor(
    backbone: str,
    image_size: int | None = None,
    layer: str | None = None,
    pooling: str | None = None,
    weights: str = "imagenet",
    weights_dir: str | None = None,
    seed: int = 0,
    precision: str = "float32",
    runtime: str = "keras",
    int8_model: str | None = None,
) -> FeatureExtractor:
    """Build the frozen feature model for one backbone and tap.

    Args:
        backbone: registry name (see `featcache.backbones.list_backbones`).
        image_size: square input size; default is the backbone's own.
        layer: tap a named layer instead of the final conv output; VGG's
            "fc1"/"fc2" build the full network.
        pooling: "avg" or "max" global pooling of a spatial tap, "none" to keep
            the map; None means "avg" for spatial taps and nothing for flat ones.
        weights: "imagenet", "none" or a weights file.
        weights_dir: offline folder holding Keras' ImageNet weight files.
        seed: initialises random weights reproducibly (weights "none").
        precision: what the backbone computes in: "float32", or "bfloat16" /
            "float16" (Keras mixed precision: float32 weights, preprocessing
            and pooling; the features come out as float32).
        runtime: "keras", or "openvino" to run the same model through OpenVINO
            (converted from the Keras model; `precision` becomes its
            inference-precision hint).
        int8_model: for precision "int8", the folder of the quantized model
            (quantize.py; `extract` makes it from the training images).

    Raises:
        UsageError, WeightsError: see messages.
    """
    spec = get_backbone(backbone)
    size = int(image_size or spec.input_size)
    check_options(spec, size, layer, pooling)
    include_top = layer in spec.top_layers
    choice = resolve_weights(spec, weights, size, include_top, weights_dir)

    keras = import_keras()
    if choice.source == "none":
        warnings.warn(FeatcacheWarning(RANDOM_WEIGHTS_WARNING), stacklevel=2)
        keras.utils.set_random_seed(int(seed))
    check_runtime(runtime)
    check_precision(precision, runtime)
    if runtime == "openvino":
        import_openvino()  # says how to install it, before anything is built
    quantized = None
    if precision == "int8":
        from . import quantize

        quantized = quantize.load(int8_model) if int8_model else None
        if quantized is None:
            raise UsageError(f"{param('precision')} int8 needs the quantized model that "
                             f"featcache extract makes from the training images; none found at "
                             f"{int8_model or '(no folder given)'}.")
    keras_precision = precision if runtime == "keras" else "float32"  # OpenVINO casts itself
    with dtype_policy(keras_precision):
        base = _build_base(keras, spec, choice, size, include_top)
        base.trainable = False
        tapped, tap_name = _tap(keras, base, spec, layer)

    inputs = keras.Input((size, size, 3), name="pixels", dtype="float32")
    x = inputs
    pre = preprocessing.preprocessing_layer(spec.preprocess)
    if pre is not None:
        x = pre(x)
    x = tapped(x, training=False)
    spatial = len(x.shape) == 4
    if not spatial and pooling in ("avg", "max"):
        raise UsageError(
            f"{{param:pooling}} {pooling} needs a spatial layer; {tap_name} outputs "
            f"{tuple(x.shape[1:])}. Use {{param:pooling}} none."
        )
    if spatial and (pooling or "avg") == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="featcache_avg_pool", dtype="float32")(x)
        resolved_pooling = "avg"
    elif spatial and pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="featcache_max_pool", dtype="float32")(x)
        resolved_pooling = "max"
    else:
        resolved_pooling = "none"
        if keras_precision != "float32":  # features always leave the model as float32
            x = keras.layers.Activation("linear", dtype="float32", name="featcache_float32")(x)
    model = keras.Model(inputs, x, name=f"featcache_{spec.name}")
    extractor = FeatureExtractor(
        model=model,
        spec=spec,
        image_size=size,
        layer=layer,
        tap_name=tap_name,
        pooling=resolved_pooling,
        include_top=include_top,
        weights=_weights_identity(choice, seed),
        feature_shape=tuple(int(d) for d in x.shape[1:]),
        backbone=tapped,
        precision=precision,
        runtime=runtime,
        quantized=quantized,
    )
    if runtime == "openvino":
        # convert and compile now, as part of building: OpenVINO's conversion can start
        # helper processes, which must not inherit the descriptors of shard files being
        # written (an inherited HDF5 lock made reads of the finished shard fail)
        extractor._infer()
    return extractor


@dataclass
class LayerListing:
    """A backbone's layers, for choosing the `layer` to tap.

    Attributes:
        backbone: the backbone's registry name.
        image_size: the square input size the output shapes are for.
        layers: one dict per layer, input to output: "name", "type" (the Keras
            class), "output_shape" (without the batch axis; None where unknown)
            and "needs_top" (the layer exists only in the full network).
    """

    backbone: str
    image_size: int
    layers: list[dict]

    def to_json(self) -> list[dict]:
        return self.layers


def list_layers(backbone: str, image_size: int | None = None) -> LayerListing:
    """Build a backbone without weights and list its layers.

    The full network (with its classifier top) is built when the backbone has
    layers that exist only there and `image_size` is its default size, so
    those layers (VGG's fc1, fc2) are listed too.

    Args:
        backbone: registry name (see `featcache.backbones.list_backbones`).
        image_size: square input size; None for the backbone's default.

    Returns:
        The layers with their output shapes at that size.

    Raises:
        UsageError: unknown backbone, or a size below the backbone's minimum.
    """
    spec = get_backbone(backbone)
    size = image_size or spec.input_size
    check_options(spec, size, None, None)
    keras = import_keras()
    include_top = bool(spec.top_layers) and size == spec.input_size
    builder = getattr(keras.applications, spec.builder)
    model = builder(include_top=include_top, weights=None, input_shape=(size, size, 3))
    rows = [{"name": layer.name, "type": type(layer).__name__,
             "output_shape": list(layer.output.shape[1:]),
             "needs_top": layer.name in spec.top_layers}
            for layer in model.layers]
    return LayerListing(spec.name, size, rows)


_LAST_BUILT: dict[tuple, FeatureExtractor] = {}


def shared_feature_extractor(*args) -> FeatureExtractor:
    """`build_feature_extractor(*args)`, reusing the last extractor built with the same
    arguments. One is kept per process: repeated predictions and the clones scikit-learn
    makes of `featcache.sklearn.ImageFeatures` share it, and asking for another replaces it."""
    extractor = _LAST_BUILT.get(args)
    if extractor is None:
        extractor = build_feature_extractor(*args)
        _LAST_BUILT.clear()
        _LAST_BUILT[args] = extractor
    return extractor
