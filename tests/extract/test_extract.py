"""Extraction end to end, in process: real Keras models, real HDF5 files."""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

import featcache
from featcache.errors import CacheError, CacheLockedError, DataError, FingerprintMismatchError
from featcache.extract import ExtractOptions, extract, plan_shards
from featcache.dataset import load_dataset
from featcache.cache import CacheLock, FeatureCache


def opts(data, out, **kw) -> ExtractOptions:
    kw.setdefault("progress", False)
    return ExtractOptions(data=str(data), out=str(out), **kw)


def test_mobilenet_features_equal_keras_reference(data_root, weights_dir, tmp_path):
    """Cached features == keras MobileNet(pooling="avg") on mobilenet.preprocess_input inputs."""
    import keras

    data = data_root / "tiny_imagenette"
    summary = extract(opts(data, tmp_path / "c", backbone="mobilenet", weights_dir=str(weights_dir)))
    assert summary.splits == {"train": 60, "val": 30} and summary.feature_shape == (1024,)
    reference = keras.applications.MobileNet(
        include_top=False, pooling="avg", input_shape=(224, 224, 3),
        weights=str(weights_dir / "mobilenet_1_0_224_tf_no_top.h5"))
    for split in ("train", "val"):
        cached = featcache.load_features(summary.cache, split)
        pixels = np.stack([keras.utils.img_to_array(keras.utils.load_img(data / p))
                           for p in cached.paths])
        expected = reference.predict(keras.applications.mobilenet.preprocess_input(pixels),
                                     verbose=0, batch_size=30)
        np.testing.assert_allclose(cached.features, expected, rtol=1e-4, atol=1e-4)
        classes = [p.split("/")[1] for p in cached.paths]
        assert [cached.class_names[i] for i in cached.labels] == classes


def test_vgg16_spatial_features_and_float16_halves_bytes(data_root, weights_dir, tmp_path):
    data = data_root / "tiny_hymenoptera"
    common = dict(backbone="vgg16", pooling="none", weights_dir=str(weights_dir), batch_size=8)
    f32 = extract(opts(data, tmp_path / "f32", **common))
    f16 = extract(opts(data, tmp_path / "f16", dtype="float16", **common))
    train = featcache.load_features(f32.cache, "train")
    assert train.features.shape == (16, 7, 7, 512) and train.features.dtype == np.float32
    half = featcache.load_features(f16.cache, "train")
    assert half.features.dtype == np.float16
    np.testing.assert_allclose(half.features.astype(np.float32), train.features, rtol=2e-3, atol=2e-2)
    ratio = f16.cache_bytes / f32.cache_bytes
    assert 0.45 < ratio < 0.55, ratio


def test_rerun_resumes_nothing_and_other_settings_are_refused(tiny_folder, tmp_path):
    base = dict(backbone="mobilenet", image_size=32, weights="none", shard_size=3)
    first = extract(opts(tiny_folder, tmp_path / "c", **base))
    assert first.shards_written == 5 and first.shards_reused == 0
    again = extract(opts(tiny_folder, tmp_path / "c", **base))
    assert again.shards_written == 0 and again.shards_reused == 5 and again.images_extracted == 0
    with pytest.raises(FingerprintMismatchError, match=r"pooling: cache has \"avg\", this run has \"max\""):
        extract(opts(tiny_folder, tmp_path / "c", pooling="max", **base))
    with pytest.raises(FingerprintMismatchError, match="input_size"):
        extract(opts(tiny_folder, tmp_path / "c", **{**base, "image_size": 48}))
    # the refused runs changed nothing
    assert FeatureCache(str(tmp_path / "c")).manifest["fingerprint_hash"] == first.fingerprint_hash


def test_added_images_extract_only_the_shards_they_change(tiny_folder, tmp_path):
    base = dict(backbone="mobilenet", image_size=32, weights="none", shard_size=4)
    extract(opts(tiny_folder, tmp_path / "c", **base))
    # sorts last in val: only a new val-00001 shard is needed
    shutil.copy(tiny_folder / "val" / "dogs" / "dogs_001.jpg", tiny_folder / "val" / "dogs" / "zz.jpg")
    second = extract(opts(tiny_folder, tmp_path / "c", **base))
    assert (second.shards_written, second.shards_reused, second.images_extracted) == (1, 3, 1)
    # sorts first in val: both val shards change; train shards are kept
    shutil.copy(tiny_folder / "val" / "dogs" / "dogs_001.jpg", tiny_folder / "val" / "cats" / "aa.jpg")
    third = extract(opts(tiny_folder, tmp_path / "c", **base))
    assert (third.shards_written, third.shards_reused, third.images_extracted) == (2, 2, 6)
    assert third.splits == {"train": 8, "val": 6}
    assert len(os.listdir(tmp_path / "c" / "shards")) == 4  # superseded shards are gone


def test_bad_images_are_skipped_and_recorded_or_stop_strict(tiny_folder, tmp_path):
    (tiny_folder / "train" / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (tiny_folder / "train" / "cats" / "empty.png").write_bytes(b"")
    (tiny_folder / "train" / "cats" / "readme.txt").write_text("ignored by extension")
    base = dict(backbone="mobilenet", image_size=32, weights="none")
    summary = extract(opts(tiny_folder, tmp_path / "c", **base))
    assert summary.splits["train"] == 8
    reasons = {s["path"]: s["reason"] for s in summary.skipped}
    assert set(reasons) == {"train/cats/broken.jpg", "train/cats/empty.png"}
    assert "empty file" in reasons["train/cats/empty.png"]
    manifest = FeatureCache(summary.cache).manifest
    assert {s["path"] for sh in manifest["shards"] for s in sh["skipped"]} == set(reasons)
    assert {"path": "train/cats/readme.txt", "reason": "not an image file extension"} in manifest["ignored"]
    with pytest.raises(DataError, match=r"train/cats/broken\.jpg: .*strict"):
        extract(opts(tiny_folder, tmp_path / "strict", strict=True, **base))


def test_load_features_rows_are_stable_and_labelled(tiny_folder, tmp_path):
    summary = extract(opts(tiny_folder, tmp_path / "c", backbone="mobilenet", image_size=32,
                           weights="none", shard_size=3, batch_size=2))
    train = featcache.load_features(summary.cache, "train")
    assert train.paths == sorted(train.paths) and len(train) == 8
    assert [train.class_names[i] for i in train.labels] == [p.split("/")[1] for p in train.paths]
    assert train.hashes[0] == featcache.fileio.sha256_file(tiny_folder / train.paths[0])
    with pytest.raises(CacheError, match="no split 'test'"):
        featcache.load_features(summary.cache, "test")


def test_shards_are_chunked_for_batched_reads(tiny_folder, tmp_path):
    summary = extract(opts(tiny_folder, tmp_path / "c", backbone="vgg16", image_size=32,
                           weights="none", pooling="none"))
    shard = FeatureCache(summary.cache).shards("train")[0]
    with h5py.File(os.path.join(summary.cache, shard["file"])) as f:
        assert f["features"].chunks[1:] == f["features"].shape[1:]
        assert f.attrs["rows"] == 8 and f["paths"][0].decode() == "train/cats/cats_000.jpg"


def test_a_busy_cache_is_refused(tiny_folder, tmp_path):
    os.makedirs(tmp_path / "c")
    with CacheLock(str(tmp_path / "c")):
        with pytest.raises(CacheLockedError, match="another featcache process"):
            extract(opts(tiny_folder, tmp_path / "c", backbone="mobilenet", image_size=32,
                         weights="none"))


def test_plan_is_deterministic_and_names_change_with_content(tiny_folder):
    ds = load_dataset(str(tiny_folder))
    a, b = plan_shards(ds, "f" * 64, 3), plan_shards(ds, "f" * 64, 3)
    assert [t.relpath for t in a] == [t.relpath for t in b]
    assert [t.relpath for t in plan_shards(ds, "e" * 64, 3)] != [t.relpath for t in a]
    assert [len(t.records) for t in a] == [3, 3, 2, 3, 1]


def test_odd_formats_extract_in_one_folder(tmp_path):
    root = tmp_path / "odd" / "x"
    root.mkdir(parents=True)
    Image.new("RGB", (30, 30), (200, 10, 10)).convert("CMYK").save(root / "cmyk.JPG")
    Image.new("RGBA", (30, 30), (0, 0, 0, 0)).save(root / "alpha.png")
    Image.new("L", (30, 30), 90).save(root / "gray.bmp")
    Image.fromarray(np.full((9, 9), 40000, np.uint16)).save(root / "deep.png")
    Image.new("P", (30, 30)).save(root / "anim.gif")
    summary = extract(opts(tmp_path / "odd", tmp_path / "c", backbone="mobilenet", image_size=32,
                           weights="none"))
    assert summary.splits == {"train": 5} and not summary.skipped
