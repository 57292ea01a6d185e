"""extract --augment-views K: K seeded augmented views per training image, stored next to it."""

from __future__ import annotations

import numpy as np
import pytest
import small_models

import featcache
from featcache.augment_views import AugmentSpec
from featcache.errors import FingerprintMismatchError, UsageError
from featcache.extract import ExtractOptions, extract
from featcache.cache import FeatureCache
from featcache.train import train_head


@pytest.fixture(scope="module")
def mobilenet96(weights_dir):
    return small_models.mobilenet96(weights_dir)


def run(extractor, data, out, **kw):
    return extract(ExtractOptions(data=str(data), out=str(out), shard_size=8, progress=False, **kw),
                   extractor=extractor)


def test_views_are_stored_for_train_only_and_repeat_with_the_seed(mobilenet96, data_root, tmp_path):
    data = data_root / "tiny_hymenoptera"  # 16 train, 8 val
    summary = run(mobilenet96, data, tmp_path / "v", augment_views=2, augment_seed=5)
    assert summary.splits == {"train": 48, "val": 8} and summary.images_extracted == 24
    train = featcache.load_features(summary.cache, "train")
    assert list(train.views) == [0, 1, 2] * 16
    assert train.paths[0::3] == train.paths[1::3] == train.paths[2::3] == sorted(set(train.paths))
    assert not featcache.load_features(summary.cache, "val").views.any()  # val stays clean
    fp = FeatureCache(summary.cache).fingerprint
    assert fp["augment"]["views"] == 2 and fp["augment"]["seed"] == 5 and "rotation" in fp["augment"]

    # view 0 is the clean image: the features a run without views stores
    clean = featcache.load_features(run(mobilenet96, data, tmp_path / "clean").cache, "train")
    np.testing.assert_allclose(train.features[0::3], clean.features, rtol=1e-5, atol=1e-5)
    assert not np.allclose(train.features[1::3], clean.features, atol=1e-3)
    # same seed, same views, byte for byte (other seeds: see the next test)
    again = featcache.load_features(run(mobilenet96, data, tmp_path / "again", augment_views=2,
                                        augment_seed=5).cache, "train")
    np.testing.assert_array_equal(again.features, train.features)
    # K is part of the cache key
    with pytest.raises(FingerprintMismatchError, match="augment"):
        run(mobilenet96, data, tmp_path / "v", augment_views=3, augment_seed=5)
    # a head cross-validates with each image's views kept in one fold
    head = train_head(summary.cache, "logreg", str(tmp_path / "head"),
                      {"search": True, "cv": 2}, progress=False)
    assert head.train_rows == 48 and head.val_rows == 8


def test_a_view_depends_only_on_file_hash_view_and_seed():
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    spec = AugmentSpec(views=4, seed=1)
    digest = "ab" * 32
    first = spec.apply(pixels, digest, 1)
    assert first.shape == pixels.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, spec.apply(pixels, digest, 1))
    assert not np.array_equal(first, spec.apply(pixels, digest, 2))
    assert not np.array_equal(first, spec.apply(pixels, "cd" * 32, 1))
    assert not np.array_equal(first, AugmentSpec(views=4, seed=2).apply(pixels, digest, 1))
    np.testing.assert_array_equal(spec.apply(pixels, digest, 0), pixels)
    with pytest.raises(UsageError, match="augment_views 100"):
        AugmentSpec(views=100).validate()
