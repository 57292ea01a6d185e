#!/usr/bin/env python3
"""Head zoo: every head, default options, on the same cached features.

For each dataset, features are extracted once (or the cache reused), then
every head is trained with its defaults (seed 0) --runs times. Reported:
validation accuracy (identical across runs: training is seeded), median fit
seconds, median prediction time per 1,000 rows, and the model file's bytes.

    python benchmarks/head_zoo.py --data ../shared/data/hymenoptera ../shared/data/cats_dogs \
        ../shared/data/flowers5 ../shared/data/cifar10_small --configs mobilenet:avg \
        --weights-dir ../shared/weights
    python benchmarks/head_zoo.py --data ../shared/data/hymenoptera --configs vgg16:avg vgg16:none
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, machine, machine_line, markdown_table, median, shared_path, write_results  # noqa: E402

import featcache  # noqa: E402
from featcache.artifacts import load_head  # noqa: E402
from featcache.extract import ExtractOptions, extract  # noqa: E402
from featcache.heads import list_heads  # noqa: E402
from featcache.train import train_head  # noqa: E402


def cache_for(data: str, backbone: str, pooling: str, weights_dir: str | None, root: str) -> str:
    name = f"{os.path.basename(data.rstrip('/'))}-{backbone}-{pooling}"
    out = os.path.join(root, name)
    extract(ExtractOptions(data=data, out=out, backbone=backbone, pooling=pooling,
                           weights_dir=weights_dir, progress=False))
    return out


def predict_ms_per_1000(head, features: np.ndarray, repeats: int = 5) -> float:
    rows = np.resize(features, (1000, *features.shape[1:]))
    head.predict_proba(rows[:10])  # warm-up (Keras traces its predict function once)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        head.predict_proba(rows)
        times.append(time.perf_counter() - start)
    return 1000 * median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", nargs="+", default=[p for p in (
        shared_path("data", "hymenoptera"), shared_path("data", "cats_dogs"),
        shared_path("data", "flowers5"), shared_path("data", "cifar10_small")) if p])
    parser.add_argument("--configs", nargs="+", default=["mobilenet:avg"],
                        help="backbone:pooling pairs, e.g. mobilenet:avg vgg16:avg vgg16:none")
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--heads", nargs="+", default=list_heads())
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache-root", default=os.path.join(tempfile.gettempdir(), "featcache-bench"))
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    rows = []
    configs = [tuple(c.split(":")) for c in args.configs]
    for data, (backbone, pooling) in [(d, c) for c in configs for d in args.data]:
        dataset = os.path.basename(data.rstrip("/"))
        cache = cache_for(data, backbone, pooling, args.weights_dir, args.cache_root)
        val = featcache.load_features(cache, "val", dtype="float32")
        n_classes = len(val.class_names)
        for name in args.heads:
            if name == "sigmoid" and n_classes != 2:
                continue
            seconds, accuracy = [], None
            with tempfile.TemporaryDirectory() as tmp:
                for run in range(args.runs):
                    summary = train_head(cache, name, os.path.join(tmp, f"{name}-{run}"),
                                         progress=False)
                    seconds.append(summary.seconds)
                    accuracy = summary.val_accuracy
                head, config, _ = load_head(summary.out)
                model_bytes = os.path.getsize(os.path.join(summary.out, config["model_file"]))
                latency = predict_ms_per_1000(head, val.features)
            rows.append({"dataset": dataset, "backbone": backbone, "pooling": pooling,
                         "head": name, "val_accuracy": round(accuracy, 4),
                         "fit_seconds": round(median(seconds), 2),
                         "predict_ms_per_1000": round(latency, 1), "model_bytes": model_bytes,
                         "epochs_run": summary.notes.get("epochs_run", "")})
            print(rows[-1], flush=True)

    meta = {"machine": machine(), "runs": args.runs, "command": " ".join(["python", *sys.argv])}
    columns = [("dataset", "dataset"), ("backbone", "backbone"), ("pooling", "pooling"),
               ("head", "head"), ("val_accuracy", "val accuracy"), ("fit_seconds", "fit s (median)"),
               ("predict_ms_per_1000", "predict ms / 1000 rows"), ("model_bytes", "model bytes"),
               ("epochs_run", "epochs run")]
    best = [max(group, key=lambda r: (r["val_accuracy"], -r["fit_seconds"]))
            for group in _groups(rows, "dataset")]
    name = args.name or "head_zoo_" + "_".join(c.replace(":", "-") for c in args.configs)
    chart = _chart(rows, RESULTS / f"{name}.png")
    text = (f"# Head zoo: {', '.join(args.configs)} features, default options, seed 0\n\n"
            f"{machine_line(meta)}\n\nCommand: `{meta['command']}`\n\n" + markdown_table(rows, columns)
            + "\n## Best head per dataset (ties: the faster)\n\n" + markdown_table(best, columns)
            + f"\n![accuracy against fit time]({os.path.basename(chart)})\n")
    write_results(name, meta, rows, text)


def _groups(rows, key):
    seen = {}
    for row in rows:
        seen.setdefault(row[key], []).append(row)
    return list(seen.values())


def _chart(rows, path):
    """Validation accuracy against fit seconds (log scale), one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(rows, "dataset")
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 4), squeeze=False)
    for ax, group in zip(axes[0], groups):
        for config in _groups(group, "backbone"):
            for sub in _groups(config, "pooling"):
                label = f"{sub[0]['backbone']} {sub[0]['pooling']}"
                ax.scatter([r["fit_seconds"] for r in sub], [r["val_accuracy"] for r in sub], label=label)
                for r in sub:
                    ax.annotate(r["head"], (r["fit_seconds"], r["val_accuracy"]), fontsize=7,
                                xytext=(3, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_title(group[0]["dataset"])
        ax.set_xlabel("fit seconds (log)")
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)

if __name__ == "__main__":
    main()
