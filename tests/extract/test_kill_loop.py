"""Fault injection: SIGKILL `featcache extract` at many random moments (slow; CI runs it).

Each time: every finished shard on disk is complete, a manifest (if any) is
whole, and resuming gives exactly the rows and features of an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from featcache.extract import ExtractOptions, extract
from featcache.feature_model import build_feature_extractor
from featcache.fingerprint import fingerprint_hash
from featcache.cache import FeatureCache, read_shard_info
from reliability_util import assert_same_cache, spawn

KILLS = 20


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_twenty_random_kills_always_leave_a_complete_or_resumable_cache(data_root, weights_dir,
                                                                        tmp_path):
    data = data_root / "tiny_flowers5"  # 70 images; 18 shards of 4
    flags = ["--backbone", "mobilenet", "--image-size", "96", "--weights-dir", str(weights_dir),
             "--shard-size", "4", "--batch-size", "2", "--quiet"]
    clean = tmp_path / "clean"
    started = time.monotonic()
    proc = spawn("extract", "--data", str(data), "--out", str(clean), *flags)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    total = time.monotonic() - started
    fph = FeatureCache(str(clean)).fingerprint_hash
    extractor = build_feature_extractor("mobilenet", 96, None, None, "imagenet", str(weights_dir), 0)
    rng = random.Random(6)
    mid_shard = complete_at_kill = 0
    for i in range(KILLS):
        out = tmp_path / f"k{i}"
        proc = spawn("extract", "--data", str(data), "--out", str(out), *flags)
        if i % 2:  # anywhere in [0, T]
            time.sleep(rng.uniform(0, total))
        else:  # within the extraction itself: after the first shard file appears
            while proc.poll() is None and not (out / "shards").is_dir():
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        names = os.listdir(out / "shards") if (out / "shards").is_dir() else []
        mid_shard += any(".tmp-" in n for n in names)
        for name in names:
            if name.endswith(".h5"):  # a finished name is always a complete shard
                assert read_shard_info(str(out), f"shards/{name}", fph) is not None, name
        if (out / "manifest.json").exists():
            complete_at_kill += 1
            assert_same_cache(str(out), str(clean))
        if not out.exists():
            continue  # killed before the folder existed: nothing to resume
        extract(ExtractOptions(data=str(data), out=str(out), shard_size=4, batch_size=2,
                               progress=False), extractor=extractor)
        assert assert_same_cache(str(out), str(clean)) == 70
        assert not [n for n in os.listdir(out / "shards") if ".tmp-" in n]
    print(f"\n{KILLS} kills: {mid_shard} mid-shard, {complete_at_kill} after the manifest; "
          "all resumed equal to the uninterrupted run")
    assert mid_shard >= 1
    assert fingerprint_hash(FeatureCache(str(clean)).fingerprint) == fph
