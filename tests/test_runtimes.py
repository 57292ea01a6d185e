"""The OpenVINO runtime: the same Keras feature model converted, same features, its own fingerprint."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

import featcache
from featcache.backbones import list_backbones
from featcache.errors import FingerprintMismatchError
from featcache.feature_model import build_feature_extractor

pytest.importorskip("openvino")

DEFAULT_RUN = {"mobilenet", "resnet50"}  # CI's slow run converts every backbone


def relative_l2(a, b) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


@pytest.fixture(scope="module")
def tiny():
    import tiny_backbone

    return tiny_backbone.register()


def test_openvino_runs_the_tiny_backbone_like_keras(tiny):
    keras_ex = build_feature_extractor("tinycnn", 32, weights="none", seed=3)
    ov_ex = build_feature_extractor("tinycnn", 32, weights="none", seed=3, runtime="openvino")
    x = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3)).astype(np.float32)
    assert relative_l2(ov_ex.features(x, 4), keras_ex.features(x, 4)) < 1e-5
    assert ov_ex.describe()["runtime"]["name"] == "openvino" and "runtime" not in keras_ex.describe()


@pytest.mark.parametrize("name", [n if n in DEFAULT_RUN else pytest.param(n, marks=pytest.mark.slow)
                                  for n in list_backbones()])
def test_every_registry_backbone_converts_and_matches_keras(name):
    from featcache.backbones import get_backbone

    size = max(get_backbone(name).min_size, 96)  # small inputs keep the slow run short
    keras_ex = build_feature_extractor(name, size, weights="none")
    ov_ex = build_feature_extractor(name, size, weights="none", runtime="openvino")
    x = np.random.default_rng(1).integers(0, 256, (2, size, size, 3)).astype(np.float32)
    assert relative_l2(ov_ex.features(x, 2), keras_ex.features(x, 2)) < 1e-4


def test_a_cache_made_with_openvino_refuses_a_keras_resume_and_its_head_predicts(
        tiny, tmp_path):
    from test_core_path import noise_folder

    from featcache.predict import predict_images
    from featcache.train import train_head

    data = noise_folder(tmp_path / "data", {"train": 6, "val": 3})
    opts = dict(data=str(data), out=str(tmp_path / "cache"), backbone="tinycnn", weights="none",
                progress=False)
    summary = featcache.extract(featcache.ExtractOptions(runtime="openvino", **opts))
    fp = featcache.FeatureCache(summary.cache).fingerprint
    assert fp["runtime"]["name"] == "openvino" and fp["runtime"]["version"]
    with pytest.raises(FingerprintMismatchError, match="runtime"):
        featcache.extract(featcache.ExtractOptions(runtime="keras", **opts))
    head = tmp_path / "head"
    train_head(summary.cache, "logreg", str(head), progress=False)
    with_ov = predict_images(str(head), [str(data / "val")])
    with_keras = predict_images(str(head), [str(data / "val")], runtime="keras")
    assert [r["label"] for r in with_ov] == [r["label"] for r in with_keras]


def test_openvino_missing_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['openvino'] = None; from featcache.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "extract", "--data", str(tmp_path), "--out",
                           str(tmp_path / "c"), "--runtime", "openvino", "--weights", "none"],
                          capture_output=True, text=True, cwd=str(REPO), timeout=300)
    assert proc.returncode == 2
    assert 'pip install "featcache[openvino]"' in proc.stderr.strip().splitlines()[-1], proc.stderr
