#!/usr/bin/env python3
"""Calibration: validation ECE and log loss of heads trained with and without --calibrate.

For each dataset, features are extracted once (or the cache reused); each head
is trained by `featcache.train.train_head` with its defaults (seed 0), once
plain and once with `calibrate=True` (temperature scaling fitted on held-out
training folds grouped by image; scikit-learn heads through
CalibratedClassifierCV). Reported on the validation split: accuracy, ECE
(15 equal-width bins, top label) and log loss before and after, and the
temperature.

    python benchmarks/calibration.py --data ../shared/data/cats_dogs --heads dense256 logreg linear-svm
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, machine_line, markdown_table, shared_path, write_results  # noqa: E402

from featcache.extract import ExtractOptions, extract  # noqa: E402
from featcache.train import train_head  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", nargs="+", default=[p for p in (shared_path("data", "cats_dogs"),) if p])
    parser.add_argument("--backbone", default="mobilenet")
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--heads", nargs="+", default=["dense256", "logreg", "linear-svm"])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--cache-root", default=os.path.join(tempfile.gettempdir(), "featcache-bench"))
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    rows = []
    for data in args.data:
        dataset = os.path.basename(data.rstrip("/"))
        cache = os.path.join(args.cache_root, f"{dataset}-{args.backbone}-avg")
        extract(ExtractOptions(data=data, out=cache, backbone=args.backbone, pooling="avg",
                               weights_dir=args.weights_dir, progress=False))
        for head in args.heads:
            with tempfile.TemporaryDirectory() as tmp:
                plain = train_head(cache, head, os.path.join(tmp, "plain"), progress=False)
                calibrated = train_head(cache, head, os.path.join(tmp, "cal"), progress=False,
                                        calibrate=True, calibration_folds=args.folds)
            c = calibrated.metrics["calibration"]
            rows.append({"dataset": dataset, "backbone": args.backbone, "head": head,
                         "val_accuracy": round(plain.metrics["accuracy"], 4),
                         "val_accuracy_calibrated": round(calibrated.metrics["accuracy"], 4),
                         "ece_plain": round(plain.metrics["ece"], 4),
                         "ece_before": round(c["ece_before"], 4), "ece_after": round(c["ece_after"], 4),
                         "log_loss_before": round(c["log_loss_before"], 4),
                         "log_loss_after": round(c["log_loss_after"], 4),
                         "temperature": c["temperature"], "method": c["method"]})
            print(rows[-1], flush=True)

    meta = {"machine": machine(), "folds": args.folds, "command": " ".join(["python", *sys.argv])}
    columns = [("dataset", "dataset"), ("head", "head"), ("val_accuracy", "val accuracy"),
               ("val_accuracy_calibrated", "val accuracy, calibrated"),
               ("ece_before", "val ECE before"), ("ece_after", "val ECE after"),
               ("log_loss_before", "val log loss before"), ("log_loss_after", "val log loss after"),
               ("temperature", "temperature"), ("method", "method")]
    name = args.name or f"calibration_{args.backbone}_" + "_".join(
        os.path.basename(d.rstrip("/")) for d in args.data)
    text = (f"# Calibration: {args.backbone} features, default heads, seed 0\n\n{machine_line(meta)}\n\n"
            f"Command: `{meta['command']}`\n\nTemperature fitted on {args.folds} held-out training "
            "folds grouped by image; the validation split only measures. ECE: 15 equal-width bins "
            "of the top label's confidence.\n\n" + markdown_table(rows, columns))
    write_results(name, meta, rows, text)


if __name__ == "__main__":
    main()
