"""The backbone registry: which pretrained Keras application each name means.

Each entry is data: the Keras builder, the preprocessing its ImageNet weights
expect, its default and minimum input size, the file names Keras itself uses
for its weights, and the extra layers that exist only with the 1000-class top.
Nothing here imports Keras; `featcache.feature_model` turns a spec into a model.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one pretrained backbone and feed it.

    Attributes:
        name: registry name, e.g. "vgg16".
        builder: attribute of `keras.applications`, e.g. "VGG16", or
            "package.module:function" for a backbone of your own; either is
            called as builder(include_top=..., weights=..., input_shape=...).
        preprocess: mode of `featcache.preprocessing` that matches the Keras
            family's own `preprocess_input` ("caffe", "tf", "torch" or "none"
            for models that normalise inside the network).
        keras_module: module of `keras.applications` whose `preprocess_input`
            the mode reproduces (tests compare the two).
        input_size: default square input size in pixels.
        min_size: smallest input size the builder accepts.
        weights_file: Keras' file name for the ImageNet weights without the
            top; "{rows}" is replaced by the size for families whose weights
            differ per input size.
        top_weights_file: file name of the weights with the 1000-class top.
        weights_sizes: input sizes with their own weight files; any other size
            loads the `input_size` file, as Keras does.
        top_layers: layers that exist only in the full network (VGG's fc1 and
            fc2); asking for one builds the model with its top.
        top_block: the first layer of the backbone's top block (its last
            stage, at the lowest resolution): `featcache finetune` trains it
            and every layer after it unless told otherwise (VGG16
            "block5_conv1", as in the classic recipe).
        top_block_after: for families whose top block starts with a layer
            Keras numbers per session (Inception's "conv2d_85"), the named
            layer that ends the block below it; the top block is every layer
            after it. One of the two is set.
    """

    name: str
    builder: str
    preprocess: str
    keras_module: str
    input_size: int = 224
    min_size: int = 32
    weights_file: str = ""
    top_weights_file: str = ""
    weights_sizes: tuple[int, ...] = ()
    top_layers: tuple[str, ...] = ()
    top_block: str = ""
    top_block_after: str = ""

    @property
    def builder_path(self) -> str:
        """The builder's full dotted name (it goes into fingerprints)."""
        return self.builder if ":" in self.builder else f"keras.applications.{self.builder}"

    def weights_file_for(self, image_size: int, include_top: bool = False) -> str:
        """Keras' own file name for this backbone's ImageNet weights."""
        rows = image_size if image_size in self.weights_sizes else self.input_size
        template = self.top_weights_file if include_top else self.weights_file
        return template.format(rows=rows)


_VGG_TOP = ("flatten", "fc1", "fc2", "predictions")

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        BackboneSpec(
            "vgg16", "VGG16", "caffe", "vgg16",
            weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            top_weights_file="vgg16_weights_tf_dim_ordering_tf_kernels.h5",
            top_layers=_VGG_TOP,
            top_block="block5_conv1",
        ),
        BackboneSpec(
            "vgg19", "VGG19", "caffe", "vgg19",
            weights_file="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
            top_weights_file="vgg19_weights_tf_dim_ordering_tf_kernels.h5",
            top_layers=_VGG_TOP,
            top_block="block5_conv1",
        ),
        BackboneSpec(
            "resnet50", "ResNet50", "caffe", "resnet",
            weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            top_block="conv5_block1_1_conv",
        ),
        BackboneSpec(
            "resnet101", "ResNet101", "caffe", "resnet",
            weights_file="resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
            top_block="conv5_block1_1_conv",
        ),
        BackboneSpec(
            "resnet50v2", "ResNet50V2", "tf", "resnet_v2",
            weights_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            top_block="conv5_block1_preact_bn",
        ),
        BackboneSpec(
            "mobilenet", "MobileNet", "tf", "mobilenet",
            weights_file="mobilenet_1_0_{rows}_tf_no_top.h5",
            top_weights_file="mobilenet_1_0_{rows}_tf.h5",
            weights_sizes=(128, 160, 192, 224),
            top_block="conv_dw_12",
        ),
        BackboneSpec(
            "mobilenetv2", "MobileNetV2", "tf", "mobilenet_v2",
            weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
            weights_sizes=(96, 128, 160, 192, 224),
            top_block="block_13_expand",
        ),
        BackboneSpec(
            "mobilenetv3small", "MobileNetV3Small", "none", "mobilenet_v3",
            weights_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            top_block="expanded_conv_8_expand",
        ),
        BackboneSpec(
            "mobilenetv3large", "MobileNetV3Large", "none", "mobilenet_v3",
            weights_file="weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
            top_block="expanded_conv_12_expand",
        ),
        BackboneSpec(
            "efficientnetb0", "EfficientNetB0", "none", "efficientnet",
            weights_file="efficientnetb0_notop.h5",
            top_block="block6a_expand_conv",
        ),
        BackboneSpec(
            "efficientnetv2b0", "EfficientNetV2B0", "none", "efficientnet_v2",
            weights_file="efficientnetv2-b0_notop.h5",
            top_block="block6a_expand_conv",
        ),
        BackboneSpec(
            "inceptionv3", "InceptionV3", "tf", "inception_v3",
            input_size=299, min_size=75,
            weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            top_block_after="mixed8",
        ),
        BackboneSpec(
            "inceptionresnetv2", "InceptionResNetV2", "tf", "inception_resnet_v2",
            input_size=299, min_size=75,
            weights_file="inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            top_block_after="block8_9_ac",
        ),
        BackboneSpec(
            "xception", "Xception", "tf", "xception",
            input_size=299, min_size=71,
            weights_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
            top_block="block14_sepconv1",
        ),
        BackboneSpec(
            "densenet121", "DenseNet121", "torch", "densenet",
            weights_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
            top_block="conv5_block1_0_bn",
        ),
        BackboneSpec(
            "nasnetmobile", "NASNetMobile", "tf", "nasnet",
            weights_file="nasnet_mobile_no_top.h5",
            top_block_after="normal_concat_11",
        ),
        BackboneSpec(
            "nasnetlarge", "NASNetLarge", "tf", "nasnet",
            input_size=331,
            weights_file="nasnet_large_no_top.h5",
            top_block_after="normal_concat_17",
        ),
        BackboneSpec(
            "convnexttiny", "ConvNeXtTiny", "none", "convnext",
            weights_file="convnext_tiny_notop.h5",
            top_block="convnext_tiny_downsampling_block_2",
        ),
    ]
}


def register_backbone(spec: BackboneSpec, replace: bool = False) -> BackboneSpec:
    """Add a backbone to the registry (e.g. your own Keras model builder).

    Raises:
        UsageError: the name is taken and `replace` is False.
    """
    key = spec.name.lower().replace("-", "").replace("_", "")
    if key in BACKBONES and not replace and BACKBONES[key] != spec:
        raise UsageError(f"A backbone named '{spec.name}' is already registered "
                         f"({BACKBONES[key].builder_path}); pass replace=True to replace it.")
    BACKBONES[key] = spec
    return spec


def list_backbones() -> list[str]:
    """Names of all registered backbones, sorted."""
    return sorted(BACKBONES)


def get_backbone(name: str) -> BackboneSpec:
    """Look up a backbone by name (case-insensitive, '-' and '_' ignored).

    Raises:
        UsageError: unknown name; the message suggests the closest ones.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key in BACKBONES:
        return BACKBONES[key]
    close = difflib.get_close_matches(key, BACKBONES, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UsageError(
        f"Unknown backbone '{name}' ({{param:backbone}}).{hint} "
        f"Available: {', '.join(list_backbones())}."
    )
