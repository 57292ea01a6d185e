#!/usr/bin/env python3
"""`featcache demo` as a new user meets it: total time, best head, the time-saved estimate.

Runs `featcache demo --json` in a fresh output folder several times (whole
processes, so every run loads Keras, builds the model and extracts from
scratch) and records the demo's own total-time line, the whole process's
wall time, the extraction, the leaderboard and the time-saved estimate.
Then an unbiased accuracy check of the winner: the demo's classes are chosen
on the sample itself, so the winner of the last run also predicts CIFAR-10
validation images of the same classes that the sample does not contain
(`--heldout`, e.g. ../shared/data/cifar10_small: its val files after the
first 25 of each class).

    flock /work/bench.lock python benchmarks/demo_time.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, median, process_env, run_json, shared_path, write_results  # noqa: E402


def heldout_accuracy(winner_dir: str, source: str, classes: list[str], skip: int, env) -> dict:
    """Accuracy of the winner on val images of `classes` in `source` after the first `skip`."""
    folder = tempfile.mkdtemp(prefix="demo-heldout-")
    try:
        truth = {}
        for name in classes:
            for image in sorted((Path(source) / "val" / name).iterdir())[skip:]:
                target = Path(folder) / f"{name}_{image.name}"
                shutil.copyfile(image, target)
                truth[target.name] = name
        _, _, rows = run_json([sys.executable, "-m", "featcache", "predict", "--model", winner_dir,
                               folder, "--json"], env)
        hits = [os.path.basename(r["path"]) in truth and r.get("label") == truth[os.path.basename(r["path"])]
                for r in rows]
        return {"images": len(truth), "accuracy": round(sum(hits) / len(truth), 4)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--heldout", default=shared_path("data", "cifar10_small"),
                        help="CIFAR-10 folder for the held-out check (val/<class>/...)")
    parser.add_argument("--name", default="demo_time")
    args = parser.parse_args()
    env = process_env()
    if args.weights_dir:
        env["FEATCACHE_WEIGHTS_DIR"] = args.weights_dir
    from featcache.hardware import cpu_info

    meta = {"machine": machine(), "cpu": cpu_info().to_json(), "runs": args.runs,
            "command": " ".join(sys.argv)}
    rows, last = [], None
    work = tempfile.mkdtemp(prefix="demo-time-")
    try:
        for run in range(args.runs):
            out = os.path.join(work, f"run{run}")
            wall, rss, summary = run_json([sys.executable, "-m", "featcache", "demo", "--out", out,
                                           "--json"], env)
            saved = summary["time_saved"] or {}
            rows.append({"run": run, "demo_total_s": summary["seconds"], "process_wall_s": round(wall, 1),
                         "extract_s": summary["extract_seconds"],
                         "load_keras_s": summary["extract"]["timing"].get("load_keras"),
                         "compare_s": summary["compare"]["seconds"], "best_head": summary["best_head"],
                         "best_val_accuracy": summary["best_val_accuracy"],
                         "heads_s": saved.get("heads_seconds"),
                         "in_fit_estimate_s": saved.get("in_fit_seconds_estimate"),
                         "backbone_img_s": saved.get("backbone_images_per_second"),
                         "peak_rss_mib": round(rss)})
            print(rows[-1], flush=True)
            last = summary
        leaderboard = last["leaderboard"]
        classes = sorted({p["true_label"] for p in last["predictions"]} | set(
            json.load(open(os.path.join(last["cache"], "manifest.json")))["class_names"]))
        heldout = (heldout_accuracy(last["winner_dir"], args.heldout, classes, 25, env)
                   if args.heldout else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta.update(leaderboard=leaderboard, heldout=heldout,
                median_demo_total_s=median([r["demo_total_s"] for r in rows]),
                median_process_wall_s=median([r["process_wall_s"] for r in rows]))
    text = (f"# featcache demo: total time, best head, time saved\n\n{machine_line(meta)}\n"
            f"CPU flags: {' '.join(meta['cpu']['flags'])}. No GPU. `featcache demo --json` in a "
            f"fresh folder, whole processes, {args.runs} runs.\n\nCommand: `{meta['command']}`\n\n"
            f"Median demo total (its own `total:` line): **{meta['median_demo_total_s']:.1f} s**; "
            f"whole process: {meta['median_process_wall_s']:.1f} s.\n\n"
            + markdown_table(rows, [(k, k) for k in rows[0]])
            + "\n## Leaderboard of the last run\n\n"
            + markdown_table(leaderboard, [(k, k) for k in ("rank", "head", "cv_accuracy",
                                                             "val_accuracy", "fit_seconds", "epochs_run")]))
    if heldout:
        text += (f"\n## Held-out check\n\nThe last run's winner ({last['best_head']}) on "
                 f"{heldout['images']} CIFAR-10 val images of the same classes that the sample "
                 f"does not hold: accuracy **{heldout['accuracy']:.4f}**.\n")
    write_results(args.name, meta, rows, text)


if __name__ == "__main__":
    main()
