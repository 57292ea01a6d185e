#!/usr/bin/env python3
"""Per-call overhead of ways to run the frozen feature model on in-memory batches.

The extraction loop calls the model once per batch. This times, on the same
fixed batches (no decoding), `model.predict_on_batch` (what featcache uses),
`model.predict` on one batch, a direct eager call `model(x)`, and on the
TensorFlow backend a `tf.function` of the call, at each precision. Medians of
--runs passes over --batches batches of 32, after one warm-up pass.

    python benchmarks/inference_overhead.py --backbones mobilenet vgg16 --precisions float32 bfloat16
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, median, shared_path, write_results  # noqa: E402

WEIGHT_FILES = {"mobilenet": "mobilenet_1_0_224_tf_no_top.h5",
                "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--backbones", nargs="+", default=["mobilenet", "vgg16"])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--name", default="inference_overhead")
    args = parser.parse_args()
    import keras

    from featcache.feature_model import build_feature_extractor
    from featcache.hardware import cpu_info

    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (args.batch_size, 224, 224, 3)).astype(np.float32)
               for _ in range(args.batches)]
    rows = []
    for backbone in args.backbones:
        weights = os.path.join(args.weights_dir, WEIGHT_FILES[backbone])
        reference = None
        for precision in args.precisions:
            ex = build_feature_extractor(backbone, 224, weights=weights, precision=precision)
            model = ex.model
            ways = {"predict_on_batch": lambda x: np.asarray(model.predict_on_batch(x)),
                    "predict": lambda x: np.asarray(model.predict(x, batch_size=len(x), verbose=0)),
                    "eager call": lambda x: keras.ops.convert_to_numpy(model(x, training=False))}
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                compiled = tf.function(lambda x: model(x, training=False))
                ways["tf.function"] = lambda x: compiled(x).numpy()
            for way, call in ways.items():
                out = [call(b) for b in batches]  # warm-up, and the outputs
                if reference is None:
                    reference = out
                error = float(np.linalg.norm(np.concatenate(out) - np.concatenate(reference))
                              / np.linalg.norm(np.concatenate(reference)))
                rates = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    for b in batches:
                        call(b)
                    rates.append(len(batches) * args.batch_size / (time.perf_counter() - start))
                rows.append({"backbone": backbone, "precision": precision, "way": way,
                             "img_s": round(median(rates), 2),
                             "rel_l2_vs_first_float32": round(error, 5)})
                print(rows[-1], flush=True)
    meta = {"machine": machine(), "cpu": cpu_info().to_json(), "command": " ".join(sys.argv)}
    text = (f"# Inference overhead per call\n\n{machine_line(meta)}\nCPU flags: "
            f"{' '.join(meta['cpu']['flags'])}. {args.batches} batches of {args.batch_size}, "
            f"median of {args.runs} passes after a warm-up.\n\nCommand: `{meta['command']}`\n\n"
            + markdown_table(rows, [("backbone", "backbone"), ("precision", "precision"),
                                    ("way", "call"), ("img_s", "img/s"),
                                    ("rel_l2_vs_first_float32", "features vs float32 (rel. L2)")]))
    write_results(args.name, meta, rows, text)


if __name__ == "__main__":
    main()
