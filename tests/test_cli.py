"""The command line: JSON and human output, one-line errors, the demo, offline weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from featcache.cli import main


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_extract_json_then_info(tiny_folder, tmp_path, capsys):
    args = ["extract", "--backbone", "mobilenet", "--image-size", "32", "--weights", "none",
            "--data", str(tiny_folder), "--out", str(tmp_path / "c")]
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["images"] == 12 and summary["splits"] == {"train": 8, "val": 4}
    assert summary["feature_shape"] == [1024] and summary["skipped"] == []
    assert summary["images_per_second"] > 0 and summary["bytes_written"] > 0
    assert "randomly initialised" in err

    code, out, _ = cli(capsys, *args)
    assert code == 0 and "0 extracted" in out and "2 shard(s) already done" in out

    code, out, _ = cli(capsys, "info", str(tmp_path / "c"))
    assert code == 0
    assert "mobilenet (keras.applications.MobileNet)" in out and "train 8 · val 4" in out
    assert "random (seed 0): features are meaningless" in out
    code, out, _ = cli(capsys, "info", str(tmp_path / "c"), "--json")
    assert json.loads(out)["class_names"] == ["cats", "dogs"]


@pytest.mark.parametrize("args,message", [
    (["extract", "--backbone", "vgg61", "--data", ".", "--out", "x"], "Unknown backbone 'vgg61'"),
    (["extract", "--data", "/no/such/folder", "--out", "x"], "--data /no/such/folder: no such folder"),
    (["extract", "--data", ".", "--out", "x", "--image-size", "8"], "below mobilenet's minimum"),
    (["extract", "--data", ".", "--out", "x", "--weights", "/no/file.h5"], "--weights /no/file.h5: no such file"),
    (["info", "/no/cache"], "not a featcache cache"),
])
def test_user_errors_are_one_line_and_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    shutil.copy(REPO / "featcache/sample_data/cifar10/train/cat/0000.jpg", tmp_path / "a" / "x.jpg")
    code, out, err = cli(capsys, *args)
    assert code == 2
    assert err.startswith("featcache: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_different_settings_into_a_cache_are_refused_by_name(tiny_folder, tmp_path, capsys):
    base = ["extract", "--image-size", "32", "--weights", "none", "--data", str(tiny_folder),
            "--out", str(tmp_path / "c"), "--quiet"]
    assert cli(capsys, *base)[0] == 0
    code, _, err = cli(capsys, *base, "--dtype", "float16")
    assert code == 2 and 'dtype: cache has "float32", this run has "float16"' in err


def test_console_script_reports_errors_without_traceback(tmp_path):
    script = Path(sys.executable).with_name("featcache")
    if not script.exists():
        pytest.skip("featcache console script not installed in this environment")
    proc = subprocess.run([str(script), "extract", "--data", str(tmp_path / "none"), "--out",
                           str(tmp_path / "c")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("featcache: error: --data")


def test_offline_without_weights_says_how_to_supply_them(tiny_folder, tmp_path):
    """No network (proxy to a closed port), empty Keras cache: one actionable line."""
    env = {"KERAS_HOME": str(tmp_path / "keras"), "https_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    proc = run_cli("extract", "--backbone", "vgg19", "--data", str(tiny_folder), "--out",
                   str(tmp_path / "c"), env=env)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("featcache: error: Could not get ImageNet weights for vgg19")
    assert "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5" in last
    assert "FEATCACHE_WEIGHTS_DIR" in last and "--weights-dir" in last
    assert "Traceback" not in proc.stderr


def test_weights_dir_from_environment_and_flat_or_keras_layout(tiny_folder, tmp_path, weights_dir):
    keras_layout = tmp_path / "home" / "models"
    keras_layout.mkdir(parents=True)
    os.symlink(weights_dir / "mobilenet_1_0_224_tf_no_top.h5", keras_layout / "mobilenet_1_0_224_tf_no_top.h5")
    proc = run_cli("extract", "--backbone", "mobilenet", "--data", str(tiny_folder), "--out",
                   str(tmp_path / "c"), "--json", env={"FEATCACHE_WEIGHTS_DIR": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    weights = json.loads(proc.stdout)["weights"]
    assert weights["source"] == "imagenet" and weights["file"] == "mobilenet_1_0_224_tf_no_top.h5"
    assert weights["sha256"].startswith("7dee85589794")


def test_demo_runs_the_main_job_on_the_shipped_sample(tmp_path, weights_dir):
    proc = run_cli("demo", "--out", str(tmp_path / "demo"), "--json",
                   env={"FEATCACHE_WEIGHTS_DIR": str(weights_dir)})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["extract"]["splits"] == {"train": 250, "val": 100}
    assert summary["extract"]["skipped"] == []
    assert summary["train_head"]["val_accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert {"model.joblib", "confusion_matrix.png"} <= set(os.listdir(tmp_path / "demo" / "head"))


def test_backbones_and_layers_listings(capsys):
    code, out, _ = cli(capsys, "backbones", "--json")
    assert code == 0 and {"vgg16", "nasnetlarge"} <= {row["name"] for row in json.loads(out)}
    code, out, _ = cli(capsys, "layers", "vgg16")
    assert code == 0 and "block4_pool" in out and "fc1" in out and "(full network only)" in out
