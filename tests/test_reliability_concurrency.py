"""Two real extraction processes into one cache: one waits its turn or is refused, never mixed."""

from __future__ import annotations

import json

from conftest import make_folder
from featcache.extract import ExtractOptions, extract
from reliability_util import assert_one_line_error, assert_same_cache, spawn


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
