"""`featcache verify`: finds a flipped byte, repairs only the damaged shard."""

from __future__ import annotations

import json
import os
import shutil

from featcache.cli import main
from featcache.extract import ExtractOptions, extract
from featcache.cache import FeatureCache
from reliability_util import assert_one_line_error, assert_same_cache


def build(data, out):
    return extract(ExtractOptions(data=str(data), out=str(out), backbone="mobilenet", image_size=32,
                                  weights="none", shard_size=3, progress=False))


def flip_byte(path, at=None):
    raw = bytearray(open(path, "rb").read())
    at = len(raw) // 2 if at is None else at
    raw[at] ^= 0xFF
    open(path, "wb").write(bytes(raw))


def stats(cache, files):
    return {f: (os.stat(os.path.join(cache, f)).st_ino, os.stat(os.path.join(cache, f)).st_mtime_ns)
            for f in files}


def test_flipped_byte_is_found_and_only_that_shard_is_repaired(tiny_folder, tmp_path, capsys):
    summary = build(tiny_folder, tmp_path / "c")
    cache = summary.cache
    shutil.copytree(cache, tmp_path / "original")
    assert main(["verify", cache, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    files = [s["file"] for s in FeatureCache(cache).manifest["shards"]]
    damaged, others = files[1], [f for f in files if f != files[1]]
    flip_byte(os.path.join(cache, damaged))
    before = stats(cache, others)
    assert main(["verify", cache, "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["ok"] is False and [d["file"] for d in report["damaged"]] == [damaged]
    assert "sha256 differs" in report["damaged"][0]["problems"][0]
    assert "verify --repair" in captured.err

    assert main(["verify", cache, "--repair", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["repaired"] == [damaged]
    assert stats(cache, others) == before  # the intact shards were not rewritten
    assert assert_same_cache(cache, str(tmp_path / "original")) == 12
    assert main(["verify", cache]) == 0
    assert "ok" in capsys.readouterr().out


def test_truncated_or_missing_shards_and_leftovers(tiny_folder, tmp_path, capsys):
    cache = build(tiny_folder, tmp_path / "c").cache
    files = [s["file"] for s in FeatureCache(cache).manifest["shards"]]
    with open(os.path.join(cache, files[0]), "r+b") as fh:
        fh.truncate(1000)
    os.remove(os.path.join(cache, files[-1]))
    open(os.path.join(cache, "shards", "train-00009-abc.h5.tmp-123"), "wb").close()
    assert main(["verify", cache]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED: {files[0]}" in out and "manifest says" in out
    assert f"DAMAGED: {files[-1]}" in out and "file is missing" in out
    assert "unfinished temporary file" in out
    assert main(["verify", cache, "--repair", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["repaired"] == sorted([files[0], files[-1]])
    assert main(["verify", cache, "--json"]) == 0


def test_repair_refuses_when_the_images_are_gone(tiny_folder, tmp_path, capsys):
    cache = build(tiny_folder, tmp_path / "c").cache
    shard = FeatureCache(cache).manifest["shards"][0]["file"]
    flip_byte(os.path.join(cache, shard))
    shutil.rmtree(tiny_folder)
    assert main(["verify", cache, "--repair"]) == 2
    assert_one_line_error(capsys.readouterr().err, "cannot repair", "is gone")
    assert main(["verify", cache, "--json"]) == 1  # still reported, nothing else changed
    assert len(json.loads(capsys.readouterr().out)["damaged"]) == 1


def test_verify_of_a_non_cache_is_one_line(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "not a featcache cache")
