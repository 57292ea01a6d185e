"""A tiny generated backbone (a few Keras layers, random weights) for tests that need no ../shared.

`register()` adds it to featcache's registry as "tinycnn"; it builds in well
under a second and runs at 32 px, so the whole extract -> cache -> head ->
predict path runs on any fresh clone.
"""

from __future__ import annotations

from featcache.backbones import BackboneSpec, register_backbone

SPEC = BackboneSpec("tinycnn", "tiny_backbone:build", "tf", "", input_size=32, min_size=16)


def build(include_top=False, weights=None, input_shape=(32, 32, 3)):
    """Two strided convolutions with BatchNorm: (S, S, 3) -> (S/4, S/4, 16)."""
    import keras

    if weights is not None:
        raise ValueError("tinycnn has no pretrained weights; use weights='none'")
    inputs = keras.Input(input_shape, name="input")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="conv2_relu")(x)
    return keras.Model(inputs, x, name="tinycnn")


def register() -> BackboneSpec:
    return register_backbone(SPEC, replace=True)
