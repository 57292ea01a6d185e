"""Heads on real cached features: every head trains, saves, reloads and scores alike."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import featcache
from featcache.artifacts import load_head
from featcache.errors import ParameterError, UsageError
from featcache.extract import ExtractOptions, extract
from featcache.heads import HEADS, head_params, list_heads
from featcache.heads.feed import epoch_windows, parse_size
from featcache.train import train_head


def fast(name: str, **params) -> dict:
    """Few epochs for the heads that train in epochs."""
    return {"epochs": 4, **params} if "epochs" in head_params(name) else dict(params)


@pytest.mark.parametrize("name", list_heads())
def test_every_head_trains_saves_and_reloads(name, mobilenet_cache, tmp_path):
    dataset = "tiny_hymenoptera" if name == "sigmoid" else "tiny_flowers5"
    cache = mobilenet_cache(dataset)
    summary = train_head(cache, name, str(tmp_path / name), fast(name), progress=False)
    assert 0.0 <= summary.val_accuracy <= 1.0 and summary.seconds > 0
    files = set(os.listdir(tmp_path / name))
    assert {"config.json", "fingerprint.json", "metrics.json", "history.json",
            "confusion_matrix.png"} <= files
    assert ("model.keras" if HEADS[name].kind == "keras" else "model.joblib") in files
    if HEADS[name].kind == "keras":
        assert "history.png" in files and len(summary.metrics) and summary.notes["epochs_run"] <= 4
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    assert metrics["split"] == "val" and np.sum(metrics["confusion_matrix"]) == metrics["rows"]
    assert set(metrics["per_class"]) == set(metrics["class_names"])

    head, config, fingerprint = load_head(str(tmp_path / name))
    val = featcache.load_features(cache, "val")
    scores = head.predict_proba(val.features)
    assert scores.shape == (len(val), len(val.class_names))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float(np.mean(scores.argmax(axis=1) == val.labels))
    assert accuracy == pytest.approx(summary.val_accuracy)
    assert fingerprint["fingerprint_hash"] == featcache.FeatureCache(cache).fingerprint_hash


def test_defaults_learn_real_features(mobilenet_cache, tmp_path):
    """Not a benchmark: 10 ImageNet classes, 6 training images each; chance is 0.1."""
    cache = mobilenet_cache("tiny_imagenette")
    for name in ("logreg", "dense256"):
        summary = train_head(cache, name, str(tmp_path / name), progress=False)
        assert summary.val_accuracy >= 0.8 and summary.metrics["top5_accuracy"] >= 0.9


def test_same_seed_same_keras_head_and_other_seed_differs(mobilenet_cache, tmp_path):
    cache = mobilenet_cache("tiny_flowers5")
    runs = [train_head(cache, "dense256", str(tmp_path / f"r{i}"), {"epochs": 3, "seed": seed},
                       progress=False) for i, seed in enumerate((7, 7, 8))]
    weights = [load_head(r.out)[0].model_.get_weights() for r in runs]
    assert all(np.array_equal(a, b) for a, b in zip(weights[0], weights[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(weights[0], weights[2]))


@pytest.mark.parametrize("name", ["dense256", "sgd"])
def test_streamed_under_a_small_budget_equals_in_memory(name, mobilenet_cache, tmp_path):
    cache = mobilenet_cache("tiny_flowers5")  # 70 rows of 4 KiB: 280 KiB as float32
    options = {"epochs": 3, "seed": 3, "shuffle_window": 8, "batch_size": 8}
    memory = train_head(cache, name, str(tmp_path / "memory"), options, progress=False)
    streamed = train_head(cache, name, str(tmp_path / "streamed"), options, max_memory="270KB",
                          progress=False)
    assert memory.in_memory and not streamed.in_memory
    val = featcache.load_features(cache, "val")
    a = load_head(memory.out)[0].predict_proba(val.features)
    b = load_head(streamed.out)[0].predict_proba(val.features)
    np.testing.assert_array_equal(a, b)


def test_in_memory_only_heads_say_so_under_a_small_budget(mobilenet_cache, tmp_path):
    with pytest.raises(UsageError, match=r"model=logreg needs the features in memory .*model=sgd"):
        train_head(mobilenet_cache("tiny_flowers5"), "logreg", str(tmp_path / "h"),
                   max_memory="100KB", progress=False)
    with pytest.raises(UsageError, match="cannot hold 4 shuffle windows"):
        train_head(mobilenet_cache("tiny_flowers5"), "dense256", str(tmp_path / "h"),
                   {"shuffle_window": 64}, max_memory="100KB", progress=False)


def test_schedule_is_a_permutation_mixing_blocks():
    windows = epoch_windows(1000, block_rows=10, window_rows=200, seed=1, epoch=0)
    order = np.concatenate([w.order for w in windows])
    assert sorted(order.tolist()) == list(range(1000)) and len(windows) == 5
    assert not np.array_equal(order, np.arange(1000))
    again = np.concatenate([w.order for w in epoch_windows(1000, 10, 200, 1, 0)])
    other = np.concatenate([w.order for w in epoch_windows(1000, 10, 200, 1, 1)])
    assert np.array_equal(order, again) and not np.array_equal(order, other)


def test_sizes_parse():
    assert parse_size("512MB") == 512 << 20 and parse_size("1.5GiB") == int(1.5 * (1 << 30))
    with pytest.raises(UsageError, match="--max-memory lots"):
        parse_size("lots")


def test_spatial_features_flatten_or_pool_and_the_artifact_says_which(tiny_folder, tmp_path):
    cache = extract(ExtractOptions(data=str(tiny_folder), out=str(tmp_path / "c"), backbone="vgg16",
                                   image_size=64, weights="none", pooling="none", progress=False))
    assert cache.feature_shape == (2, 2, 512)
    for name, spatial in (("dense256", "flatten"), ("dense512", "avg"), ("logreg", "avg"),
                          ("linear", "max")):
        opts = {"epochs": 2} if HEADS[name].kind == "keras" else {}
        opts["spatial"] = "max" if name == "linear" else None
        summary = train_head(cache.cache, name, str(tmp_path / name), opts, progress=False)
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["spatial"] == spatial and summary.val_accuracy is not None


def test_search_and_class_weights(mobilenet_cache, tmp_path):
    cache = mobilenet_cache("tiny_flowers5")
    summary = train_head(cache, "logreg", str(tmp_path / "s"),
                         {"search": True, "cv": 3, "class_weight": "balanced"}, progress=False)
    assert summary.notes["search"]["best"] in (0.01, 0.1, 1.0, 10.0)
    assert len(summary.notes["search"]["mean_cv_accuracy"]) == 4
    train_head(cache, "dense256", str(tmp_path / "w"), {"epochs": 2, "class_weight": "balanced"},
               progress=False)


def test_head_option_errors_are_clear(mobilenet_cache, tmp_path):
    with pytest.raises(ParameterError, match="head 'sigmoid' has one sigmoid unit, for two classes; "
                                             "this data has 5"):
        train_head(mobilenet_cache("tiny_flowers5"), "sigmoid", str(tmp_path / "h"), progress=False)
    with pytest.raises(UsageError, match=r"Unknown head 'dense265' \(model\)\. Did you mean dense256"):
        train_head(mobilenet_cache("tiny_flowers5"), "dense265", str(tmp_path / "h"), progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="holds no featcache head"):
        train_head(mobilenet_cache("tiny_flowers5"), "logreg", str(tmp_path / "busy"), progress=False)
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "precious"


def test_pickled_heads_load_only_when_featcache_wrote_them(mobilenet_cache, tmp_path, monkeypatch):
    cache = mobilenet_cache("tiny_flowers5")
    out = train_head(cache, "logreg", str(tmp_path / "h"), progress=False).out
    load_head(out)
    monkeypatch.setenv("FEATCACHE_TRUST_STORE", str(tmp_path / "someone-else.txt"))
    with pytest.raises(UsageError, match="pickle that featcache did not write for this user"):
        load_head(out)
    assert load_head(out, trust=True)[0].model_ is not None
    with open(os.path.join(out, "model.joblib"), "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(UsageError, match="changed since featcache wrote it"):
        load_head(out)
