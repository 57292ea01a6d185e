"""The core path, extract -> cache -> head -> predict, on a fresh clone: no ../shared needed.

A generated two-class image folder (dark vs bright noise) and a tiny generated
backbone with random weights (`tests/tiny_backbone.py`) exercise real Keras
models, real HDF5 shards and real head folders in a few seconds.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import featcache
from featcache.prediction import predict_images
from featcache.train import evaluate, train_head

CLASSES = {"dark": (0, 110), "bright": (145, 256)}


def noise_folder(root, per_split={"train": 12, "val": 6}):
    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        for name, (low, high) in CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(low, high, (36, 44, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    import tiny_backbone

    tiny_backbone.register()
    root = tmp_path_factory.mktemp("core")
    data = noise_folder(root / "data")
    summary = featcache.extract(featcache.ExtractOptions(
        data=str(data), out=str(root / "cache"), backbone="tinycnn", weights="none",
        progress=False, shard_size=8))
    return root, summary


def test_extract_writes_a_cache_that_reads_back(tiny_cache):
    root, summary = tiny_cache
    assert summary.splits == {"train": 24, "val": 12} and summary.feature_shape == (16,)
    assert summary.shards_written == 5  # 24 train rows in shards of 8, 12 val rows in 8 + 4
    cache = featcache.FeatureCache(summary.cache)
    assert cache.class_names == ["bright", "dark"] and cache.fingerprint["backbone"] == "tinycnn"
    train = featcache.load_features(summary.cache, "train")
    assert train.features.shape == (24, 16) and np.isfinite(train.features).all()
    assert sorted(set(train.labels.tolist())) == [0, 1]
    again = featcache.extract(featcache.ExtractOptions(
        data=str(root / "data"), out=summary.cache, backbone="tinycnn", weights="none",
        progress=False, shard_size=8))
    assert again.shards_written == 0 and again.shards_reused == 5


@pytest.mark.parametrize("head,params", [("logreg", {}), ("dense256", {"epochs": 15})])
def test_a_head_trains_evaluates_and_predicts_new_images(tiny_cache, tmp_path, head, params):
    root, summary = tiny_cache
    trained = train_head(summary.cache, head, str(tmp_path / head), params=params, progress=False)
    assert trained.val_accuracy >= 0.9, trained.val_accuracy
    for name in ("config.json", "fingerprint.json", "metrics.json", "confusion_matrix.png"):
        assert os.path.isfile(tmp_path / head / name)
    metrics = evaluate(str(tmp_path / head), summary.cache, "val")
    assert metrics["accuracy"] == pytest.approx(trained.val_accuracy)
    rows = predict_images(str(tmp_path / head), [str(root / "data" / "val")], top_k=2)
    assert len(rows) == 12
    truth = ["bright" if "/bright/" in r["path"] else "dark" for r in rows]
    agree = np.mean([r["label"] == t for r, t in zip(rows, truth)])
    assert agree == pytest.approx(trained.val_accuracy)  # the backbone is rebuilt identically
    assert all(len(r["top_k"]) == 2 and 0.0 <= r["score"] <= 1.0 for r in rows)
