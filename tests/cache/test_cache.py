"""featcache.cache on its own: real HDF5 shards, manifests, locks and readers, no Keras."""

from __future__ import annotations

import os

import numpy as np
import pytest

from featcache.cache import (
    CacheLock,
    FeatureCache,
    ShardWriter,
    SplitReader,
    check_shard,
    init_identity,
    load_features,
    new_manifest,
    read_shard_info,
    remove_unplanned_shards,
    shard_files,
    temporary_files,
    write_manifest,
)
from featcache.errors import CacheError, CacheLockedError, FingerprintMismatchError

FINGERPRINT = {"format_version": 1, "backbone": "test", "feature_shape": [3], "dtype": "float32"}
FPH = "f" * 64


def write_shard(folder, split, index, rows, start=0, views=False):
    writer = ShardWriter(str(folder), split, index, f"{index:02d}" + "a" * 62, rows, (3,), "float32",
                         FPH, views=views)
    features = np.arange(start * 3, (start + rows) * 3, dtype=np.float32).reshape(rows, 3)
    writer.append(features, [i % 2 for i in range(rows)], [f"{split}/img{start + i}.jpg" for i in range(rows)],
                  [f"{start + i:064x}" for i in range(rows)], [0] * rows if views else None)
    return writer.commit()


def make_cache(folder, splits=(("train", (4, 3)), ("val", (2,)))):
    init_identity(str(folder), FINGERPRINT, FPH)
    shards, start = [], 0
    for split, sizes in splits:
        for index, rows in enumerate(sizes):
            shards.append(write_shard(folder, split, index, rows, start))
            start += rows
    write_manifest(str(folder), new_manifest(
        fingerprint=FINGERPRINT, fingerprint_hash=FPH, class_names=["a", "b"], shards=shards,
        source={"data": "d", "root": "d", "layout": "folders"}, weights={}, extraction={}))
    return shards


def test_a_committed_shard_is_complete_and_described_the_same_when_read_back(tmp_path):
    info = write_shard(tmp_path, "train", 0, 5)
    assert info.rows == 5 and os.path.isfile(tmp_path / info.file)
    assert not temporary_files(str(tmp_path))
    again = read_shard_info(str(tmp_path), info.file, FPH)
    assert again == info
    assert read_shard_info(str(tmp_path), info.file, "other") is None
    assert check_shard(str(tmp_path), info.to_manifest(), FPH) == []


def test_an_aborted_shard_leaves_nothing(tmp_path):
    writer = ShardWriter(str(tmp_path), "train", 0, "b" * 64, 4, (3,), "float16", FPH)
    writer.append(np.ones((2, 3)), [0, 1], ["x", "y"], ["0" * 64, "1" * 64])
    assert temporary_files(str(tmp_path))
    writer.abort()
    assert not temporary_files(str(tmp_path)) and not shard_files(str(tmp_path))


def test_the_manifest_counts_splits_and_readers_return_rows_in_order(tmp_path):
    make_cache(tmp_path)
    cache = FeatureCache(str(tmp_path))
    assert cache.splits == {"train": 7, "val": 2} and cache.class_names == ["a", "b"]
    assert cache.manifest["splits"]["train"]["shards"] == 2
    train = load_features(str(tmp_path), "train")
    np.testing.assert_array_equal(train.features[:, 0], np.arange(7) * 3)
    assert train.paths[4] == "train/img4.jpg" and list(train.views) == [0] * 7
    assert "test" in repr(cache) and "train 7" in repr(cache)
    with SplitReader(cache, "train") as reader:
        rows = reader.read_rows(np.array([1, 2, 5, 6]))  # spans both shards
        np.testing.assert_array_equal(rows[:, 0], [3, 6, 15, 18])
    with pytest.raises(CacheError, match="no split 'test'"):
        cache.shards("test")


def test_damage_is_found_by_check_shard(tmp_path):
    shards = make_cache(tmp_path)
    path = tmp_path / shards[0].file
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = check_shard(str(tmp_path), shards[0].to_manifest(), FPH)
    assert any("sha256" in p for p in problems)


def test_identity_refuses_other_settings_and_foreign_folders(tmp_path):
    make_cache(tmp_path / "c")
    with pytest.raises(FingerprintMismatchError, match="backbone") as info:
        init_identity(str(tmp_path / "c"), {**FINGERPRINT, "backbone": "other"}, "e" * 64)
    assert "another out" in str(info.value) and "another --out" in info.value.cli_message()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(CacheError, match="not a featcache cache"):
        init_identity(str(tmp_path / "foreign"), FINGERPRINT, FPH)


def test_one_writer_at_a_time(tmp_path):
    with CacheLock(str(tmp_path)):
        with pytest.raises(CacheLockedError, match=f"pid {os.getpid()}"):
            with CacheLock(str(tmp_path)):
                pass
    with CacheLock(str(tmp_path)):  # released
        pass


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    # libraries fork without exec behind our back (OpenVINO's converter does, to send
    # statistics); a child that outlives the lock's release must not keep the folder locked
    import signal
    import time

    started, ready = os.pipe()
    with CacheLock(str(tmp_path)):
        pid = os.fork()
        if pid == 0:  # the child: says it runs, then sleeps on, never touching the lock itself
            os.write(ready, b"x")
            time.sleep(30)
            os._exit(0)
        os.read(started, 1)
    try:
        with CacheLock(str(tmp_path)):  # released although the child still runs
            pass
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_unplanned_shards_are_removed(tmp_path):
    shards = make_cache(tmp_path)
    remove_unplanned_shards(str(tmp_path), {shards[0].file})
    assert shard_files(str(tmp_path)) == [shards[0].file]
