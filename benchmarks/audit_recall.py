#!/usr/bin/env python3
"""`featcache audit` against planted problems: leaks across splits, flipped labels, clean sets.

For each dataset (default hymenoptera and cats_dogs), a copy of the folder is
made with known problems planted in it:

* leaks: training images copied into val under their own class, a third
  byte-identical, a third re-encoded at a lower JPEG quality (55-75), a third
  resized to 50-80 % of their size and re-encoded;
* label flips: about 1 % of the training images (none of the leaked ones)
  moved into another class's folder.

The clean folder and the planted copy are extracted once (MobileNet, real
weights), then `featcache audit` (the command, a whole process) runs on both.
Reported: recall of planted leaks (a cross-split finding pairing the copy with
its source), per kind of copy; recall of planted flips within the top 2 % of
the training split's self-confidence ranking (and the top 5 %); the findings on
the clean set (each a false positive unless it is a real duplicate: the
clean set's own cross-split pairs are listed for a look); the audit's
seconds (median of --runs). A threshold sweep shows, for the planted copies
and for every clean val image, the cosine similarity to the nearest training
image: where the default threshold sits between the two.

    python benchmarks/audit_recall.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (machine, machine_line, markdown_table, median, process_env, run_json,  # noqa: E402
                    shared_path, write_results)

IMAGE_EXT = (".jpg", ".jpeg", ".png")


def _files(root: str, split: str) -> dict[str, list[str]]:
    base = os.path.join(root, split)
    return {c: sorted(f for f in os.listdir(os.path.join(base, c)) if f.lower().endswith(IMAGE_EXT))
            for c in sorted(os.listdir(base)) if os.path.isdir(os.path.join(base, c))}


def plant(data: str, out: str, leaks: int, flip_fraction: float, seed: int) -> dict:
    """Copy `data` to `out` with planted leaks and flips; returns what was planted."""
    from PIL import Image

    rng = random.Random(seed)
    shutil.copytree(data, out)
    train = _files(out, "train")
    pool = [(c, f) for c, names in train.items() for f in names]
    rng.shuffle(pool)
    n_flips = max(2, round(flip_fraction * len(pool)))
    leaked, flipped = pool[:leaks], pool[leaks:leaks + n_flips]
    planted = {"leaks": [], "flips": []}
    for i, (cls, name) in enumerate(leaked):
        src = os.path.join(out, "train", cls, name)
        kind = ("identical", "reencoded", "resized")[i % 3]
        dst_rel = f"val/{cls}/planted_leak_{i:03d}.jpg"
        dst = os.path.join(out, dst_rel)
        if kind == "identical":
            shutil.copyfile(src, dst)
            if not name.lower().endswith((".jpg", ".jpeg")):
                dst_rel = dst_rel[:-4] + os.path.splitext(name)[1]
                os.replace(dst, os.path.join(out, dst_rel))
        else:
            with Image.open(src) as img:
                img = img.convert("RGB")
                if kind == "resized":
                    scale = rng.uniform(0.5, 0.8)
                    img = img.resize((max(8, int(img.width * scale)), max(8, int(img.height * scale))),
                                     Image.LANCZOS)
                img.save(dst, "JPEG", quality=rng.randint(55, 75) if kind == "reencoded" else 85)
        planted["leaks"].append({"kind": kind, "source": f"train/{cls}/{name}", "copy": dst_rel})
    classes = sorted(train)
    for cls, name in flipped:
        other = rng.choice([c for c in classes if c != cls])
        new_rel = f"train/{other}/{name}"
        os.replace(os.path.join(out, "train", cls, name), os.path.join(out, new_rel))
        planted["flips"].append({"path": new_rel, "true": cls, "given": other})
    return planted


def extract(data: str, cache: str, weights_dir: str, env: dict) -> None:
    if os.path.isfile(os.path.join(cache, "manifest.json")):
        return
    run_json(["featcache", "extract", "--data", data, "--out", cache, "--backbone", "mobilenet",
              "--weights-dir", weights_dir, "--json"], env)


def audit(cache: str, out: str, env: dict, runs: int, extra: list[str] = ()) -> tuple[list[float], dict]:
    seconds, result = [], None
    for _ in range(runs):
        wall, _, result = run_json(["featcache", "audit", cache, "--out", out, "--json",
                                    "--top", "100000", *extra], env)
        seconds.append(wall)
    return seconds, result


def _norm(path: str) -> str:
    return path.replace(os.sep, "/")


def leak_recall(findings: list[dict], planted: list[dict]) -> dict[str, tuple[int, int]]:
    pairs = set()
    for f in findings:
        if f["kind"].startswith("cross-split"):
            paths = [_norm(i["path"]) for i in f["images"]]
            pairs.update((a, b) for a in paths for b in paths if a != b)
    out: dict[str, list[int]] = {}
    for leak in planted:
        hit = (leak["source"], leak["copy"]) in pairs
        out.setdefault(leak["kind"], [0, 0])
        out[leak["kind"]][0] += hit
        out[leak["kind"]][1] += 1
    return {k: tuple(v) for k, v in out.items()}


def nearest_similarities(cache: str) -> tuple[dict[str, float], np.ndarray]:
    """Cosine similarity of every val image to its nearest train image (different bytes)."""
    from featcache.cache import FeatureCache
    from featcache.data_audit.vectors import load_rows

    rows = load_rows(FeatureCache(cache))
    train, val = rows.rows_of("train"), rows.rows_of("val")
    sims = rows.vectors[val] @ rows.vectors[train].T
    same = rows.hashes[val][:, None] == rows.hashes[train][None, :]
    sims[same] = -1.0
    best = sims.max(axis=1)
    return {_norm(rows.paths[v]): float(s) for v, s in zip(val, best)}, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=[shared_path("data", "hymenoptera"),
                                                  shared_path("data", "cats_dogs")])
    ap.add_argument("--weights-dir", default=shared_path("weights"))
    ap.add_argument("--leaks", type=int, nargs="+", default=[15, 30],
                    help="planted leaks per dataset (in --data order)")
    ap.add_argument("--flip-fraction", type=float, default=0.01)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=1,
                    help="planted copies per dataset (seeds 0..N-1), each extracted and audited")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "audit_recall"))
    ap.add_argument("--name", default="audit_recall")
    args = ap.parse_args()
    env = process_env()
    os.makedirs(args.work, exist_ok=True)
    rows, sweep, extra, by_threshold = [], [], {}, {}
    thresholds = (0.85, 0.88, 0.90, 0.92, 0.95)
    for data, n_leaks, seed in [(d, n, s) for d, n in zip(args.data, args.leaks) for s in range(args.seeds)]:
        name = os.path.basename(os.path.normpath(data))
        planted_dir = os.path.join(args.work, f"{name}_planted_s{seed}")
        if not os.path.isdir(planted_dir):
            planted = plant(data, planted_dir, n_leaks, args.flip_fraction, seed)
            with open(planted_dir + ".json", "w") as fh:
                json.dump(planted, fh, indent=1)
        with open(planted_dir + ".json") as fh:
            planted = json.load(fh)
        clean_cache = os.path.join(args.work, f"{name}_clean_cache")
        planted_cache = planted_dir + "_cache"
        extract(data, clean_cache, args.weights_dir, env)
        extract(planted_dir, planted_cache, args.weights_dir, env)

        clean_s, clean = audit(clean_cache, os.path.join(args.work, f"{name}_clean_audit"), env, args.runs)
        planted_s, found = audit(planted_cache, planted_dir + "_audit", env, args.runs)
        recall = leak_recall(found["findings"], planted["leaks"])
        with open(os.path.join(planted_dir + "_audit", "label_ranking.csv")) as fh:
            import csv

            ranking = [_norm(r["path"]) for r in csv.DictReader(fh)]
        flips = [f["path"] for f in planted["flips"]]
        position = {p: i for i, p in enumerate(ranking)}
        top2 = max(1, int(np.ceil(0.02 * len(ranking))))
        top5 = max(1, int(np.ceil(0.05 * len(ranking))))
        ranks = sorted(position[p] + 1 for p in flips)
        hits2 = sum(r <= top2 for r in ranks)
        hits5 = sum(r <= top5 for r in ranks)
        leaks_found = sum(v[0] for v in recall.values())
        clean_cross = clean["counts"]["cross-split-exact"] + clean["counts"]["cross-split-near"]
        val_count = found["images"].get("val", 0)
        row = {
            "dataset": name, "seed": seed, "train": found["images"]["train"], "val": val_count,
            "leaks_planted": len(planted["leaks"]), "leaks_found": leaks_found,
            "leak_recall": round(leaks_found / len(planted["leaks"]), 3),
            **{f"recall_{k}": f"{v[0]}/{v[1]}" for k, v in sorted(recall.items())},
            "flips_planted": len(flips), "top2pct_slots": top2,
            "flips_in_top2pct": hits2, "flip_recall_top2pct": round(hits2 / len(flips), 3),
            "flips_in_top5pct": hits5, "flip_ranks": " ".join(map(str, ranks)),
            "clean_cross_split_findings": clean_cross,
            "clean_cross_split_rate": round(clean_cross / max(1, clean["images"].get("val", 1)), 4),
            "clean_within_split_findings": clean["counts"]["exact-duplicate"] + clean["counts"]["near-duplicate"],
            "planted_extra_cross_split": sum(f["kind"].startswith("cross-split") for f in found["findings"]) - leaks_found,
            "clean_label_issues": clean["counts"]["label-issue"], "clean_outliers": clean["counts"]["outlier"],
            "audit_seconds_planted": round(median(planted_s), 2),
            "audit_seconds_clean": round(median(clean_s), 2),
            "audit_inner_seconds": found["seconds"],
        }
        rows.append(row)
        extra[f"{name}_s{seed}"] = {"clean_cross_split": [f for f in clean["findings"] if f["kind"].startswith("cross-split")][:20],
                       "clean_within_split": [f for f in clean["findings"] if "duplicate" in f["kind"]][:20]}
        # where the threshold sits: planted copies' similarity to their source vs clean val images
        planted_sims, _ = nearest_similarities(planted_cache)
        _, clean_best = nearest_similarities(clean_cache)
        copies = [planted_sims[leak["copy"]] for leak in planted["leaks"] if leak["kind"] != "identical"]
        for t in thresholds:
            hits = sum(v >= t for v in copies)
            by_threshold.setdefault((name, t), [0, 0, int((clean_best >= t).sum()), len(clean_best)])
            by_threshold[(name, t)][0] += hits
            by_threshold[(name, t)][1] += len(copies)
        if seed:
            continue
        for kind in ("reencoded", "resized"):
            values = [planted_sims[leak["copy"]] for leak in planted["leaks"] if leak["kind"] == kind]
            sweep.append({"dataset": name, "images": f"planted {kind} copies", "n": len(values),
                          "min": round(min(values), 4), "median": round(float(np.median(values)), 4),
                          "max": round(max(values), 4)})
        sweep.append({"dataset": name, "images": "clean val images (nearest train image)",
                      "n": len(clean_best), "min": round(float(clean_best.min()), 4),
                      "median": round(float(np.median(clean_best)), 4),
                      "max": round(float(clean_best.max()), 4),
                      "p99": round(float(np.quantile(clean_best, 0.99)), 4)})
    meta = {"machine": machine(), "args": vars(args), "clean_set_pairs": extra}
    for name in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == name]
        if len(mine) > 1:
            flips = sum(r["flips_planted"] for r in mine)
            leaks = sum(r["leaks_planted"] for r in mine)
            rows.append({"dataset": f"**{name}, {len(mine)} seeds**", "seed": "all",
                         "leaks_planted": leaks,
                         "leak_recall": round(sum(r["leaks_found"] for r in mine) / leaks, 3),
                         "flips_planted": flips, "flips_in_top2pct": sum(r["flips_in_top2pct"] for r in mine),
                         "flip_recall_top2pct": round(sum(r["flips_in_top2pct"] for r in mine) / flips, 3),
                         "flips_in_top5pct": sum(r["flips_in_top5pct"] for r in mine)})
    threshold_rows = [{"dataset": name, "threshold": t,
                       "near_copies_found": f"{v[0]}/{v[1]}",
                       "clean_val_images_flagged": f"{v[2]}/{v[3]}"}
                      for (name, t), v in by_threshold.items()]
    columns = [("dataset", "dataset"), ("seed", "seed"), ("train", "train"), ("val", "val"),
               ("leak_recall", "leak recall"), ("recall_identical", "identical"),
               ("recall_reencoded", "re-encoded"), ("recall_resized", "resized"),
               ("flips_planted", "flips"), ("flips_in_top2pct", "in top 2 %"),
               ("top2pct_slots", "top 2 % slots"), ("flip_recall_top2pct", "flip recall @2 %"),
               ("flips_in_top5pct", "in top 5 %"), ("flip_ranks", "flip ranks"),
               ("clean_cross_split_findings", "clean: cross-split"),
               ("clean_within_split_findings", "clean: within-split"),
               ("planted_extra_cross_split", "planted: other cross-split"),
               ("audit_seconds_planted", "audit s (process)"), ("audit_inner_seconds", "audit s (inner)")]
    for r in rows:
        for key, _ in columns:
            r.setdefault(key, "-")
    sweep_cols = [("dataset", "dataset"), ("images", "images"), ("n", "n"), ("min", "min"),
                  ("median", "median"), ("max", "max")]
    for s in sweep:
        s.setdefault("p99", "-")
    md = (f"# featcache audit against planted problems\n\n{machine_line(meta)}\n\n"
          + markdown_table(rows, columns)
          + "\nCosine similarity to the nearest training image (different bytes):\n\n"
          + markdown_table(sweep, sweep_cols + [("p99", "99th pct")])
          + "\nThresholds: re-encoded and resized planted copies found (every seed), and clean val "
            "images whose nearest training image is at least that similar (false leaks):\n\n"
          + markdown_table(threshold_rows, [("dataset", "dataset"), ("threshold", "threshold"),
                                            ("near_copies_found", "near copies found"),
                                            ("clean_val_images_flagged", "clean val images flagged")]))
    write_results(args.name, meta, rows + [{"sweep": s} for s in sweep]
                  + [{"threshold_sweep": t} for t in threshold_rows], md)


if __name__ == "__main__":
    main()
