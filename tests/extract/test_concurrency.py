"""Two real extraction processes into one cache: one waits its turn or is refused, never mixed."""

from __future__ import annotations

import json

import pytest

from conftest import make_folder
from featcache.extract import ExtractOptions, extract
from reliability_util import assert_one_line_error, assert_same_cache, spawn


pytestmark = pytest.mark.slow  # real processes racing: ~30-90 s on two cores


def test_two_extractions_into_one_new_cache(tmp_path):
    data = make_folder(tmp_path / "data", {"train": {"a": 12, "b": 12}, "val": {"a": 4, "b": 4}})
    out = tmp_path / "c"
    args = ["extract", "--data", str(data), "--out", str(out), "--backbone", "mobilenet",
            "--image-size", "32", "--weights", "none", "--shard-size", "2", "--batch-size", "1",
            "--json"]
    procs = [spawn(*args), spawn(*args)]  # started together: they reach the lock together
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    refused = [r for r in results if r[2] == 2]
    for _, err, code in refused:
        assert_one_line_error(err, "being written by another featcache process")
    assert codes in ([0, 2], [0, 0]), [r[1][-2000:] for r in results]
    print(f"\ntwo extractions at once: exit codes {codes}")
    if codes == [0, 0]:  # the second ran after the first finished: it reused every shard
        assert sorted(json.loads(r[0])["shards_written"] for r in results)[0] == 0
    # the loser touched nothing: the cache keeps its identity and verifies and resumes
    assert (out / "cache.json").is_file()
    clean = extract(ExtractOptions(data=str(data), out=str(tmp_path / "clean"), backbone="mobilenet",
                                   image_size=32, weights="none", shard_size=2, batch_size=1,
                                   progress=False))
    assert assert_same_cache(str(out), clean.cache) == 32
    again = extract(ExtractOptions(data=str(data), out=str(out), backbone="mobilenet", image_size=32,
                                   weights="none", shard_size=2, batch_size=1, progress=False))
    assert again.shards_written == 0


READER = r"""
import hashlib, json, os, sys
from featcache.cache import FeatureCache
cache, stop, report = sys.argv[1:4]
seen, errors = {}, []
def once():
    try:
        rows = FeatureCache(cache).read("train")
        key = hashlib.sha256(json.dumps(rows.paths).encode() + rows.features.tobytes()).hexdigest()
        seen[key] = seen.get(key, 0) + 1
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
import time
while not os.path.exists(stop):
    once()
    time.sleep(0.002)  # leave the writer some CPU
once()
json.dump({"seen": seen, "errors": errors}, open(report, "w"))
"""


def state_key(cache: str) -> str:
    import hashlib

    from featcache.cache import FeatureCache

    rows = FeatureCache(cache).read("train")
    return hashlib.sha256(json.dumps(rows.paths).encode() + rows.features.tobytes()).hexdigest()


def test_readers_during_a_write_see_the_old_or_the_new_complete_state(tmp_path):
    import shutil
    import subprocess
    import sys

    from conftest import REPO
    from reliability_util import child_env

    data = make_folder(tmp_path / "data", {"": {"a": 6, "b": 6}})
    out = tmp_path / "c"
    options = dict(backbone="mobilenet", image_size=32, weights="none", shard_size=2, progress=False)
    extract(ExtractOptions(data=str(data), out=str(out), **options))
    old = state_key(str(out))
    # files that sort first in each class: every shard is re-planned, the old ones deleted
    for cls in ("a", "b"):
        shutil.copy(data / cls / f"{cls}_005.jpg", data / cls / f"0_{cls}.jpg")
    expected_new = extract(ExtractOptions(data=str(data), out=str(tmp_path / "new"), **options))
    new = state_key(expected_new.cache)

    stop = tmp_path / "stop"
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(out), str(stop),
                                 str(tmp_path / f"r{i}.json")], cwd=str(REPO), env=child_env())
               for i in range(2)]
    writer = spawn("extract", "--data", str(data), "--out", str(out), "--backbone", "mobilenet",
                   "--image-size", "32", "--weights", "none", "--shard-size", "2", "--quiet")
    _, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err[-3000:]
    stop.write_text("done")
    for r in readers:
        assert r.wait(timeout=120) == 0
    total = {}
    for i in range(2):
        report = json.loads((tmp_path / f"r{i}.json").read_text())
        assert report["errors"] == []
        for key, n in report["seen"].items():
            total[key] = total.get(key, 0) + n
    assert set(total) == {old, new}, total  # never a mixture, never a failure
