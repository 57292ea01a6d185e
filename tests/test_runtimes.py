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

    from featcache.prediction import predict_images
    from featcache.train import train_head

    data = noise_folder(tmp_path / "data", {"train": 6, "val": 3})
    opts = dict(data=str(data), out=str(tmp_path / "cache"), backbone="tinycnn", weights="none",
                progress=False)
    summary = featcache.extract(featcache.ExtractOptions(runtime="openvino", **opts))
    fp = featcache.FeatureCache(summary.cache).fingerprint
    assert fp["runtime"]["name"] == "openvino" and fp["runtime"]["version"]
    with pytest.raises(FingerprintMismatchError, match="runtime"):
        featcache.extract(featcache.ExtractOptions(runtime="keras", **opts))
    # the default, auto, resumes with the cache's own runtime (tests make auto mean keras)
    resumed = featcache.extract(featcache.ExtractOptions(**opts))
    assert resumed.runtime == "openvino" and resumed.images_extracted == 0
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


@pytest.mark.slow  # quantizes twice and converts five times: over a minute
def test_int8_quantizes_on_the_training_images_reports_its_error_and_predicts(tiny, tmp_path):
    pytest.importorskip("nncf")
    from test_core_path import noise_folder

    from featcache.errors import ParameterError
    from featcache.prediction import predict_images
    from featcache.train import train_head

    data = noise_folder(tmp_path / "data", {"train": 8, "val": 3})
    opts = dict(data=str(data), out=str(tmp_path / "cache"), backbone="tinycnn", weights="none",
                runtime="openvino", progress=False)
    with pytest.raises(ParameterError, match="runtime"):
        featcache.ExtractOptions(**{**opts, "runtime": "keras"}, precision="int8").validate()
    summary = featcache.extract(featcache.ExtractOptions(precision="int8", calibration_images=10,
                                                         **opts))
    q = summary.quantization
    assert q["calibration"]["images"] == 10 and len(q["calibration"]["sha256"]) == 64
    assert 0 <= q["fidelity"]["relative_l2"] <= q["fidelity"]["worst"]
    assert q["fidelity"]["held_out"] >= 1
    cache = featcache.FeatureCache(summary.cache)
    assert cache.fingerprint["precision"] == "int8"
    assert cache.fingerprint["runtime"]["calibration"] == q["calibration"]
    assert cache.manifest["quantization"]["fidelity"] == q["fidelity"]
    model_dir = tmp_path / "cache" / q["model"]
    made = (model_dir / "model.xml").stat().st_mtime_ns

    # the same options resume with the same int8 model; float32 there is refused, naming it
    again = featcache.extract(featcache.ExtractOptions(precision="int8", calibration_images=10,
                                                       **opts))
    assert again.shards_reused == summary.shards_written and again.images_extracted == 0
    assert (model_dir / "model.xml").stat().st_mtime_ns == made
    with pytest.raises(FingerprintMismatchError, match="precision"):
        featcache.extract(featcache.ExtractOptions(**opts))
    # another calibration sample is another fingerprint
    with pytest.raises(FingerprintMismatchError, match="runtime"):
        featcache.extract(featcache.ExtractOptions(precision="int8", calibration_images=5, **opts))

    head = tmp_path / "head"
    train_head(summary.cache, "logreg", str(head), progress=False)
    assert (head / "int8_model" / "model.xml").is_file()
    val = featcache.load_features(summary.cache, "val")
    rows = predict_images(str(head), [str(data / "val")], top_k=len(val.class_names))
    from featcache.artifacts import load_head

    expected = load_head(str(head))[0].predict_proba(val.features)
    by_path = {r["path"]: r for r in rows}
    scores = {p: {t["label"]: t["score"] for t in r["top_k"]} for p, r in by_path.items()}
    got = np.array([[scores[str(data / p)][c] for c in val.class_names] for p in val.paths])
    assert np.abs(got - expected).max() < 1e-4  # predict runs the very int8 model of the cache
