"""Disk full: a real child process under RLIMIT_FSIZE (SIGXFSZ ignored, so writes fail
with EFBIG): one clear line, earlier shards intact, resume once the limit is lifted."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from conftest import make_folder
from featcache.extract import ExtractOptions, extract
from featcache.cache import FeatureCache, read_shard_info
from reliability_util import assert_one_line_error, assert_same_cache, spawn

resource = pytest.importorskip("resource")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
FAST = dict(backbone="mobilenet", image_size=32, weights="none", shard_size=8)


def limited(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_write_error_is_one_line_earlier_shards_survive_and_resume_completes(tmp_path):
    # train holds 4 images (one small shard), val 16 (two full shards): a file size limit
    # between the two shard sizes lets the first shard through and fails the next
    data = make_folder(tmp_path / "data", {"train": {"a": 2, "b": 2}, "val": {"a": 8, "b": 8}})
    clean = extract(ExtractOptions(data=str(data), out=str(tmp_path / "clean"), progress=False, **FAST))
    sizes = {s["rows"]: s["bytes"] for s in FeatureCache(clean.cache).manifest["shards"]}
    limit = (sizes[4] + sizes[8]) // 2

    out = tmp_path / "c"
    args = ["extract", "--data", str(data), "--out", str(out), "--backbone", "mobilenet",
            "--image-size", "32", "--weights", "none", "--shard-size", "8", "--quiet"]
    proc = spawn(*args, preexec_fn=limited(limit))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    assert "RuntimeError" not in err and "Exception ignored" not in err, err[-3000:]
    line = assert_one_line_error(err, "cannot write", "File too large", "run the same command again")
    assert "shards/val-00000" in line
    shards = sorted(os.listdir(out / "shards"))
    assert len(shards) == 1 and shards[0].startswith("train-00000")  # no temporary left behind
    info = read_shard_info(str(out), f"shards/{shards[0]}", clean.fingerprint_hash)
    assert info is not None and info.rows == 4
    assert not (out / "manifest.json").exists()

    proc = spawn(*args)  # the limit lifted
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert assert_same_cache(str(out), clean.cache) == 20


@pytest.mark.slow
def test_manifest_write_failure_keeps_the_previous_complete_state(tmp_path):
    """A full disk while replacing the manifest leaves the last complete state readable."""
    data = make_folder(tmp_path / "data", {"": {"a": 3, "b": 3}})
    out = tmp_path / "c"
    first = extract(ExtractOptions(data=str(data), out=str(out), progress=False, **FAST))
    before = (out / "manifest.json").read_bytes()
    args = ["extract", "--data", str(data), "--out", str(out), "--backbone", "mobilenet",
            "--image-size", "32", "--weights", "none", "--shard-size", "8", "--quiet"]
    proc = spawn(*args, preexec_fn=limited(len(before) // 2))  # the manifest no longer fits
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    assert_one_line_error(err, "manifest.json", "cannot write")
    assert (out / "manifest.json").read_bytes() == before
    assert not [n for n in os.listdir(out) if ".tmp-" in n]
    assert FeatureCache(str(out)).splits == first.splits



@pytest.mark.slow
@pytest.mark.parametrize("flags,limit", [
    (["--image-size", "64", "--pooling", "none", "--shard-size", "80"], 500_000),  # 1.3 MB shard:
    # its first 1 MiB chunk leaves HDF5's chunk cache, and fails, while rows are appended
    (["--image-size", "32", "--shard-size", "64"], 2_000),  # fails as the shard file is made
])
def test_fails_cleanly_wherever_the_limit_hits(tmp_path, flags, limit):
    data = make_folder(tmp_path / "data", {"": {"a": 40, "b": 40}})
    out = tmp_path / "c"
    proc = spawn("extract", "--data", str(data), "--out", str(out), "--backbone", "mobilenet",
                 "--weights", "none", "--quiet", *flags, preexec_fn=limited(limit))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    assert "Exception ignored" not in err and "Traceback" not in err, err[-3000:]
    assert_one_line_error(err, "cannot write", "File too large")
    leftovers = os.listdir(out / "shards") if (out / "shards").is_dir() else []
    assert not [n for n in leftovers if ".tmp-" in n]
