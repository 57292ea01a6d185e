"""Reduced-precision extraction: bfloat16/float16 features, their fingerprints, and the hardware report."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

import featcache
from featcache.errors import FeatcacheWarning, FingerprintMismatchError
from featcache.extract import ExtractOptions, extract
from featcache.hardware import cpu_info, precision_warning
from featcache.prediction import predict_images
from featcache.train import train_head

SIZE = 96


def options(data_root, weights_dir, out, **kw) -> ExtractOptions:
    return ExtractOptions(data=str(data_root / "tiny_hymenoptera"), out=str(out), backbone="mobilenet",
                          image_size=SIZE, weights=str(weights_dir / "mobilenet_1_0_224_tf_no_top.h5"),
                          progress=False, **kw)


@pytest.fixture(scope="module")
def caches(data_root, weights_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    built = {}
    for precision in ("float32", "bfloat16"):
        built[precision] = extract(options(data_root, weights_dir, root / precision,
                                           precision=precision))
    return built


def relative_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_bfloat16_features_are_close_to_float32_and_fingerprinted_apart(caches):
    f32 = featcache.load_features(caches["float32"].cache, "train")
    bf16 = featcache.load_features(caches["bfloat16"].cache, "train")
    assert f32.paths == bf16.paths and bf16.features.dtype == np.float32
    error = relative_l2(bf16.features, f32.features)
    assert 0 < error < 0.1, error  # MobileNet measured a few percent (benchmarks/RESULTS.md)
    assert caches["float32"].fingerprint_hash != caches["bfloat16"].fingerprint_hash
    fp32 = featcache.FeatureCache(caches["float32"].cache).fingerprint
    assert "precision" not in fp32  # float32 caches keep the fingerprint they always had
    assert featcache.FeatureCache(caches["bfloat16"].cache).fingerprint["precision"] == "bfloat16"


def test_resuming_with_another_precision_is_refused_naming_it(caches, data_root, weights_dir):
    with pytest.raises(FingerprintMismatchError, match="precision: cache has \"<absent>\", this run has \"bfloat16\""):
        extract(options(data_root, weights_dir, caches["float32"].cache, precision="bfloat16"))
    proc = run_cli("extract", "--data", str(data_root / "tiny_hymenoptera"), "--out",
                   caches["bfloat16"].cache, "--image-size", str(SIZE), "--weights",
                   str(weights_dir / "mobilenet_1_0_224_tf_no_top.h5"), "--precision", "float32")
    assert proc.returncode == 2 and "precision" in proc.stderr and "--out" in proc.stderr


def test_a_bfloat16_head_predicts_in_bfloat16_and_warns_when_asked_for_float32(
        caches, data_root, weights_dir, tmp_path):
    head = tmp_path / "head"
    train_head(caches["bfloat16"].cache, "logreg", str(head), progress=False)
    images = [str(data_root / "tiny_hymenoptera" / "val")]
    same = predict_images(str(head), images)
    with pytest.warns(FeatcacheWarning, match="trained on bfloat16 features; computing float32"):
        other = predict_images(str(head), images, precision="float32")
    assert len(same) == len(other) == 8
    agree = np.mean([a["label"] == b["label"] for a, b in zip(same, other)])
    assert agree >= 0.75


def test_the_hardware_report_reads_cpu_flags(tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 fma\n")
    plain = cpu_info(str(fake))
    assert plain.model == "Test CPU 9000" and not plain.native_bfloat16
    assert "emulated" in precision_warning("bfloat16", plain)
    assert precision_warning("float32", plain) is None
    fake.write_text("model name\t: Test CPU 9001\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16\n")
    assert cpu_info(str(fake)).native_bfloat16
    assert precision_warning("bfloat16", cpu_info(str(fake))) is None
    proc = run_cli("hardware", "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"native_bfloat16"' in proc.stdout


def test_auto_runtime_is_openvino_on_x86_cpus_where_installed(monkeypatch):
    from featcache.hardware import CpuInfo
    from featcache.runtimes import resolve_runtime

    monkeypatch.delenv("FEATCACHE_RUNTIME", raising=False)
    zen3 = CpuInfo("AMD EPYC 7B13", 2, frozenset({"avx2", "fma"}))
    xeon = CpuInfo("Intel Xeon", 2, frozenset({"avx2", "fma", "avx512f", "amx_bf16"}))
    arm = CpuInfo("Neoverse-N1", 2, frozenset({"asimd"}))
    both = ["keras", "openvino"]

    def auto(cpu, installed=both, on_gpu=False, precision="float32"):
        return resolve_runtime("auto", precision, cpu=cpu, installed=installed, on_gpu=on_gpu)

    assert auto(zen3) == "openvino" and auto(xeon) == "openvino"
    assert auto(zen3, installed=["keras"]) == "keras"
    assert auto(zen3, on_gpu=True) == "keras"
    assert auto(arm) == "keras"  # not measured there
    assert auto(xeon, installed=["keras"], precision="int8") == "openvino"  # int8's only runtime
    assert resolve_runtime("keras", "float32", zen3, False, both) == "keras"
    monkeypatch.setenv("FEATCACHE_RUNTIME", "keras")
    assert auto(zen3) == "keras"
