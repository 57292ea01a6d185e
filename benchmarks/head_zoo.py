#!/usr/bin/env python3
"""Head zoo: `featcache compare` on each dataset, with the library code the command uses.

For each dataset, features are extracted once (or the cache reused), then
`featcache.selection.compare_heads` runs --runs times: every head that fits,
model selection on the training split only (folds grouped by image, linear
heads' regularisation searched, Keras heads' epochs from the held-out folds),
each final head scored once on val. Reported per head: the setting chosen,
out-of-fold accuracy on train, validation accuracy / macro-F1 / log loss /
ECE (identical across runs: everything is seeded), median seconds (selection
+ final fit), median prediction time per 1,000 rows and the model's bytes;
per dataset: the winner and the comparison's wall time (median of the runs).

    python benchmarks/head_zoo.py --data ../shared/data/hymenoptera --configs mobilenet:avg --runs 3
    python benchmarks/head_zoo.py --data ../shared/data/hymenoptera ../shared/data/cats_dogs \
        ../shared/data/flowers5 ../shared/data/cifar10_small --configs mobilenet:avg --runs 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, machine, machine_line, markdown_table, median, shared_path, write_results  # noqa: E402

from featcache.extract import ExtractOptions, extract  # noqa: E402
from featcache.selection import compare_heads  # noqa: E402


def cache_for(data: str, backbone: str, pooling: str, weights_dir: str | None, root: str) -> str:
    name = f"{os.path.basename(data.rstrip('/'))}-{backbone}-{pooling}"
    out = os.path.join(root, name)
    extract(ExtractOptions(data=data, out=out, backbone=backbone, pooling=pooling,
                           weights_dir=weights_dir, progress=False))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", nargs="+", default=[p for p in (
        shared_path("data", "hymenoptera"), shared_path("data", "cats_dogs"),
        shared_path("data", "flowers5"), shared_path("data", "cifar10_small")) if p])
    parser.add_argument("--configs", nargs="+", default=["mobilenet:avg"],
                        help="backbone:pooling pairs, e.g. mobilenet:avg vgg16:avg vgg16:none")
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--heads", nargs="+", default=None, help="default: every head that fits")
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache-root", default=os.path.join(tempfile.gettempdir(), "featcache-bench"))
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    rows, summaries = [], []
    configs = [tuple(c.split(":")) for c in args.configs]
    for data, (backbone, pooling) in [(d, c) for c in configs for d in args.data]:
        dataset = os.path.basename(data.rstrip("/"))
        cache = cache_for(data, backbone, pooling, args.weights_dir, args.cache_root)
        results, cpu = [], []
        for run in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                before = time.process_time()
                results.append(compare_heads(cache, heads=args.heads, out=os.path.join(tmp, "c"),
                                             cv=args.cv, calibrate=args.calibrate))
                cpu.append(time.process_time() - before)
            print(f"{dataset} run {run + 1}: winner {results[-1].winner} in {results[-1].seconds:.1f} s "
                  f"({cpu[-1]:.1f} CPU s)", flush=True)
        last = results[-1]
        for r in last.rows:
            if r["status"] != "ok":
                continue
            same = [next(x for x in res.rows if x["head"] == r["head"]) for res in results]
            rows.append({"dataset": dataset, "backbone": backbone, "pooling": pooling,
                         "rank": r["rank"], "head": r["head"],
                         "chosen": " ".join(f"{k}={v}" for k, v in r["selected"].items()),
                         "cv_accuracy": r["cv_accuracy"], "val_accuracy": r["val_accuracy"],
                         "val_macro_f1": r["val_macro_f1"], "val_log_loss": r["val_log_loss"],
                         "val_ece": r["val_ece"],
                         "fit_seconds": round(median([x["fit_seconds"] for x in same]), 2),
                         "predict_ms_per_1000": round(median([x["predict_ms_per_1000"] for x in same]), 1),
                         "model_bytes": r["model_bytes"]})
        winner = next(r for r in last.rows if r.get("winner"))
        summaries.append({"dataset": dataset, "backbone": backbone, "pooling": pooling,
                          "winner": last.winner, "winner_val_accuracy": winner["val_accuracy"],
                          "best_val_accuracy": max(r["val_accuracy"] for r in last.rows
                                                   if r["status"] == "ok"),
                          "compare_seconds_median": round(median([x.seconds for x in results]), 1),
                          "compare_seconds_runs": " / ".join(f"{x.seconds:.1f}" for x in results),
                          "compare_cpu_seconds_median": round(median(cpu), 1),
                          "load_average_1min": round(os.getloadavg()[0], 1),
                          "winners_agree": len({x.winner for x in results}) == 1})

    meta = {"machine": machine(), "runs": args.runs, "cv": args.cv,
            "command": " ".join(["python", *sys.argv]), "summaries": summaries}
    columns = [("dataset", "dataset"), ("backbone", "backbone"), ("pooling", "pooling"),
               ("rank", "rank (cv)"), ("head", "head"), ("chosen", "chosen on train"),
               ("cv_accuracy", "cv accuracy (train)"), ("val_accuracy", "val accuracy"),
               ("val_macro_f1", "val macro-F1"), ("val_log_loss", "val log loss"),
               ("val_ece", "val ECE"), ("fit_seconds", "s (selection + fit, median)"),
               ("predict_ms_per_1000", "predict ms / 1000 rows"), ("model_bytes", "model bytes")]
    summary_columns = [("dataset", "dataset"), ("backbone", "backbone"), ("pooling", "pooling"),
                       ("winner", "winner (chosen on train)"), ("winner_val_accuracy", "winner val"),
                       ("best_val_accuracy", "best val of any head"),
                       ("compare_seconds_median", "compare s (median)"),
                       ("compare_seconds_runs", "runs (s)"),
                       ("compare_cpu_seconds_median", "CPU s (median, both cores)"),
                       ("load_average_1min", "load average after"),
                       ("winners_agree", "same winner every run")]
    name = args.name or "head_zoo_" + "_".join(c.replace(":", "-") for c in args.configs)
    chart = _chart(rows, RESULTS / f"{name}.png")
    text = (f"# Head zoo: featcache compare on {', '.join(args.configs)} features, seed 0\n\n"
            f"{machine_line(meta)}\n\nCommand: `{meta['command']}`\n\n"
            f"Selection on the training split only ({args.cv} folds grouped by image); the val "
            "columns score each final head once and chose nothing.\n\n"
            + markdown_table(summaries, summary_columns) + "\n## Every head\n\n"
            + markdown_table(rows, columns)
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
