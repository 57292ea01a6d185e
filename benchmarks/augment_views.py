#!/usr/bin/env python3
"""Augmentation at cache speed: heads trained on K cached augmented views per image.

For each dataset and K (0 = no augmentation), `featcache extract
--augment-views K` builds a cache (timed: the cost of augmentation is paid
here, once), then a head trains on it (timed) and is scored on the clean
validation split. Compare with `featcache finetune`, which augments every
epoch but re-runs the backbone each time (RESULTS.md quotes its figures).

    python benchmarks/augment_views.py --data ../shared/data/flowers5 ../shared/data/cats_dogs \
        --views 0 4 8 --image-size 128
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, machine_line, markdown_table, shared_path, write_results  # noqa: E402
from common import process_env, run_json  # noqa: E402

WEIGHTS = "mobilenet_1_0_224_tf_no_top.h5"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", nargs="+", default=[p for p in (
        shared_path("data", "flowers5"), shared_path("data", "cats_dogs")) if p])
    parser.add_argument("--views", type=int, nargs="+", default=[0, 4, 8])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--heads", nargs="+", default=["dense256", "logreg"])
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    if not args.weights_dir:
        raise SystemExit("--weights-dir is required (MobileNet weights file)")

    env = process_env()
    fc = [sys.executable, "-m", "featcache"]
    rows = []
    for data in args.data:
        for k in args.views:
            work = tempfile.mkdtemp(prefix="featcache-views-")
            try:
                cache = os.path.join(work, "cache")
                views = ["--augment-views", str(k)] if k else []
                ex_s, _, ex = run_json([*fc, "extract", "--data", data, "--out", cache, "--backbone",
                                        "mobilenet", "--image-size", str(args.image_size), "--weights",
                                        os.path.join(args.weights_dir, WEIGHTS), *views, "--json"], env)
                for head in args.heads:
                    fit_s, _, summary = run_json([*fc, "train-head", "--cache", cache, "--model", head,
                                                  "--out", os.path.join(work, head), "--json", "--quiet"], env)
                    rows.append({"dataset": os.path.basename(data.rstrip("/")), "views": k,
                                 "train_rows": ex["splits"].get("train"), "head": head,
                                 "extract_s": round(ex_s, 1), "train_head_s": round(fit_s, 1),
                                 "val_accuracy": round(summary["val_accuracy"], 4)})
                    print(rows[-1], flush=True)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    meta = {"machine": machine(), "image_size": args.image_size,
            "command": " ".join(["python", *sys.argv])}
    columns = [("dataset", "dataset"), ("views", "K views"), ("train_rows", "train rows"),
               ("head", "head"), ("extract_s", "extract s"), ("train_head_s", "train-head s"),
               ("val_accuracy", "val accuracy (clean val)")]
    text = (f"# Augmentation at cache speed (MobileNet {args.image_size} px, avg pooling)\n\n"
            f"{machine_line(meta)}\n\nCommand: `{meta['command']}`\n\nOne run each (whole "
            f"processes, start-up included); heads with their defaults, seed 0.\n\n"
            + markdown_table(rows, columns))
    write_results(args.name or "augment_views", meta, rows, text)


if __name__ == "__main__":
    main()
