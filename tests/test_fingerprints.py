"""Fingerprints on the read paths not covered elsewhere: finetune (fresh and resumed)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import make_folder
from featcache.errors import FingerprintMismatchError, UsageError
from featcache.extract import ExtractOptions, extract
from featcache.finetuning import CHECKPOINT_DIR, STATE_FILE, FinetuneOptions, finetune
from featcache.train import evaluate, train_head


def head_for(tmp_path, name, data, **kw):
    cache = extract(ExtractOptions(data=str(data), out=str(tmp_path / f"c-{name}"), backbone="mobilenet",
                                   weights="none", progress=False, **kw)).cache
    out = tmp_path / f"h-{name}"
    train_head(cache, "linear", str(out), {"epochs": 1}, progress=False)
    return cache, str(out)


def test_finetune_refuses_mixed_backbones_and_names_the_field(tmp_path):
    data = make_folder(tmp_path / "data", {"train": {"a": 3, "b": 3}, "val": {"a": 1, "b": 1}})
    cache32, head32 = head_for(tmp_path, "32", data, image_size=32)
    cache48, head48 = head_for(tmp_path, "48", data, image_size=48)
    with pytest.raises(FingerprintMismatchError, match="input_size"):
        evaluate(head32, cache48)
    # a head claiming another Keras version: finetune cannot rebuild its backbone identically
    fp_file = tmp_path / "h-32" / "fingerprint.json"
    stored = json.loads(fp_file.read_text())
    stored["fingerprint"]["versions"]["keras"] = "2.15.0"
    fp_file.write_text(json.dumps(stored))
    with pytest.raises(FingerprintMismatchError, match='versions.keras: cache has "2.15.0"'):
        finetune(str(data), head32, str(tmp_path / "ft0"), FinetuneOptions(epochs=1), progress=False)

    # no training images: refused before anything is written
    only_val = make_folder(tmp_path / "only_val", {"val": {"a": 1, "b": 1}})
    with pytest.raises(UsageError, match="no training images"):
        finetune(str(only_val), head48, str(tmp_path / "ft0b"), FinetuneOptions(epochs=1),
                 progress=False)
    # a run from the 48 px head killed mid-training (a real process) cannot be resumed with
    # another head
    state = tmp_path / "ft" / CHECKPOINT_DIR / STATE_FILE
    proc = subprocess.Popen([sys.executable, "-m", "featcache", "finetune", "--data", str(data),
                             "--model", head48, "--out", str(tmp_path / "ft"), "--epochs", "1000",
                             "--no-early-stopping", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state.exists(), "the fine-tuning run never wrote its state"
    finally:
        proc.kill()
        proc.wait()
    _, head32b = head_for(tmp_path, "32b", data, image_size=32)
    with pytest.raises(FingerprintMismatchError, match="input_size.*Resume it with the head"):
        finetune(str(data), head32b, str(tmp_path / "ft"), FinetuneOptions(epochs=1),
                 resume=True, progress=False)


def test_train_head_and_export_refuse_mixed_features(tmp_path, capsys):
    import shutil

    from featcache.cli import main
    from featcache.cache import FeatureCache
    from reliability_util import assert_one_line_error

    data = make_folder(tmp_path / "data", {"train": {"a": 3, "b": 3}, "val": {"a": 1, "b": 1}})
    cache32, head32 = head_for(tmp_path, "32", data, image_size=32)
    cache48, _ = head_for(tmp_path, "48", data, image_size=48)
    # a shard of another cache (48 px features) slipped in under the 32 px cache's shard name
    victim = FeatureCache(cache32).shards("train")[0]["file"]
    other = FeatureCache(cache48).shards("train")[0]["file"]
    shutil.copy(f"{cache48}/{other}", f"{cache32}/{victim}")
    assert main(["train-head", "--cache", cache32, "--model", "logreg", "--out",
                 str(tmp_path / "h"), "--quiet"]) == 2
    assert_one_line_error(capsys.readouterr().err, victim, "does not match the manifest",
                          "featcache verify")
    assert main(["verify", cache32]) == 1
    assert "belongs to another fingerprint" in capsys.readouterr().out

    # export rebuilds the backbone: a head made with another Pillow is refused by name
    fp_file = tmp_path / "h-32" / "fingerprint.json"
    stored = json.loads(fp_file.read_text())
    stored["fingerprint"]["versions"]["pillow"] = "9.0.0"
    fp_file.write_text(json.dumps(stored))
    assert main(["export", "--model", head32, "--out", str(tmp_path / "m.keras")]) == 2
    assert_one_line_error(capsys.readouterr().err, 'versions.pillow: cache has "9.0.0"')
    assert not (tmp_path / "m.keras").exists()
