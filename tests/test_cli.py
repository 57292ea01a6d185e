"""The command line: JSON and human output, one-line errors, offline weights, flag names and
their deprecated spellings, and that cli.py stays thin (the demo: test_demo.py)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from featcache import cli as cli_module
from featcache.cli import build_parser, main
from featcache.errors import ParameterError


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
    shutil.copy(REPO / "featcache/sample_data/cifar10/train/frog/0000.jpg", tmp_path / "a" / "x.jpg")
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
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the script, but this checkout's package
    proc = subprocess.run([str(script), "extract", "--data", str(tmp_path / "none"), "--out",
                           str(tmp_path / "c")], capture_output=True, text=True, timeout=120, env=env)
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


def test_backbones_and_layers_listings(capsys):
    code, out, _ = cli(capsys, "backbones", "--json")
    assert code == 0 and {"vgg16", "nasnetlarge"} <= {row["name"] for row in json.loads(out)}
    code, out, _ = cli(capsys, "layers", "vgg16")
    assert code == 0 and "block4_pool" in out and "fc1" in out and "(full network only)" in out


def test_layers_json_and_backbones_text(capsys, tmp_path):
    code, out, _ = cli(capsys, "layers", "mobilenet", "--image-size", "128", "--json")
    rows = json.loads(out)
    assert code == 0 and rows[-1]["output_shape"] == [4, 4, 1024] and not any(r["needs_top"] for r in rows)
    code, out, _ = cli(capsys, "backbones", "--weights-dir", str(tmp_path))
    assert code == 0 and "vgg16" in out and "found" not in out and "missing" in out
    code, out, _ = cli(capsys, "backbones")
    assert code == 0 and "set --weights-dir or FEATCACHE_WEIGHTS_DIR" in out
    code, out, err = cli(capsys, "layers", "vgg16", "--image-size", "8")
    assert code == 2 and "--image-size 8 is below vgg16's minimum" in err


def test_cli_imports_no_keras_h5py_or_heavy_libraries():
    """cli.py only parses and prints: Keras, h5py and the backends stay behind library calls."""
    tree = ast.parse(Path(cli_module.__file__).read_text())
    absolute, relative = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            (relative if node.level else absolute).add((node.module or "").split(".")[0])
    assert not absolute & {"keras", "h5py", "tensorflow", "torch", "jax", "numpy", "sklearn"}, absolute
    assert "_keras" not in relative, relative


def _parse(*argv):
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("cls_path,argv", [
    ("featcache.extract.ExtractOptions", ["extract", "--data", "d", "--out", "o"]),
    ("featcache.finetuning.FinetuneOptions", ["finetune", "--data", "d", "--model", "m", "--out", "o"]),
])
def test_options_are_built_from_flags_named_like_their_fields(cls_path, argv):
    """Every field is a flag dest with the dataclass's own default (progress is set by the CLI)."""
    import importlib

    module, name = cls_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    args = _parse(*argv)
    built = cli_module.options_from_args(cls, args)
    for f in dataclasses.fields(cls):
        if f.name in ("data", "out", "progress") or f.metadata.get("deprecated"):
            continue
        assert hasattr(args, f.name), f"no flag has dest {f.name}"
        assert getattr(built, f.name) == f.default, f.name


def test_every_head_flag_defaults_to_none_so_given_flags_can_be_told_apart():
    args = _parse("train-head", "--cache", "c", "--model", "logreg", "--out", "o")
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    head_groups = [g for g in sub.choices["train-head"]._action_groups
                   if g.title.startswith(("Keras heads", "scikit-learn heads", "both"))]
    dests = {a.dest for g in head_groups for a in g._group_actions}
    assert {"epochs", "batch_size", "early_stopping", "search", "seed", "units", "C", "cv"} <= dests
    assert {d: getattr(args, d) for d in dests if getattr(args, d) is not None} == {}
    args = _parse("train-head", "--cache", "c", "--model", "logreg", "--out", "o",
                  "--no-early-stopping", "--search", "--seed", "0")
    assert (args.early_stopping, args.search, args.seed) == (False, True, 0)


def test_split_names_and_fractions_have_one_meaning_each(capsys):
    args = _parse("train-head", "--cache", "c", "--model", "logreg", "--out", "o",
                  "--val-split", "test", "--train-split", "val")
    assert (args.train_split, args.val_split) == ("val", "test")
    assert _parse("evaluate", "--model", "m", "--cache", "c", "--split", "test").split == "test"
    args = _parse("extract", "--data", "d", "--out", "o", "--val-fraction", "0.2", "--test-fraction", "0.1")
    assert (args.val_fraction, args.test_fraction) == (0.2, 0.1)
    assert capsys.readouterr().err == ""
    for command in ("extract", "finetune"):
        sub = build_parser()._subparsers._group_actions[0].choices[command]
        text = sub.format_help()
        assert "--val-fraction" in text and "--val-split" not in text and "--test-split" not in text


@pytest.mark.parametrize("argv,old,new,dest,value", [
    (["extract", "--data", "d", "--out", "o", "--val-split", "0.25"], "--val-split", "--val-fraction",
     "val_fraction", 0.25),
    (["extract", "--data", "d", "--out", "o", "--test-split", "0.1"], "--test-split", "--test-fraction",
     "test_fraction", 0.1),
    (["finetune", "--data", "d", "--head", "h", "--out", "o"], "--head", "--model", "model", "h"),
    (["finetune", "--data", "d", "--model", "h", "--out", "o", "--val-split", "0.3"], "--val-split",
     "--val-fraction", "val_fraction", 0.3),
    (["finetune", "--data", "d", "--model", "h", "--out", "o", "--test-split", "0.2"], "--test-split",
     "--test-fraction", "test_fraction", 0.2),
])
def test_deprecated_spellings_still_work_and_say_so_in_one_line(argv, old, new, dest, value, capsys):
    args = _parse(*argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and old in err and new in err and "deprecated" in err


def test_finetune_help_and_missing_model_name_only_the_new_flag(capsys):
    sub = build_parser()._subparsers._group_actions[0].choices["finetune"]
    assert "--model HEAD_DIR" in sub.format_help() and "--head" not in sub.format_help()
    with pytest.raises(SystemExit):
        _parse("finetune", "--data", "d", "--out", "o")
    err = capsys.readouterr().err
    assert "required: --model" in err and "--head" not in err


def test_finetune_with_the_old_spellings_reaches_the_library(capsys, monkeypatch):
    import featcache.finetuning

    calls = []
    monkeypatch.setattr(featcache.finetuning, "finetune",
                        lambda data, head_dir, out, options, **kw: calls.append((head_dir, options)))
    monkeypatch.setattr(cli_module.report, "finetune_summary", lambda summary: "done")
    code, out, err = cli(capsys, "finetune", "--data", "d", "--head", "h", "--out", "o",
                         "--val-split", "0.2", "--test-split", "0.1", "--unfreeze-top", "2")
    assert code == 0 and out == "done\n"
    assert "--head is deprecated" in err and "--val-split is deprecated" in err
    head_dir, options = calls[0]
    assert head_dir == "h" and (options.val_fraction, options.test_fraction) == (0.2, 0.1)
    assert options.unfreeze_top == 2 and options.epochs == 5


def test_parameter_errors_name_the_flag_on_the_cli_and_the_parameter_in_python(capsys, tmp_path):
    from featcache.finetuning import FinetuneOptions

    with pytest.raises(ParameterError, match=r"^val_fraction=1.5: must be a fraction"):
        FinetuneOptions(val_fraction=1.5).validate()
    code, _, err = cli(capsys, "finetune", "--data", str(tmp_path), "--model", str(tmp_path), "--out",
                       str(tmp_path / "o"), "--val-fraction", "1.5")
    assert code == 2 and err == "featcache: error: --val-fraction=1.5: must be a fraction in [0, 1).\n"
    code, _, err = cli(capsys, "finetune", "--data", str(tmp_path), "--model", str(tmp_path), "--out",
                       str(tmp_path / "o"), "--batch-size", "0")
    assert code == 2 and err == "featcache: error: --batch-size=0: must be at least 1.\n"


def test_any_library_parameter_error_is_shown_with_its_flag(capsys, monkeypatch):
    import featcache.weights

    def refuse(weights_dir=None):
        raise ParameterError("weights_dir", weights_dir, "not a folder.")

    monkeypatch.setattr(featcache.weights, "list_backbone_weights", refuse)
    code, _, err = cli(capsys, "backbones", "--weights-dir", "/x")
    assert code == 2 and err == "featcache: error: --weights-dir=/x: not a folder.\n"
