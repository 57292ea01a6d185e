#!/usr/bin/env python3
"""Training a head in memory vs streamed from HDF5: time and peak memory.

One large cache (default: MobileNet spatial features, 7x7x1024 per image at
224 px, of cats_dogs: about 200 KB a row) is extracted once; then each head
trains --runs times in a fresh `featcache train-head` process, once with the
whole cache in memory and once under a small --max-memory budget, so the
cache streams from disk in shuffled chunks. Peak memory is the process's
maximum resident set size (from wait4), start-up and TensorFlow included.

    python benchmarks/streaming_memory.py --data ../shared/data/cats_dogs --runs 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, machine_line, markdown_table, median, shared_path, write_results  # noqa: E402
from common import process_env, run_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", default=shared_path("data", "cats_dogs"))
    parser.add_argument("--backbone", default="mobilenet")
    parser.add_argument("--pooling", default="none")
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--heads", nargs="+", default=["dense256", "sgd", "linear"])
    parser.add_argument("--budget", default="300MB", help="--max-memory of the streamed runs (about half the cache)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", default=None, help="reuse this cache folder")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    env = process_env()
    if args.weights_dir:
        env["FEATCACHE_WEIGHTS_DIR"] = args.weights_dir
    fc = [sys.executable, "-m", "featcache"]
    work = tempfile.mkdtemp(prefix="featcache-stream-")
    cache = args.cache or os.path.join(work, "cache")
    try:
        _, _, extracted = run_json([*fc, "extract", "--data", args.data, "--out", cache, "--backbone",
                               args.backbone, "--pooling", args.pooling, "--json"], env)
        rows = []
        for head in args.heads:
            for mode, extra in (("in memory", ["--max-memory", "20GB"]),
                                ("streamed", ["--max-memory", args.budget])):
                secs, peaks, acc = [], [], None
                for run_i in range(args.runs):
                    out = os.path.join(work, f"{head}-{run_i}")
                    s, peak, summary = run_json([*fc, "train-head", "--cache", cache, "--model", head,
                                            "--out", out, "--epochs", str(args.epochs),
                                            "--no-early-stopping", "--json", "--quiet", *extra], env)
                    shutil.rmtree(out)
                    secs.append(s)
                    peaks.append(peak)
                    acc = summary.get("val_accuracy")
                rows.append({"head": head, "mode": mode, "max_memory": extra[1],
                             "wall_s": round(median(secs), 1), "peak_rss_mib": round(median(peaks)),
                             "val_accuracy": round(acc, 4) if acc is not None else ""})
                print(rows[-1], flush=True)
        cache_mb = extracted.get("cache_bytes", 0) / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta = {"machine": machine(), "runs": args.runs, "cache_mib": round(cache_mb),
            "command": " ".join(["python", *sys.argv])}
    columns = [("head", "head"), ("mode", "features"), ("max_memory", "--max-memory"),
               ("wall_s", "wall s (median)"), ("peak_rss_mib", "peak RSS MiB"),
               ("val_accuracy", "val accuracy")]
    text = (f"# In memory vs streamed: {args.backbone} {args.pooling}-pooled features of "
            f"{os.path.basename(args.data.rstrip('/'))} ({cache_mb:.0f} MiB cache)\n\n"
            f"{machine_line(meta)}\n\nCommand: `{meta['command']}`\n\n{args.epochs} epochs each, "
            f"no early stopping; median of {args.runs} runs of whole processes.\n\n"
            + markdown_table(rows, columns))
    write_results(args.name or "streaming_memory", meta, rows, text)


if __name__ == "__main__":
    main()
