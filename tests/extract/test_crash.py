"""Kill a real `featcache extract` process with SIGKILL mid-run, then resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli

import featcache
from featcache.cli import main
from featcache.errors import CacheError


def extract_args(data: Path, out: Path, weights_dir: Path) -> list[str]:
    return ["extract", "--backbone", "mobilenet", "--data", str(data), "--out", str(out),
            "--weights-dir", str(weights_dir), "--shard-size", "8", "--batch-size", "2", "--quiet"]


def shard_files(out: Path) -> list[str]:
    folder = out / "shards"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


@pytest.mark.slow  # ~25 s; the default run keeps the Dask worker-kill and disk-full cases
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(data_root, weights_dir, tmp_path):
    data = data_root / "tiny_flowers5"  # 70 images: 9 shards of 8
    killed = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k != "FEATCACHE_WEIGHTS_DIR"}
    proc = subprocess.Popen([sys.executable, "-m", "featcache", *extract_args(data, killed, weights_dir)],
                            cwd=str(REPO), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len([f for f in shard_files(killed) if f.endswith(".h5")]) < 2:
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no shard appeared in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = [f for f in shard_files(killed) if f.endswith(".h5")]
    assert 2 <= len(done_at_kill) < 9, done_at_kill
    assert not (killed / "manifest.json").exists()
    with pytest.raises(CacheError, match="has not finished"):
        featcache.load_features(str(killed), "train")

    resumed = run_cli(*extract_args(data, killed, weights_dir)[:-1], "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["shards_reused"] >= len(done_at_kill) and summary["shards_written"] >= 1
    assert not [f for f in shard_files(killed) if ".tmp-" in f]

    clean = tmp_path / "clean"  # the uninterrupted run, in this process
    assert main(extract_args(data, clean, weights_dir)) == 0
    for split in ("train", "val"):
        a = featcache.load_features(str(killed), split)
        b = featcache.load_features(str(clean), split)
        assert a.paths == b.paths and a.hashes == b.hashes
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.features, b.features)
    assert shard_files(killed) == shard_files(clean)
