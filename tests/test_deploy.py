"""Deploying and sharing: ONNX and TFLite exports checked against predict, and a cache's
features as Parquet or .npz, read back without featcache."""

import json
import subprocess
import sys

import numpy as np
import pytest

from featcache import api
from featcache.cache import load_features
from featcache.errors import ExportError, UsageError

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")


@pytest.fixture(scope="module")
def flower_heads(mobilenet_cache, tmp_path_factory):
    """dense256 and logreg heads on tiny_flowers5's MobileNet features (real weights)."""
    cache = mobilenet_cache("tiny_flowers5")
    root = tmp_path_factory.mktemp("heads")
    with pytest.MonkeyPatch.context() as mp:  # the trust store the tests' own fixture sets
        mp.setenv("FEATCACHE_TRUST_STORE",
                  str(tmp_path_factory.getbasetemp() / "trusted-models.txt"))
        for name in ("dense256", "logreg"):
            api.train_head(cache, name, root / name)
    return cache, root


@pytest.mark.parametrize("head", ["dense256", "logreg"])
def test_onnx_and_tflite_exports_agree_with_predict(flower_heads, weights_dir, tmp_path, head):
    """The issue's check: >= 19 of the 20 validation images, and the stored report says so."""
    _, root = flower_heads
    for fmt in ("onnx", "tflite"):
        info = api.export(root / head, tmp_path / f"{head}.{fmt}", weights_dir=weights_dir)
        report = json.loads((tmp_path / f"{head}.parity.json").read_text())
        assert report["format"] == fmt and report["count"] == 20
        assert report["agreeing"] >= 19 and report["passed"]
        assert report["max_abs_difference"] < 1e-3  # float32 conversions: rounding only
        sidecar = json.loads((tmp_path / f"{head}.json").read_text())
        assert sidecar["format"] == fmt and sidecar["parity"]["agreeing"] == report["agreeing"]
        assert info["model"].endswith(f".{fmt}") and (tmp_path / f"{head}.{fmt}").stat().st_size > 0


def test_an_export_runs_without_featcache(flower_heads, weights_dir, tmp_path, data_root):
    """The ONNX file alone, in a process that never imports featcache, gives predict's classes."""
    _, root = flower_heads
    api.export(root / "dense256", tmp_path / "m.onnx", weights_dir=weights_dir)
    image = sorted((data_root / "tiny_flowers5" / "val" / "rose").glob("*.jpg"))[0]
    expected = api.predict(root / "dense256", [image], weights_dir=weights_dir)[0]["label"]
    code = (
        "import json, sys, numpy as np, onnxruntime\n"
        "from PIL import Image\n"
        f"meta = json.load(open({str(tmp_path / 'm.json')!r}))\n"
        "size = tuple(meta['input']['resize']['size'])\n"
        f"x = np.asarray(Image.open({str(image)!r}).convert('RGB').resize(size, Image.BILINEAR),"
        " np.float32)[None]\n"
        f"s = onnxruntime.InferenceSession({str(tmp_path / 'm.onnx')!r})\n"
        "p = s.run(None, {s.get_inputs()[0].name: x})[0][0]\n"
        "assert 'featcache' not in sys.modules\n"
        "print(meta['class_names'][int(p.argmax())])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == expected


def test_quantized_tflite_reports_its_agreement_and_a_failed_check_removes_the_file(
        flower_heads, weights_dir, tmp_path):
    _, root = flower_heads
    info = api.export(root / "dense256", tmp_path / "q.tflite", quantize="dynamic-int8",
                      weights_dir=weights_dir, force=True)
    report = json.loads((tmp_path / "q.parity.json").read_text())
    assert report["quantize"] == "dynamic-int8" and 0 <= report["agreement"] <= 1
    assert info["parity"]["agreement"] == report["agreement"]
    # demand more than any export can give: the file goes, the report stays
    with pytest.raises(ExportError, match=r"agrees with featcache predict on \d+ of 20 images"):
        api.export(root / "dense256", tmp_path / "strict.keras", min_agreement=1.01,
                   weights_dir=weights_dir)
    assert not (tmp_path / "strict.keras").exists()
    assert not json.loads((tmp_path / "strict.parity.json").read_text())["passed"]


def test_export_flags_are_checked_before_any_work(flower_heads, tmp_path):
    _, root = flower_heads
    with pytest.raises(UsageError, match="name the file .keras, .onnx or .tflite"):
        api.export(root / "dense256", tmp_path / "m.bin")
    with pytest.raises(UsageError, match="a onnx export is a .onnx file"):
        api.export(root / "dense256", tmp_path / "m.keras", format="onnx")
    with pytest.raises(UsageError, match="applies to .*tflite"):
        api.export(root / "dense256", tmp_path / "m.onnx", quantize="float16")


def test_features_as_parquet_read_back_with_pyarrow_alone(flower_heads, tmp_path):
    pytest.importorskip("pyarrow")
    cache, _ = flower_heads
    result = api.export_features(cache, tmp_path / "f.parquet")
    train, val = load_features(cache, "train"), load_features(cache, "val")
    assert result.rows == len(train) + len(val) and result.splits == {"train": len(train),
                                                                      "val": len(val)}
    code = (
        "import json, sys, numpy as np, pyarrow.parquet as pq\n"
        f"t = pq.read_table({str(tmp_path / 'f.parquet')!r})\n"
        "meta = json.loads(t.schema.metadata[b'featcache'])\n"
        "x = np.stack(t.column('features').to_numpy(zero_copy_only=False))\n"
        "assert 'featcache' not in sys.modules\n"
        f"np.save({str(tmp_path / 'x.npy')!r}, x)\n"
        "print(json.dumps({'labels': t.column('label').to_pylist(), 'split': "
        "t.column('split').to_pylist(), 'path': t.column('path').to_pylist(), 'meta': meta}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    back = json.loads(out.stdout)
    names = train.class_names
    assert back["labels"] == [names[i] for i in train.labels] + [names[i] for i in val.labels]
    assert back["path"] == list(train.paths) + list(val.paths)
    assert back["split"] == ["train"] * len(train) + ["val"] * len(val)
    assert back["meta"]["feature_shape"] == list(train.features.shape[1:])
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"),
                                  np.concatenate([train.features, val.features]).astype(np.float32))


def test_features_as_npz_and_bad_requests(flower_heads, tmp_path):
    cache, _ = flower_heads
    api.export_features(cache, tmp_path / "v.npz", split="val")
    z = np.load(tmp_path / "v.npz")
    val = load_features(cache, "val")
    np.testing.assert_array_equal(z["features"], val.features.astype(np.float32))
    assert list(z["path"]) == list(val.paths) and set(z["split"]) == {"val"}
    with pytest.raises(UsageError, match="split test"):
        api.export_features(cache, tmp_path / "t.npz", split="test")
    with pytest.raises(UsageError, match="use parquet or npz"):
        api.export_features(cache, tmp_path / "t.csv")
