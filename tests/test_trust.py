"""Trust: pickles load only when featcache wrote them; Keras loads in safe mode; lists stay in root."""

from __future__ import annotations

import json
import os


from conftest import make_folder
from featcache.cli import main
from featcache.extract import ExtractOptions, extract
from featcache.fileio import sha256_file
from featcache.train import train_head
from reliability_util import assert_one_line_error


def small_cache(tmp_path):
    data = make_folder(tmp_path / "data", {"train": {"a": 4, "b": 4}, "val": {"a": 2, "b": 2}})
    return extract(ExtractOptions(data=str(data), out=str(tmp_path / "c"), backbone="mobilenet",
                                  image_size=32, weights="none", progress=False)).cache


def test_tampered_or_unknown_pickles_are_refused(tmp_path, capsys, monkeypatch):
    cache = small_cache(tmp_path)
    head = tmp_path / "h"
    train_head(cache, "logreg", str(head), progress=False)
    assert main(["evaluate", "--model", str(head), "--cache", cache, "--json"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("FEATCACHE_TRUST_STORE", str(tmp_path / "other-user.txt"))
    assert main(["evaluate", "--model", str(head), "--cache", cache]) == 2
    assert_one_line_error(capsys.readouterr().err, "did not write for this user", "--trust")
    assert main(["evaluate", "--model", str(head), "--cache", cache, "--trust", "--json"]) == 0
    capsys.readouterr()
    with open(head / "model.joblib", "ab") as fh:
        fh.write(b"tampered")
    assert main(["evaluate", "--model", str(head), "--cache", cache]) == 2
    assert_one_line_error(capsys.readouterr().err, "model.joblib changed since featcache wrote it")


def test_keras_model_with_a_lambda_layer_is_refused_by_safe_mode(tmp_path, capsys):
    import keras

    cache = small_cache(tmp_path)
    head = tmp_path / "h"
    train_head(cache, "linear", str(head), {"epochs": 1}, progress=False)
    inputs = keras.Input((1024,))
    outputs = keras.layers.Lambda(lambda x: keras.ops.softmax(x[:, :2]))(inputs)
    keras.Model(inputs, outputs).save(head / "model.keras")
    config = json.loads((head / "config.json").read_text())
    config["model_sha256"] = sha256_file(head / "model.keras")  # a consistent, hostile folder
    (head / "config.json").write_text(json.dumps(config))
    for extra in ([], ["--trust"]):
        assert main(["evaluate", "--model", str(head), "--cache", cache, *extra]) == 2
        assert_one_line_error(capsys.readouterr().err, "Lambda", "safe mode")


def test_list_paths_cannot_leave_the_data_root_unless_allowed(tmp_path, capsys):
    data = make_folder(tmp_path / "inside", {"": {"a": 2, "b": 2}})
    outside = make_folder(tmp_path / "outside", {"": {"b": 1}})
    rows = ["a/a_000.jpg,a", "a/a_001.jpg,a", "b/b_000.jpg,b", "../outside/b/b_000.jpg,b"]
    (data / "list.csv").write_text("\n".join(rows) + "\n")
    args = ["extract", "--data", str(data / "list.csv"), "--backbone", "mobilenet",
            "--image-size", "32", "--weights", "none", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "c1")]) == 2
    assert_one_line_error(capsys.readouterr().err, "list.csv:4", "outside the data root",
                          "--allow-outside-root")
    assert not (tmp_path / "c1").exists()
    (data / "abs.csv").write_text(f"a/a_000.jpg,a\n{outside / 'b' / 'b_000.jpg'},b\n")
    assert main([*args[:2], str(data / "abs.csv"), *args[3:], "--out", str(tmp_path / "c2")]) == 2
    assert_one_line_error(capsys.readouterr().err, "abs.csv:2", "outside the data root")
    assert main([*args, "--out", str(tmp_path / "c3"), "--allow-outside-root"]) == 0
    assert os.path.isfile(tmp_path / "c3" / "manifest.json")
