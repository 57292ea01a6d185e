"""The backbone registry against Keras itself: builders, preprocessing, weight file names."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

from featcache import preprocessing
from featcache.backbones import BACKBONES, get_backbone, list_backbones
from featcache.errors import UsageError
from featcache.extract import ExtractOptions, extract
from featcache.cache import load_features

REQUIRED = ["vgg16", "vgg19", "resnet50", "mobilenet", "mobilenetv2", "efficientnetb0",
            "inceptionv3", "xception", "densenet121", "nasnetlarge"]
# the heaviest builds run in CI's slow pass (python -m pytest -m slow), not in the default run
SLOW_TO_BUILD = {"nasnetlarge", "nasnetmobile", "inceptionresnetv2", "densenet121", "resnet101",
                 "efficientnetv2b0", "convnexttiny", "mobilenetv3large"}


# one backbone per preprocessing family and architecture style builds in the default run;
# CI's slow run builds every one
DEFAULT_RUN = {"mobilenet", "vgg16", "resnet50", "efficientnetb0", "densenet121"}


def _marked(names):
    return [n if n in DEFAULT_RUN and n not in SLOW_TO_BUILD else pytest.param(n, marks=pytest.mark.slow)
            for n in names]


def test_registry_covers_the_backbones_people_use():
    assert set(REQUIRED) <= set(list_backbones())


def test_unknown_backbone_names_close_matches_and_the_flag():
    with pytest.raises(UsageError, match=r"Unknown backbone 'vgg61' \(backbone\)\. Did you mean vgg19, vgg16\?"):
        get_backbone("vgg61")


def test_lookup_ignores_case_and_separators():
    assert get_backbone("MobileNet-V2").name == "mobilenetv2"


@pytest.mark.parametrize("name", list_backbones())
def test_preprocessing_matches_the_keras_family_function(name):
    spec = BACKBONES[name]
    keras_module = importlib.import_module(f"keras.applications.{spec.keras_module}")
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 5, 4, 3)).astype("float32")
    expected = np.asarray(keras_module.preprocess_input(pixels.copy()))
    got = preprocessing.preprocess_numpy(pixels, spec.preprocess)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_preprocessing_layer_equals_numpy_reference(mode):
    layer = preprocessing.preprocessing_layer(mode)
    pixels = np.random.default_rng(2).uniform(0, 255, (2, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(layer(pixels)), preprocessing.preprocess_numpy(pixels, mode),
                               rtol=1e-5, atol=1e-4)
    assert preprocessing.preprocessing_layer("none") is None


class _Requested(Exception):
    pass


@pytest.mark.parametrize("name,size", [
    pytest.param(n, BACKBONES[n].input_size, marks=[pytest.mark.slow] if n in SLOW_TO_BUILD else [])
    for n in list_backbones()] + [("mobilenet", 128), ("mobilenet", 100), ("mobilenetv2", 96)])
def test_weights_file_name_is_the_one_keras_asks_for(name, size, monkeypatch):
    """Keras' own builder is run until it asks get_file for its weights; the names must agree."""
    import keras
    from keras.src.utils import file_utils

    def fake_get_file(fname=None, origin=None, *args, **kwargs):
        raise _Requested(fname)

    monkeypatch.setattr(file_utils, "get_file", fake_get_file)
    spec = BACKBONES[name]
    builder = getattr(keras.applications, spec.builder)
    with pytest.raises(_Requested) as requested, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns that size 100 falls back to 224's weights
        builder(include_top=False, weights="imagenet", input_shape=(size, size, 3))
    assert spec.weights_file_for(size) == str(requested.value)


@pytest.mark.parametrize("name", _marked(list_backbones()))
def test_backbone_builds_and_extracts_with_random_weights(name, tiny_folder, tmp_path):
    """weights=None (random): checks plumbing and shapes only, not feature quality."""
    spec = BACKBONES[name]
    size = max(spec.min_size, 32)
    with pytest.warns(UserWarning, match="randomly initialised"):
        summary = extract(ExtractOptions(
            data=str(tiny_folder), out=str(tmp_path / "cache"), backbone=name, image_size=size,
            weights="none", batch_size=4, progress=False))
    assert summary.splits == {"train": 8, "val": 4}
    train = load_features(summary.cache, "train")
    assert train.features.shape[0] == 8 and train.features.ndim == 2
    assert train.features.shape[1] == summary.feature_shape[0] > 0
    assert np.isfinite(train.features).all()
