"""Every file in examples/ runs on the tiny shared sets: the seeds' recipes done with featcache.

VGG16's fc2 needs its full ImageNet weights (with the top), which are not
available offline here: those two examples run with random weights
(weights="none") and check the plumbing, not the accuracy.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
from conftest import REPO

EXAMPLES = REPO / "examples"


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def offline_weights(weights_dir, monkeypatch):
    monkeypatch.setenv("FEATCACHE_WEIGHTS_DIR", str(weights_dir))


def test_every_example_is_tested():
    tested = {"vgg16_flatten_dense256", "mobilenet_gap_dense512_finetune", "vgg16_fc2_softmax",
              "vgg16_fc2_sigmoid_vs_scratch"}
    assert {p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")} == tested


def test_seed000_vgg16_flatten_dense256(data_root, tmp_path, offline_weights):
    head = _example("vgg16_flatten_dense256").main(
        ["--data", str(data_root / "tiny_flowers5"), "--out", str(tmp_path), "--epochs", "3",
         "--augment-views", "1"])
    assert head.feature_shape_ == (4, 4, 512) and head.spatial_ == "flatten"
    assert os.path.isfile(tmp_path / "head" / "history.png") and head.val_accuracy_ > 0.2


def test_seed002_vgg16_fc2_softmax_random_weights(data_root, tmp_path):
    head = _example("vgg16_fc2_softmax").main(
        ["--data", str(data_root / "tiny_flowers5"), "--out", str(tmp_path), "--weights", "none",
         "--epochs", "2"])
    assert head.feature_shape_ == (4096,) and len(head.class_names) == 5


@pytest.mark.slow
def test_seed001_mobilenet_gap_dense512_then_finetune(data_root, tmp_path, weights_dir):
    # MobileNet at 128 px with the 224 px weights file (the only MobileNet weights offline)
    head, tuned = _example("mobilenet_gap_dense512_finetune").main(
        ["--data", str(data_root / "tiny_flowers5"), "--out", str(tmp_path), "--image-size", "128",
         "--weights", str(weights_dir / "mobilenet_1_0_224_tf_no_top.h5"), "--epochs", "5",
         "--finetune-epochs", "1"])
    assert head.spatial_ == "avg" and head.feature_shape_ == (4, 4, 1024)
    assert os.path.isfile(tmp_path / "finetuned" / "history.png")
    assert tuned.out == str(tmp_path / "finetuned")


@pytest.mark.slow
def test_seed003_fc2_sigmoid_against_a_cnn_from_scratch(data_root, tmp_path, capsys):
    rows = _example("vgg16_fc2_sigmoid_vs_scratch").main(
        ["--data", str(data_root / "tiny_hymenoptera"), "--out", str(tmp_path), "--weights", "none",
         "--epochs", "2", "--scratch-epochs", "1", "--scratch-size", "64"])
    assert len(rows) == 2 and all(per_epoch > 0 for _, per_epoch, _ in rows.values())
    assert "small CNN from scratch" in capsys.readouterr().out
