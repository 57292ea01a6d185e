"""featcache compare / train-head --model auto: selection on the training split only, on real
MobileNet features of real images; calibration of Keras and scikit-learn heads."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest

from conftest import run_cli

import featcache
from featcache.artifacts import load_head
from featcache.extract import ExtractOptions, extract
from featcache.heads import create_head
from featcache.heads.calibration import apply_temperature, fit_temperature, grouped_folds, image_groups
from featcache.metrics import expected_calibration_error
from featcache.selection import compare_heads
from featcache.train import split_hashes, train_head

FAST = {"epochs": 6}
HEADS = ["ridge", "logreg", "dense256"]


def _comparable(rows):
    """Leaderboard rows without timings and folders."""
    drop = {"fit_seconds", "final_fit_seconds", "predict_ms_per_1000", "folder", "model_bytes"}
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_compare_chooses_on_train_and_saves_a_normal_winner(mobilenet_cache, tmp_path):
    cache = mobilenet_cache("tiny_flowers5")
    out = tmp_path / "compare"
    result = compare_heads(cache, heads=HEADS, out=str(out), params=FAST, progress=False)
    assert {r["head"] for r in result.rows} == set(HEADS)
    ranked = [r for r in result.rows if r["status"] == "ok"]
    assert [r["rank"] for r in ranked] == [1, 2, 3] and ranked[0]["head"] == result.winner
    keys = [(-r["cv_accuracy"], r["cv_log_loss"]) for r in ranked]
    assert keys == sorted(keys)  # ranked by out-of-fold accuracy on train, then log loss
    for r in ranked:
        assert 0 <= r["val_accuracy"] <= 1 and r["model_bytes"] > 0 and r["predict_ms_per_1000"] > 0
        assert r["selected"]  # ridge: alpha, logreg: C, dense256: epochs
    assert set(ranked[1]["selected"]) | set(ranked[0]["selected"]) | set(ranked[2]["selected"]) == \
        {"alpha", "C", "epochs"}
    for name in ("leaderboard.json", "leaderboard.csv", "leaderboard.png"):
        assert (out / name).is_file()
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["winner"] == result.winner and len(board["leaderboard"]) == 3
    with open(out / "leaderboard.csv") as fh:
        assert [row["head"] for row in csv.DictReader(fh)] == [r["head"] for r in result.rows]

    winner = out / "winner"
    assert {"confusion_matrix.png", "reliability.png", "metrics.json"} <= set(os.listdir(winner))
    head, config, _ = load_head(str(winner))
    assert config["head"] == result.winner and config["training"]["val_split"] == "val"
    assert config["training"]["selection"]["by"] == "out-of-fold accuracy on train"
    val = featcache.load_features(cache, "val")
    accuracy = float(np.mean(head.predict_proba(val.features).argmax(axis=1) == val.labels))
    assert accuracy == pytest.approx(ranked[0]["val_accuracy"], abs=1e-4)
    for r in ranked:  # every head's folder loads too
        assert load_head(r["folder"])[1]["head"] == r["head"]


def test_the_test_split_is_never_used_for_a_choice(data_root, weights_dir, mobilenet_cache, tmp_path):
    """A test split that is the val images under shuffled labels changes nothing."""
    source = data_root / "tiny_flowers5"
    data = tmp_path / "data"
    shutil.copytree(source / "train", data / "train")
    shutil.copytree(source / "val", data / "val")
    images = sorted(p for p in (source / "val").rglob("*") if p.is_file())
    classes = [p.parent.name for p in images]
    shuffled = np.random.default_rng(3).permutation(classes)
    assert np.mean(shuffled != np.array(classes)) > 0.5
    for path, label in zip(images, shuffled):
        (data / "test" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / "test" / label / path.name)
    with_test = tmp_path / "with-test"
    extract(ExtractOptions(data=str(data), out=str(with_test), backbone="mobilenet",
                           weights_dir=str(weights_dir), progress=False))
    assert "test" in featcache.FeatureCache(str(with_test)).splits
    plain = mobilenet_cache("tiny_flowers5")
    a = compare_heads(plain, heads=HEADS, out=str(tmp_path / "a"), params=FAST, progress=False)
    b = compare_heads(str(with_test), heads=HEADS, out=str(tmp_path / "b"), params=FAST,
                      progress=False)
    assert a.winner == b.winner
    assert _comparable(a.rows) == _comparable(b.rows)


def test_folds_keep_every_view_of_an_image_together(mobilenet_cache):
    cache = mobilenet_cache("tiny_flowers5", augment_views=2)
    fc = featcache.FeatureCache(cache)
    hashes = split_hashes(fc, "train")
    train = featcache.load_features(cache, "train")
    assert hashes == train.hashes and len(set(hashes)) * 3 == len(hashes)
    groups = image_groups(hashes)
    folds = grouped_folds(train.labels, groups, 3)
    held = np.concatenate([b for _, b in folds])
    assert sorted(held.tolist()) == list(range(len(hashes)))
    for rows, held_out in folds:
        assert not set(groups[rows]) & set(groups[held_out])


def test_temperature_scaling_softens_overconfident_scores():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    logits = rng.normal(size=(600, 3))
    logits[np.arange(600), labels] += 1.0
    overconfident = apply_temperature(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 0.25)
    t = fit_temperature(overconfident, labels)
    assert 3.0 < t < 5.0  # undoes the 0.25 sharpening
    assert expected_calibration_error(labels, apply_temperature(overconfident, t)) < \
        expected_calibration_error(labels, overconfident) / 3


@pytest.mark.parametrize("name", ["dense256", "logreg"])
def test_calibrate_reports_ece_and_the_saved_head_gives_calibrated_scores(name, mobilenet_cache,
                                                                          tmp_path):
    cache = mobilenet_cache("tiny_imagenette")
    summary = train_head(cache, name, str(tmp_path / name), FAST if name == "dense256" else {},
                         progress=False, calibrate=True)
    calibration = summary.metrics["calibration"]
    assert calibration["temperature"] > 0 and calibration["split"] == "val"
    assert {"ece_before", "ece_after", "log_loss_before", "log_loss_after"} <= set(calibration)
    assert calibration["ece_after"] == pytest.approx(summary.metrics["ece"])
    assert (tmp_path / name / "reliability.png").is_file()
    head, config, _ = load_head(str(tmp_path / name))
    assert config["training"]["calibration"]["method"]
    val = featcache.load_features(cache, "val")
    scores = head.predict_proba(val.features)
    assert expected_calibration_error(val.labels, scores) == pytest.approx(calibration["ece_after"])
    exported = head.to_keras()(val.features)  # export carries the calibration
    np.testing.assert_allclose(np.asarray(exported), scores, atol=1e-4)


def test_calibrated_binary_linear_head_exports_the_same_scores(mobilenet_cache):
    train = featcache.load_features(mobilenet_cache("tiny_hymenoptera"), "train")
    head = create_head("linear-svm").fit(train.features, train.labels)
    folds = grouped_folds(train.labels, image_groups(train.hashes), 2)
    head.calibrate(train.features, train.labels, folds)
    assert head.calibrated and head.temperature > 0
    scores = head.predict_proba(train.features)
    np.testing.assert_allclose(np.asarray(head.to_keras()(train.features)), scores, atol=1e-4)


@pytest.mark.slow
def test_cli_compare_and_train_head_auto(mobilenet_cache, tmp_path, weights_dir):
    cache = mobilenet_cache("tiny_flowers5")
    done = run_cli("compare", "--cache", cache, "--heads", "ridge,logreg", "--out",
                   str(tmp_path / "c"), "--json")
    assert done.returncode == 0, done.stderr
    board = json.loads(done.stdout)
    assert board["winner"] in ("ridge", "logreg") and len(board["leaderboard"]) == 2
    text = run_cli("compare", "--cache", cache, "--heads", "ridge,logreg", "--out",
                   str(tmp_path / "t"))
    assert text.returncode == 0 and "winner:" in text.stdout and "cv acc" in text.stdout
    auto = run_cli("train-head", "--cache", cache, "--model", "auto", "--out", str(tmp_path / "auto"),
                   "--epochs", "3", "--json")
    assert auto.returncode == 0, auto.stderr
    summary = json.loads(auto.stdout)
    assert (tmp_path / "auto" / "leaderboard.json").is_file()
    assert summary["head"] == json.loads((tmp_path / "auto" / "leaderboard.json").read_text())["winner"]
    images = str(featcache.FeatureCache(cache).manifest["source"]["root"])
    predicted = run_cli("predict", "--model", str(tmp_path / "auto"), images, "--json",
                        "--weights-dir", str(weights_dir))
    assert predicted.returncode == 0, predicted.stderr
    assert all("label" in row for row in json.loads(predicted.stdout))
    bad = run_cli("compare", "--cache", cache, "--heads", "logreg,nosuch", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "nosuch" in bad.stderr and "--model" not in bad.stderr


def test_compare_reuses_its_own_folder_refuses_others_and_keeps_to_a_budget(mobilenet_cache, tmp_path):
    from featcache.errors import UsageError

    cache = mobilenet_cache("tiny_flowers5")
    out = tmp_path / "c"
    compare_heads(cache, heads=["ridge", "logreg"], out=str(out), progress=False)
    again = compare_heads(cache, heads=["ridge"], out=str(out), progress=False)
    assert again.winner == "ridge" and os.listdir(out / "heads") == ["ridge"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="holds no featcache comparison"):
        compare_heads(cache, heads=["ridge"], out=str(other), progress=False)
    with pytest.raises(UsageError, match="No head finished"):
        compare_heads(cache, heads=["ridge"], out=str(tmp_path / "b"), budget=1e-9, progress=False)
    with pytest.raises(UsageError, match="nosuch"):
        compare_heads(cache, heads=["nosuch"], out=str(tmp_path / "n"), progress=False)


def test_compare_calibrates_every_head_when_asked(mobilenet_cache, tmp_path):
    cache = mobilenet_cache("tiny_flowers5")
    result = compare_heads(cache, heads=["ridge", "dense256"], out=str(tmp_path / "c"),
                           params={"epochs": 4}, calibrate=True, progress=False)
    for row in result.rows:
        metrics = json.loads((tmp_path / "c" / "heads" / row["head"] / "metrics.json").read_text())
        assert metrics["calibration"]["ece_after"] == pytest.approx(row["val_ece"], abs=1e-4)
        assert row["val_ece_before_calibration"] == pytest.approx(metrics["calibration"]["ece_before"],
                                                                  abs=1e-4)
    assert (tmp_path / "c" / "winner" / "reliability.png").is_file()


def test_knn_grid_keeps_to_neighbour_counts_the_folds_can_fit(tiny_folder, tmp_path):
    """Eight training images in three folds: kNN's grid (up to 15 neighbours) shrinks to what
    a fold's training rows allow instead of failing, and Keras heads count their epochs."""
    cache = extract(ExtractOptions(data=str(tiny_folder), out=str(tmp_path / "c"), backbone="mobilenet",
                                   image_size=32, weights="none", progress=False)).cache
    result = compare_heads(cache, heads=["knn", "dense256"], out=str(tmp_path / "cmp"),
                           params=FAST)
    rows = {r["head"]: r for r in result.rows}
    assert rows["knn"]["status"] == "ok" and rows["knn"]["selected"]["n_neighbors"] <= 5
    assert rows["knn"]["epochs_run"] == 0
    assert 4 <= rows["dense256"]["epochs_run"] <= 4 * FAST["epochs"]  # 3 folds + the final fit
