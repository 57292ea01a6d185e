#!/usr/bin/env python3
"""OpenVINO's thread and stream settings inside the whole extraction pipeline.

OpenVINO brings its own thread pool, which shares the cores with featcache's
decode threads. This runs `featcache.extract` (decode threads + backbone +
HDF5 writes, one prebuilt extractor per setting, so no model build is timed)
with Keras and with OpenVINO under each setting, alternating, and reports
images/s. featcache uses the LATENCY hint with one inference thread per core
(runtimes.openvino_compile); this is the measurement behind that choice.

    python benchmarks/openvino_threads.py --dataset hymenoptera --backbones mobilenet vgg16 --runs 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, median, shared_path, write_results  # noqa: E402

WEIGHT_FILES = {"mobilenet": "mobilenet_1_0_224_tf_no_top.h5",
                "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"}
CORES = os.cpu_count() or 1
SETTINGS = [("keras", None, None, None),
            ("openvino", "LATENCY", CORES, None),
            ("openvino", "LATENCY", max(1, CORES - 1), None),
            ("openvino", "THROUGHPUT", CORES, 1)]


def build(backbone, weights, runtime, hint, threads, streams):
    from featcache import runtimes
    from featcache.feature_model import build_feature_extractor

    extractor = build_feature_extractor(backbone, 224, weights=weights, runtime="keras")
    if runtime == "openvino":
        ov = runtimes.import_openvino()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint,
                  "INFERENCE_NUM_THREADS": threads}
        if streams:
            config["NUM_STREAMS"] = streams
        compiled = ov.Core().compile_model(ov.convert_model(extractor.model), "CPU", config)
        request, output = compiled.create_infer_request(), compiled.outputs[0]
        extractor._call = lambda batch: request.infer([batch])[output].copy()
    extractor.features(np.zeros((32, 224, 224, 3), np.float32), 32)  # warm
    return extractor


def main() -> None:
    import featcache

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=shared_path("data"))
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--dataset", default="hymenoptera")
    parser.add_argument("--backbones", nargs="+", default=["mobilenet"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--name", default="openvino_threads")
    args = parser.parse_args()
    from featcache.hardware import cpu_info

    data = os.path.join(args.data_root, args.dataset)
    meta = {"machine": machine(), "cpu": cpu_info().to_json(), "runs": args.runs,
            "command": " ".join(sys.argv)}
    rows = []
    for backbone in args.backbones:
        weights = os.path.join(args.weights_dir, WEIGHT_FILES[backbone])
        built = {s: build(backbone, weights, *s) for s in SETTINGS}
        rates = {s: [] for s in SETTINGS}
        for run in range(args.runs):
            for s in (SETTINGS if run % 2 == 0 else SETTINGS[::-1]):
                out = tempfile.mkdtemp(prefix="ov-threads-")
                try:
                    start = time.perf_counter()
                    summary = featcache.extract(featcache.ExtractOptions(
                        data=data, out=out, backbone=backbone, weights=weights, progress=False,
                        runtime="keras"), extractor=built[s])
                    rates[s].append(summary.images_extracted / (time.perf_counter() - start))
                finally:
                    shutil.rmtree(out, ignore_errors=True)
                print(backbone, s, f"{rates[s][-1]:.1f} img/s", flush=True)
        keras_rate = median(rates[SETTINGS[0]])
        for s in SETTINGS:
            runtime, hint, threads, streams = s
            rows.append({"backbone": backbone, "runtime": runtime,
                         "setting": "-" if runtime == "keras" else
                         f"{hint}, {threads} thread(s)" + (f", {streams} stream" if streams else ""),
                         "img_s": round(median(rates[s]), 1),
                         "vs_keras": round(median(rates[s]) / keras_rate, 2),
                         "runs": " ".join(f"{r:.1f}" for r in rates[s])})
    columns = [("backbone", "backbone"), ("runtime", "runtime"), ("setting", "OpenVINO setting"),
               ("img_s", "img/s (whole pipeline, no build)"), ("vs_keras", "x featcache Keras"),
               ("runs", "each run")]
    cpu = meta["cpu"]
    text = (f"# OpenVINO thread settings in the whole extraction pipeline ({args.dataset})\n\n"
            f"{machine_line(meta)}\nCPU flags: {' '.join(cpu['flags'])}. Medians of {args.runs} "
            f"alternating runs; decode threads: featcache's default.\n\nCommand: "
            f"`{meta['command']}`\n\n" + markdown_table(rows, columns))
    write_results(args.name, meta, rows, text)


if __name__ == "__main__":
    main()
