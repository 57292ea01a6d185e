#!/usr/bin/env python3
"""Multi-label heads on real photos: one sigmoid (or one-vs-rest classifier) per label, against
a softmax over label sets, and tuned thresholds against 0.5.

The task is built from a single-label folder (default flowers5): each image is
one photo (a third of them) or two photos side by side (each centre-cropped to
a 1:2 strip), and its labels are the set of classes shown, so label sets have
one or two labels. Train images come from the folder's train split; val and
test images from disjoint halves of its val split. One multi-label list is
extracted once (MobileNet, real weights), then, on the same features:

* `dense256` and `logreg` (its default C, and C searched by cross-validated mean
  average precision on train) as multi-label heads (`featcache train-head` code):
  thresholds tuned per label on val, scored on test (which nothing tuned on);
* the same at a fixed 0.5 threshold;
* "label powerset": what a user without multi-label support does, a
  single-label logreg whose classes are the label sets, each set's labels then
  predicted (its per-label score: the summed probability of the sets holding it).

    python benchmarks/multilabel.py --data ../shared/data/flowers5 --runs 3
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, machine_line, markdown_table, median, shared_path, write_results  # noqa: E402


def build_task(data: str, out: str, counts: dict[str, int], seed: int, size: int = 224) -> str:
    """Write the mosaic images and their multi-label list; returns the list's path."""
    from PIL import Image, ImageOps

    rng = random.Random(seed)
    pools = {}
    for split in ("train", "val"):
        pools[split] = sorted(
            (cls, os.path.join(data, split, cls, name))
            for cls in sorted(os.listdir(os.path.join(data, split)))
            for name in sorted(os.listdir(os.path.join(data, split, cls))))
    val_pool = pools["val"][:]
    rng.shuffle(val_pool)
    sources = {"train": pools["train"], "val": val_pool[: len(val_pool) // 2],
               "test": val_pool[len(val_pool) // 2:]}
    lines = ["path,labels,split"]
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    for split, n in counts.items():
        pool = sources[split]
        for i in range(n):
            picks = rng.sample(pool, 1 if rng.random() < 1 / 3 else 2)
            canvas = Image.new("RGB", (size, size))
            width = size // len(picks)
            for k, (_, path) in enumerate(picks):
                with Image.open(path) as im:
                    tile = ImageOps.fit(im.convert("RGB"), (width, size))
                canvas.paste(tile, (k * width, 0))
            name = f"images/{split}_{i:05d}.jpg"
            canvas.save(os.path.join(out, name), quality=92)
            lines.append(f"{name},{';'.join(sorted({cls for cls, _ in picks}))},{split}")
    listing = os.path.join(out, "labels.csv")
    with open(listing, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return listing


def powerset_scores(cache, split_train="train") -> dict:
    """A single-label logreg on the label sets; per-label scores are summed set probabilities."""
    from featcache.cache import FeatureCache
    from featcache.heads import create_head

    fc = FeatureCache(cache)
    sets = fc.label_indicator()  # (sets, labels)
    train = fc.read(split_train, dtype="float32")
    start = time.perf_counter()
    head = create_head("logreg").fit(train.features, train.labels)
    seconds = time.perf_counter() - start
    out = {}
    for split in ("val", "test"):
        data = fc.read(split, dtype="float32")
        probs = np.zeros((len(data.labels), len(sets)))
        probs[:, head.classes_] = head.predict_proba(data.features)
        out[split] = (sets[data.labels], probs @ sets, sets[probs.argmax(axis=1)])
    return {"seconds": seconds, **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=shared_path("data", "flowers5"))
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--val", type=int, default=400)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3, help="head seeds (dense256)")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "featcache-bench-multilabel"))
    parser.add_argument("--name", default="multilabel_flowers5_mobilenet")
    parser.add_argument("--compare-heads", default="",
                        help="heads for the compare row (default: every head compare would try)")
    args = parser.parse_args()

    from featcache.extract import ExtractOptions, extract
    from featcache.hardware import cpu_info
    from featcache.metrics import multilabel_metrics
    from featcache.multilabel import DEFAULT_THRESHOLD
    from featcache.train import evaluate, train_head

    task = os.path.join(args.work, "task")
    listing = os.path.join(task, "labels.csv")
    if not os.path.isfile(listing):
        listing = build_task(args.data, task, {"train": args.train, "val": args.val,
                                               "test": args.test}, seed=0)
    cache = os.path.join(args.work, "cache")
    summary = extract(ExtractOptions(data=listing, out=cache, backbone="mobilenet",
                                     weights_dir=args.weights_dir, progress=False))
    from featcache.cache import FeatureCache

    labels = FeatureCache(cache).label_names
    rows = []

    def row(method, head, metrics_test, metrics_val_f1, seconds, seed="-"):
        rows.append({
            "method": method, "head": head, "seed": seed,
            "test_micro_f1": round(metrics_test["micro_f1"], 4),
            "test_macro_f1": round(metrics_test["macro_f1"], 4),
            "test_map": round(metrics_test["mean_average_precision"], 4),
            "test_exact_sets": round(metrics_test["accuracy"], 4),
            "val_micro_f1": round(metrics_val_f1, 4), "fit_seconds": round(seconds, 2)})
        print(rows[-1], flush=True)

    for head, params in (("dense256", {}), ("logreg", {}), ("logreg", {"search": True})):
        label = head + (" (C searched on train, mAP)" if params else "")
        for seed in (range(args.runs) if head == "dense256" else [0]):
            with tempfile.TemporaryDirectory() as tmp:
                s = train_head(cache, head, tmp, params={"seed": seed, **params}, progress=False)
                if params:
                    label = f"logreg (C={s.notes['search']['best']} searched on train, mAP)"
                test = evaluate(tmp, cache, split="test")
            at_half = dict(test, micro_f1=test["micro_f1_at_0.5"], macro_f1=test["macro_f1_at_0.5"],
                           accuracy=test["accuracy_at_0.5"])
            row("multi-label, thresholds tuned on val", label, test, s.metrics["micro_f1"], s.seconds,
                seed)
            row("multi-label, threshold 0.5", label, at_half, s.metrics["micro_f1_at_0.5"], s.seconds,
                seed)
    # what `featcache compare` picks among every head that takes label sets, thresholds tuned on
    # out-of-fold training scores (val untouched by any choice), scored on test
    from featcache.selection import compare_heads

    with tempfile.TemporaryDirectory() as tmp:
        c = compare_heads(cache, heads=args.compare_heads.split(",") if args.compare_heads else None,
                          out=tmp, progress=False)
        test = evaluate(c.winner_dir, cache, split="test")
        won = next(r for r in c.rows if r.get("winner"))
        row(f"featcache compare winner (of {len([r for r in c.rows if r['status'] == 'ok'])} heads, "
            "thresholds tuned on train folds)", f"{c.winner} {won['selected'] or ''}".strip(), test,
            won["val_micro_f1"], c.seconds)
        compared = [{k: r.get(k) for k in ("head", "rank", "selected", "cv_map", "cv_micro_f1",
                                           "val_micro_f1", "val_map", "fit_seconds")}
                    for r in c.rows]
    power = powerset_scores(cache)
    targets, scores, chosen = power["test"]
    ps = multilabel_metrics(targets, scores, np.full(len(labels), DEFAULT_THRESHOLD), labels)
    exact = float(np.mean(np.all(chosen == targets, axis=1)))
    ps_val = multilabel_metrics(*power["val"][:2], np.full(len(labels), DEFAULT_THRESHOLD), labels)
    row("label powerset (softmax over sets), 0.5", "logreg", {**ps, "accuracy": exact},
        ps_val["micro_f1"], power["seconds"])

    # medians over the dense256 seeds
    table = []
    for key in dict.fromkeys((r["method"], r["head"]) for r in rows):
        group = [r for r in rows if (r["method"], r["head"]) == key]
        table.append({"method": key[0], "head": key[1], "runs": len(group), **{
            k: median([g[k] for g in group]) for k in ("test_micro_f1", "test_macro_f1", "test_map",
                                                       "test_exact_sets", "val_micro_f1",
                                                       "fit_seconds")}})
    meta = {"machine": machine(), "cpu": cpu_info().to_json(), "labels": labels,
            "label_sets": FeatureCache(cache).class_names, "compare_leaderboard": compared,
            "images": {"train": args.train, "val": args.val, "test": args.test},
            "extract_seconds": round(float(getattr(summary, "seconds", float("nan"))), 1),
            "command": " ".join(["python", *sys.argv])}
    columns = [("method", "method"), ("head", "head"), ("runs", "runs"),
               ("test_micro_f1", "test micro F1"), ("test_macro_f1", "test macro F1"),
               ("test_map", "test mAP"), ("test_exact_sets", "test exact sets"),
               ("val_micro_f1", "val micro F1"), ("fit_seconds", "fit s")]
    text = (f"# Multi-label heads: {os.path.basename(args.data.rstrip('/'))} photos, one or two per "
            f"image\n\n{machine_line(meta)}\n\nCommand: `{meta['command']}`\n\n"
            f"{args.train} train / {args.val} val / {args.test} test images, labels "
            f"{', '.join(labels)}; MobileNet 224 px, avg pooling. Thresholds are tuned on val; "
            "test is scored once. Medians over head seeds (dense256). Exact sets: the share of "
            "test images whose whole label set is right.\n\n"
            + markdown_table(table, columns)
            + "\n\n`featcache compare` leaderboard (ranked by out-of-fold mAP on train, "
            f"{c.seconds:.0f} s in all):\n\n"
            + markdown_table([r for r in compared if r["rank"]],
                             [("rank", "rank"), ("head", "head"), ("selected", "chosen"),
                              ("cv_map", "cv mAP"), ("cv_micro_f1", "cv micro F1"),
                              ("val_micro_f1", "val micro F1"), ("val_map", "val mAP"),
                              ("fit_seconds", "s")]))
    write_results(args.name, meta, rows, text)


if __name__ == "__main__":
    main()
