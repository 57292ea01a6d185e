"""extract --engine dask on a real LocalCluster of 2 worker processes, against the local engine.

Real MobileNet (offline ImageNet weights at 96 px), real HDF5, a real cluster;
a worker is killed with SIGKILL in the middle of a shard and the run still
completes with the same features.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, run_cli
from fault_hooks import KillOnceAfterBatch

import featcache
from featcache.extract import ExtractOptions, extract
from featcache.cache import FeatureCache

if os.environ.get("FEATCACHE_REQUIRE_BACKENDS") == "1":  # CI installs featcache[dev], dask included
    import distributed
else:
    distributed = pytest.importorskip("distributed")

SIZE = 96
DATASET = "tiny_hymenoptera"  # 16 train + 8 val images: 6 shards of 4


def options(data_root, weights_dir, out, **kw) -> ExtractOptions:
    return ExtractOptions(data=str(data_root / DATASET), out=str(out), backbone="mobilenet",
                          image_size=SIZE, weights=str(weights_dir / "mobilenet_1_0_224_tf_no_top.h5"),
                          shard_size=4, batch_size=2, progress=False, **kw)


@pytest.fixture(scope="module")
def kill_switch(tmp_path_factory):
    """The marker file whose folder, once created, arms the kill hook the test passes in."""
    return tmp_path_factory.mktemp("kill") / "armed" / "killed"


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as local:
        yield local


@pytest.fixture(scope="module")
def local_cache(tmp_path_factory, data_root, weights_dir):
    out = tmp_path_factory.mktemp("local")
    extract(options(data_root, weights_dir, out))
    return out


def assert_same_cache(a, b):
    ma, mb = FeatureCache(str(a)).manifest, FeatureCache(str(b)).manifest
    assert ma["fingerprint_hash"] == mb["fingerprint_hash"] and ma["splits"] == mb["splits"]
    assert [s["file"] for s in ma["shards"]] == [s["file"] for s in mb["shards"]]
    for split in ("train", "val"):
        x, y = featcache.load_features(str(a), split), featcache.load_features(str(b), split)
        assert x.paths == y.paths and x.hashes == y.hashes
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.features, y.features)


def test_dask_cluster_equals_local_engine(cluster, local_cache, data_root, weights_dir, tmp_path):
    summary = extract(options(data_root, weights_dir, tmp_path / "dask", engine="dask",
                              scheduler=cluster.scheduler_address))
    assert summary.shards_written == 6 and summary.splits == {"train": 16, "val": 8}
    assert_same_cache(local_cache, tmp_path / "dask")
    manifest = FeatureCache(str(tmp_path / "dask")).manifest
    assert manifest["extraction"]["engine"] == "dask"
    # same bytes as the local engine, shard by shard
    local = FeatureCache(str(local_cache)).manifest
    assert [s["sha256"] for s in manifest["shards"]] == [s["sha256"] for s in local["shards"]]
    # each worker process built the backbone at most once, whatever number of shards it ran
    with distributed.Client(cluster) as client:
        built = client.run(lambda: len(__import__("sys").modules["featcache.extract.dask_engine"]._MODELS))
    assert set(built.values()) <= {0, 1} and 1 in built.values(), built
    # a rerun finds every shard done and sends nothing
    again = extract(options(data_root, weights_dir, tmp_path / "dask", engine="dask",
                            scheduler=cluster.scheduler_address))
    assert again.shards_written == 0 and again.shards_reused == 6


def test_worker_killed_mid_shard_is_retried_and_the_cache_completes(
        cluster, local_cache, kill_switch, data_root, weights_dir, tmp_path):
    kill_switch.parent.mkdir()  # arm: the first shard task to get here SIGKILLs its worker
    out = tmp_path / "killed"
    summary = extract(options(data_root, weights_dir, out, engine="dask",
                              scheduler=cluster.scheduler_address, retries=2),
                      after_batch=KillOnceAfterBatch(str(kill_switch)))
    pid, shard = kill_switch.read_text().split()
    assert shard.startswith("shards/")  # a worker died in the middle of that shard...
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)  # ...and is gone; its task ran again elsewhere
    assert summary.shards_written == 6
    assert not [n for n in os.listdir(out / "shards") if ".tmp-" in n]
    assert_same_cache(local_cache, out)


def test_engine_dask_without_dask_installed_says_how_to_install(tmp_path, data_root):
    code = ("import sys; sys.modules['distributed'] = None; from featcache.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run(
        [sys.executable, "-c", code, "extract", "--data", str(data_root / DATASET), "--out",
         str(tmp_path / "c"), "--engine", "dask", "--weights", "none"],
        capture_output=True, text=True, cwd=str(REPO), timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "featcache[dask]"' in lines[0], proc.stderr
    assert not (tmp_path / "c").exists()


def test_dask_flag_mistakes_are_one_line_errors(tmp_path, data_root):
    proc = run_cli("extract", "--data", str(data_root / DATASET), "--out", str(tmp_path / "c"),
                   "--scheduler", "tcp://127.0.0.1:8786")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--scheduler" in proc.stderr and "--engine" in proc.stderr


@pytest.mark.slow
def test_cli_workers_starts_a_local_cluster(data_root, weights_dir, local_cache, tmp_path):
    out = tmp_path / "cli"
    proc = run_cli("extract", "--data", str(data_root / DATASET), "--out", str(out),
                   "--backbone", "mobilenet", "--image-size", str(SIZE),
                   "--weights", str(weights_dir / "mobilenet_1_0_224_tf_no_top.h5"),
                   "--shard-size", "4", "--batch-size", "2", "--engine", "dask", "--workers", "2",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["shards_written"] == 6
    assert_same_cache(local_cache, out)
