"""Sliced extraction (--num-slices K --slice-index I) merged with `featcache merge` equals one run."""

from __future__ import annotations

import os

import numpy as np
import pytest
import small_models

import featcache
from featcache.cli import main
from featcache.errors import CacheError
from featcache.extract import ExtractOptions, extract
from featcache.extract.merge import merge_slices
from featcache.cache import FeatureCache


@pytest.fixture(scope="module")
def mobilenet96(weights_dir):
    return small_models.mobilenet96(weights_dir)


def test_slices_merged_equal_a_single_run(mobilenet96, data_root, tmp_path, capsys):
    data = str(data_root / "tiny_hymenoptera")  # 24 images: 6 shards of 4, 3 slices of 2
    common = dict(data=data, shard_size=4, batch_size=2, progress=False)
    single = extract(ExtractOptions(out=str(tmp_path / "single"), **common), extractor=mobilenet96)
    out = tmp_path / "sliced"
    for index in (2, 0):  # any order, any machine
        part = extract(ExtractOptions(out=str(out), num_slices=3, slice_index=index, **common),
                       extractor=mobilenet96)
        assert part.shards_written == 2
    with pytest.raises(CacheError, match=r"slice\(s\) 1 never ran"):
        merge_slices(str(out))
    with pytest.raises(CacheError, match="featcache merge"):
        FeatureCache(str(out))  # no manifest until merged
    extract(ExtractOptions(out=str(out), num_slices=3, slice_index=1, **common), extractor=mobilenet96)

    assert main(["merge", str(out)]) == 0
    assert "3 slices, 6 shards" in capsys.readouterr().out
    a, b = FeatureCache(single.cache).manifest, FeatureCache(str(out)).manifest
    assert a["fingerprint_hash"] == b["fingerprint_hash"] and a["splits"] == b["splits"]
    assert [(s["file"], s["sha256"]) for s in a["shards"]] == [(s["file"], s["sha256"]) for s in b["shards"]]
    for split in ("train", "val"):
        x, y = featcache.load_features(single.cache, split), featcache.load_features(str(out), split)
        assert x.paths == y.paths
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.features, y.features)
    # merging again changes nothing; a plain rerun on the merged cache finds every shard done
    assert merge_slices(str(out), remove_parts=True).shards == 6
    assert not os.path.exists(out / "parts")
    rerun = extract(ExtractOptions(out=str(out), **common), extractor=mobilenet96)
    assert rerun.shards_written == 0 and rerun.shards_reused == 6


def test_slice_flag_mistakes_are_one_line_errors(tiny_folder, tmp_path, capsys):
    base = ["extract", "--data", str(tiny_folder), "--out", str(tmp_path / "c"), "--weights", "none"]
    assert main([*base, "--num-slices", "3"]) == 2
    assert "--num-slices=3 needs --slice-index" in capsys.readouterr().err
    assert main([*base, "--num-shards", "3", "--shard-index", "3"]) == 2
    assert "--slice-index=3: must be between 0 and 2" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "nothing")]) == 2
    assert "no slices to merge" in capsys.readouterr().err
