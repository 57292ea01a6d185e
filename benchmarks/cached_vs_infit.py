#!/usr/bin/env python3
"""Cached features vs the tutorials' frozen-base-inside-fit, wall clock and accuracy.

For each dataset and run, four timed processes (each wall time includes
Python and TensorFlow start-up, as a user would see it):

  baseline, first run    infit_baseline.py, dense256 head, --epochs
  baseline, second run   the same with a changed head (512 units): the base runs again
  featcache, first run   featcache extract (cold, empty cache) + train-head dense256
  featcache, second run  train-head dense512 on the warm cache

Both sides train every epoch (no early stopping) with Adam 1e-3, batch 32,
and report the last epoch's validation accuracy.

    python benchmarks/cached_vs_infit.py --data ../shared/data/hymenoptera --runs 3
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

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHT_FILES = {"mobilenet": "mobilenet_1_0_224_tf_no_top.h5",
                "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"}
HEADS = {"mobilenet": ("avg", "dense256", "dense512"), "vgg16": ("none", "dense256", "dense512")}


def one_run(data: str, backbone: str, weights_dir: str, epochs: int, work: str, env: dict) -> dict:
    weights = os.path.join(weights_dir, WEIGHT_FILES[backbone])
    pooling, first_head, second_head = HEADS[backbone]
    baseline = [sys.executable, os.path.join(HERE, "infit_baseline.py"), "--data", data,
                "--backbone", backbone, "--weights", weights, "--epochs", str(epochs), "--json"]
    b1, _, r1 = run_json(baseline, env)
    b2, _, r2 = run_json([*baseline, "--units", "512"], env)

    cache = os.path.join(work, "cache")
    shutil.rmtree(cache, ignore_errors=True)
    fc = [sys.executable, "-m", "featcache"]
    head_args = ["--epochs", str(epochs), "--no-early-stopping", "--json", "--quiet"]
    e, _, _ = run_json([*fc, "extract", "--data", data, "--out", cache, "--backbone", backbone,
                        "--pooling", pooling, "--weights", weights, "--json", "--quiet"], env)
    t1, _, h1 = run_json([*fc, "train-head", "--cache", cache, "--model", first_head,
                          "--out", os.path.join(work, "h1"), *head_args], env)
    t2, _, h2 = run_json([*fc, "train-head", "--cache", cache, "--model", second_head,
                          "--out", os.path.join(work, "h2"), *head_args], env)
    for d in ("h1", "h2"):
        shutil.rmtree(os.path.join(work, d), ignore_errors=True)
    return {"baseline_first_s": b1, "baseline_second_s": b2,
            "baseline_val_acc": r1["val_accuracy"], "baseline_second_val_acc": r2["val_accuracy"],
            "extract_s": e, "featcache_first_s": e + t1, "featcache_second_s": t2,
            "featcache_val_acc": h1["val_accuracy"], "featcache_second_val_acc": h2["val_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", nargs="+", default=[p for p in (
        shared_path("data", "hymenoptera"), shared_path("data", "cats_dogs")) if p])
    parser.add_argument("--backbone", choices=sorted(WEIGHT_FILES), default="mobilenet")
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--name", default=None, help="results file name")
    args = parser.parse_args()
    if not args.weights_dir:
        raise SystemExit("--weights-dir: folder with the ImageNet weight files is required")

    env = process_env()
    rows = []
    for data in args.data:
        runs = []
        with tempfile.TemporaryDirectory(prefix="featcache-bench-") as work:
            for i in range(args.runs):
                runs.append(one_run(data, args.backbone, args.weights_dir, args.epochs, work, env))
                print(f"{os.path.basename(data)} run {i + 1}: {runs[-1]}", file=sys.stderr)
        m = {k: median([r[k] for r in runs]) for k in runs[0]}
        rows.append({
            "dataset": os.path.basename(data.rstrip("/")), "backbone": args.backbone,
            "epochs": args.epochs, "runs": args.runs,
            "baseline_first_s": round(m["baseline_first_s"], 1),
            "featcache_first_s": round(m["featcache_first_s"], 1),
            "first_speedup": round(m["baseline_first_s"] / m["featcache_first_s"], 2),
            "baseline_second_s": round(m["baseline_second_s"], 1),
            "featcache_second_s": round(m["featcache_second_s"], 1),
            "second_speedup": round(m["baseline_second_s"] / m["featcache_second_s"], 1),
            "extract_s": round(m["extract_s"], 1),
            "baseline_val_acc": round(m["baseline_val_acc"], 4),
            "featcache_val_acc": round(m["featcache_val_acc"], 4),
            "baseline_second_val_acc": round(m["baseline_second_val_acc"], 4),
            "featcache_second_val_acc": round(m["featcache_second_val_acc"], 4),
        })
    meta = {"machine": machine(), "args": vars(args)}
    columns = [("dataset", "dataset"), ("backbone", "backbone"), ("epochs", "epochs"),
               ("runs", "runs"), ("baseline_first_s", "in-fit 1st run s"),
               ("featcache_first_s", "featcache 1st run s (extract + head)"),
               ("first_speedup", "speed-up 1st"), ("baseline_second_s", "in-fit 2nd run s"),
               ("featcache_second_s", "featcache 2nd run s (warm cache)"),
               ("second_speedup", "speed-up 2nd"), ("baseline_val_acc", "in-fit val acc"),
               ("featcache_val_acc", "featcache val acc"),
               ("baseline_second_val_acc", "in-fit 2nd val acc"),
               ("featcache_second_val_acc", "featcache 2nd val acc")]
    markdown = (f"# Cached features vs frozen base inside fit\n\n{machine_line(meta)}\n\n"
                f"Medians of {args.runs} runs; wall seconds of whole processes (start-up included). "
                f"First run: dense256 head; second run: a changed head (512 units), for featcache on "
                f"the warm cache.\n\n" + markdown_table(rows, columns))
    write_results(args.name or f"cached_vs_infit_{args.backbone}", meta, rows, markdown)


if __name__ == "__main__":
    main()
