"""Pixel preprocessing each backbone's ImageNet weights expect.

Every Keras family's `preprocess_input` is a per-channel affine map of RGB
pixels in [0, 255]: "caffe" reorders to BGR and subtracts the ImageNet mean
(VGG, ResNet), "tf" scales to [-1, 1] (MobileNet, Inception, Xception),
"torch" scales to [0, 1] and standardises (DenseNet), and "none" passes raw
pixels to models that normalise inside the network (EfficientNet, ConvNeXt).
Never `rescale=1/255`.

featcache writes that map as a frozen 1x1 convolution at the front of the
feature model, so the same graph serves extraction, fine-tuning and export,
on any Keras backend, and saves with built-in layers only.
"""

from __future__ import annotations

import numpy as np

from .errors import UsageError

MODES = ("caffe", "tf", "torch", "none")

_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float64)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float64)
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float64)

LAYER_NAME = "featcache_preprocess"


def channel_affine(mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The (3, 3) matrix W and bias b with out[..., c] = sum_k x[..., k] W[k, c] + b[c].

    Raises:
        UsageError: unknown mode.
    """
    if mode == "caffe":
        return np.eye(3)[:, ::-1].copy(), -_CAFFE_MEAN_BGR
    if mode == "tf":
        return np.eye(3) / 127.5, -np.ones(3)
    if mode == "torch":
        return np.diag(1.0 / (255.0 * _TORCH_STD)), -_TORCH_MEAN / _TORCH_STD
    if mode == "none":
        return np.eye(3), np.zeros(3)
    raise UsageError(f"Unknown preprocessing mode '{mode}'. Allowed: {', '.join(MODES)}.")


def preprocess_numpy(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Apply the mode to RGB pixels in [0, 255]; returns a new float32 array."""
    w, b = channel_affine(mode)
    x = np.asarray(pixels, dtype=np.float32)
    return (x @ w.astype(np.float32) + b.astype(np.float32)).astype(np.float32)


def describe(mode: str) -> dict:
    """A JSON-able record of the mode and its exact coefficients, for fingerprints."""
    w, b = channel_affine(mode)
    return {"mode": mode, "matrix": np.round(w, 10).tolist(), "bias": np.round(b, 10).tolist()}


def preprocessing_layer(mode: str):
    """A frozen built-in Keras layer computing the mode, or None for "none".

    The layer is a 1x1 `Conv2D` with fixed weights, so models that contain it
    save and load with plain `keras.models.load_model`.
    """
    if mode == "none":
        return None
    from ._keras import import_keras

    keras = import_keras()
    w, b = channel_affine(mode)
    layer = keras.layers.Conv2D(
        3, 1, use_bias=True, trainable=False, name=LAYER_NAME, dtype="float32"
    )
    layer.build((None, None, None, 3))
    layer.set_weights([w.reshape(1, 1, 3, 3).astype("float32"), b.astype("float32")])
    return layer
