#!/usr/bin/env python3
"""Exports against `featcache predict`: top-1 agreement, probability differences, file size and
export time per format (.keras, ONNX, TFLite float32 / float16 / dynamic int8).

A MobileNet cache of the dataset is extracted once, dense256 and logreg heads
are trained on it, and each is exported in every format; each export's own
parity check (the written file run by onnxruntime or the TFLite interpreter,
against predict on the same decoded pixels) scores the validation images.

    python benchmarks/export_parity.py --data ../shared/data/hymenoptera
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, machine_line, markdown_table, shared_path, write_results  # noqa: E402

FORMATS = [("keras", "none"), ("onnx", "none"), ("tflite", "none"), ("tflite", "float16"),
           ("tflite", "dynamic-int8")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=shared_path("data", "hymenoptera"))
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--heads", nargs="+", default=["dense256", "logreg"])
    parser.add_argument("--check-count", type=int, default=200)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "featcache-bench-export"))
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    from featcache import api

    dataset = os.path.basename(args.data.rstrip("/"))
    cache = os.path.join(args.work, f"{dataset}-mobilenet")
    api.extract(args.data, cache, backbone="mobilenet", weights_dir=args.weights_dir,
                progress=False)
    rows = []
    for head in args.heads:
        folder = os.path.join(args.work, f"head-{dataset}-{head}")
        trained = api.train_head(cache, head, folder)
        for fmt, quantize in FORMATS:
            out = os.path.join(args.work, f"{dataset}-{head}-{quantize}.{fmt}")
            start = time.perf_counter()
            info = api.export(folder, out, format=fmt, quantize=quantize, force=True,
                              check_count=args.check_count, weights_dir=args.weights_dir)
            p = info["parity"]
            rows.append({"dataset": dataset, "head": head,
                         "val_accuracy": round(trained.summary_.val_accuracy, 4),
                         "format": fmt, "quantize": quantize, "images": p["count"],
                         "agreeing": p["agreeing"], "agreement": round(p["agreement"], 4),
                         "max_abs_difference": float(f"{p['max_abs_difference']:.3g}"),
                         "file_mb": round(os.path.getsize(out) / 2**20, 2),
                         "export_and_check_s": round(time.perf_counter() - start, 1)})
            print(rows[-1], flush=True)
    meta = {"machine": machine(), "command": " ".join(["python", *sys.argv])}
    columns = [("dataset", "dataset"), ("head", "head"), ("val_accuracy", "head val accuracy"),
               ("format", "format"), ("quantize", "quantize"), ("images", "images checked"),
               ("agreeing", "top-1 agree"), ("agreement", "agreement"),
               ("max_abs_difference", "largest probability difference"), ("file_mb", "MB"),
               ("export_and_check_s", "export + check s")]
    text = (f"# Exports against featcache predict ({dataset}, MobileNet 224 px)\n\n"
            f"{machine_line(meta)}\n\nCommand: `{meta['command']}`\n\nEach export's own parity "
            "check: the written file run by its runtime (Keras safe mode, onnxruntime, the "
            "TFLite interpreter) and featcache predict on the same decoded validation images.\n\n"
            + markdown_table(rows, columns))
    write_results(args.name or f"export_parity_{dataset}", meta, rows, text)


if __name__ == "__main__":
    main()
