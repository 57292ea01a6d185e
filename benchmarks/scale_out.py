#!/usr/bin/env python3
"""Scale-out: the local engine against `--engine dask` on local clusters of N worker processes.

For each worker count, the same extraction (backbone, size, batch and shard
size) runs into a fresh cache; the table gives the extraction phase's images/s
(cluster start-up and the workers' model builds excluded from the rate but
reported), and checks that every cache's features equal the local engine's.
On one machine the workers share its cores, so this measures the engine's
overhead and how far process parallelism helps; across machines each worker
brings its own cores.

    python benchmarks/scale_out.py --data ../shared/data/hymenoptera --weights-dir ../shared/weights \
        --workers 1 2 --runs 3
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, machine_line, markdown_table, median, shared_path, write_results  # noqa: E402

import featcache  # noqa: E402
from featcache.extract import ExtractOptions, extract  # noqa: E402


def run_once(args, engine: str, out: str, scheduler: str | None = None) -> dict:
    options = ExtractOptions(data=args.data, out=out, backbone=args.backbone, image_size=args.image_size,
                             weights=args.weights, weights_dir=args.weights_dir,
                             batch_size=args.batch_size, shard_size=args.shard_size, progress=False,
                             engine=engine, scheduler=scheduler)
    summary = extract(options)
    return {"images": summary.images_extracted, "extract_s": summary.extract_seconds,
            "total_s": summary.seconds, "cache": summary.cache}


def same_features(a: str, b: str) -> bool:
    for split in featcache.FeatureCache(a).splits:
        x, y = featcache.load_features(a, split), featcache.load_features(b, split)
        if x.paths != y.paths or not np.array_equal(x.features, y.features):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=shared_path("data", "hymenoptera"))
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--backbone", default="mobilenet")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--name", default="scale_out", help="results file name")
    args = parser.parse_args()
    if not args.data:
        parser.error("--data is required (no ../shared/data/hymenoptera found)")

    import distributed

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        local_caches, rates = [], []
        for run in range(args.runs):
            result = run_once(args, "local", os.path.join(tmp, f"local-{run}"))
            local_caches.append(result["cache"])
            rates.append(result["images"] / result["extract_s"])
        rows.append({"engine": "local", "workers": 1, "images_per_s": round(median(rates), 2),
                     "startup_s": 0.0, "equal_to_local": True})
        for n in args.workers:
            start = time.perf_counter()
            with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                          dashboard_address=None, silence_logs=logging.ERROR) as cluster:
                startup = time.perf_counter() - start
                rates, equal = [], True
                for run in range(args.runs):
                    result = run_once(args, "dask", os.path.join(tmp, f"dask{n}-{run}"),
                                      cluster.scheduler_address)
                    rates.append(result["images"] / result["extract_s"])
                    equal = equal and same_features(local_caches[0], result["cache"])
            rows.append({"engine": "dask", "workers": n, "images_per_s": round(median(rates), 2),
                         "startup_s": round(startup, 1), "equal_to_local": equal})
    meta = {"machine": machine(), "data": args.data, "backbone": args.backbone,
            "image_size": args.image_size, "batch_size": args.batch_size,
            "shard_size": args.shard_size, "runs": args.runs}
    markdown = (f"# Scale-out: local engine vs Dask ({args.backbone}, {os.path.basename(args.data)})\n\n"
                + markdown_table(rows, [("engine", "engine"), ("workers", "worker processes"),
                                        ("images_per_s", "images/s (median)"),
                                        ("startup_s", "cluster start s"),
                                        ("equal_to_local", "features equal local")])
                + "\nThe first run on a cluster includes each worker's model build.\n\n"
                + machine_line(meta) + "\n")
    write_results(args.name, meta, rows, markdown)


if __name__ == "__main__":
    main()
