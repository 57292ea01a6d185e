#!/usr/bin/env python3
"""featcache extract at each precision against the Keras-native extraction script, side by side.

For each dataset and backbone, whole processes, alternating in every round:
`benchmarks/keras_native_extract.py` (image_dataset_from_directory ->
preprocess_input -> model.predict -> np.save, float32) and `featcache
extract --precision P` for P in --precisions. Per row: images/s of the whole
process and without the model build, peak RSS, the features' relative L2
against featcache float32 (Keras runtime when it ran, else OpenVINO's), and the validation accuracy of a logreg and a
dense256 head trained on those features (the same featcache code on both
sides). Medians over --runs rounds. The CPU model and flags go into the
results file: reduced precision only pays on CPUs that compute it natively.

    python benchmarks/vs_keras.py --datasets hymenoptera --backbones vgg16 mobilenet --runs 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, median, process_env, run_json, shared_path, write_results  # noqa: E402

WEIGHT_FILES = {"mobilenet": "mobilenet_1_0_224_tf_no_top.h5",
                "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"}
HERE = Path(__file__).resolve().parent


def keras_side(data, backbone, weights, out, env):
    cmd = [sys.executable, str(HERE / "keras_native_extract.py"), "--data", data, "--backbone",
           backbone, "--weights", weights, "--out", out]
    wall, rss, info = run_json(cmd, env)
    split = {s: (np.load(os.path.join(out, f"{s}_features.npy")),
                 np.load(os.path.join(out, f"{s}_labels.npy"))) for s in ("train", "val")}
    return {"wall": wall, "rss": rss, "images": info["images"],
            "no_build": info["extract_seconds"]}, split


def featcache_side(data, backbone, weights, out, precision, env, runtime="keras"):
    cmd = [sys.executable, "-m", "featcache", "extract", "--data", data, "--out", out,
           "--backbone", backbone, "--weights", weights, "--precision", precision,
           "--runtime", runtime, "--json"] + (["--seed", "0"] if precision == "int8" else [])
    wall, rss, info = run_json(cmd, env)
    import featcache

    split = {s: (featcache.load_features(out, s).features, featcache.load_features(out, s).labels)
             for s in ("train", "val")}
    # without loading Keras and the model build (the Keras script's own figure leaves both
    # out), and for int8 without the one-off quantization either
    timing = info["timing"]
    no_build = (info["seconds"] - timing["build_model"] - timing.get("load_keras", 0.0)
                - timing.get("quantize", 0.0))
    fidelity = (info.get("quantization") or {}).get("fidelity", {}).get("relative_l2")
    return {"wall": wall, "rss": rss, "images": info["images"], "no_build": no_build,
            "quantize": info["timing"].get("quantize"), "fidelity": fidelity}, split


def head_accuracy(split, head: str, seed: int = 0) -> float:
    from featcache.heads import create_head

    (X, y), (Xv, yv) = split["train"], split["val"]
    model = create_head(head, seed=seed)
    if head == "dense256":
        model.fit(X, y, validation_data=(Xv, yv), progress=False)
    else:
        model.fit(X, y)
    return float(np.mean(model.predict(Xv) == yv))


def relative_l2(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=shared_path("data"))
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--datasets", nargs="+", default=["hymenoptera", "cats_dogs"])
    parser.add_argument("--backbones", nargs="+", default=["vgg16", "mobilenet"])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16", "float16"])
    parser.add_argument("--runtimes", nargs="+", default=["keras"],
                        help="featcache runtimes to run at each precision (keras, openvino)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--name", default="vs_keras")
    args = parser.parse_args()
    if not args.data_root or not args.weights_dir:
        raise SystemExit("pass --data-root and --weights-dir (no ../shared found)")
    from featcache.hardware import cpu_info

    env = process_env()
    meta = {"machine": machine(), "cpu": cpu_info().to_json(), "runs": args.runs,
            "command": " ".join(sys.argv)}
    rows = []
    for dataset in args.datasets:
        data = os.path.join(args.data_root, dataset)
        for backbone in args.backbones:
            weights = os.path.join(args.weights_dir, WEIGHT_FILES[backbone])
            sides = ["keras"] + [f"featcache-{p}" if r == "keras" else f"featcache-{r}-{p}"
                                 for r in args.runtimes for p in args.precisions
                                 if not (p == "int8" and r == "keras")]  # int8 is OpenVINO's
            timings = {s: [] for s in sides}
            features = {}
            for run in range(args.runs):
                order = sides if run % 2 == 0 else list(reversed(sides))  # alternate
                for side in order:
                    out = tempfile.mkdtemp(prefix=f"vs-keras-{side}-")
                    try:
                        if side == "keras":
                            t, split = keras_side(data, backbone, weights, out, env)
                        else:
                            parts = side.split("-")
                            runtime = parts[1] if len(parts) == 3 else "keras"
                            t, split = featcache_side(data, backbone, weights, out, parts[-1], env,
                                                      runtime)
                    finally:
                        shutil.rmtree(out, ignore_errors=True)
                    timings[side].append(t)
                    features.setdefault(side, split)
                    print(f"{dataset} {backbone} {side} run {run}: {t['images'] / t['no_build']:.2f} img/s "
                          f"(whole process {t['images'] / t['wall']:.2f})", flush=True)
            reference = features.get("featcache-float32") or features.get("featcache-openvino-float32")
            base = None
            for side in sides:
                ts = timings[side]
                images = ts[0]["images"]
                row = {"dataset": dataset, "backbone": backbone, "pipeline": side,
                       "images": images,
                       "img_s": round(median([images / t["no_build"] for t in ts]), 2),
                       "img_s_whole": round(median([images / t["wall"] for t in ts]), 2),
                       "peak_rss_mib": round(median([t["rss"] for t in ts])),
                       "rel_l2_vs_f32": (round(relative_l2(features[side]["train"][0],
                                                           reference["train"][0]), 5)
                                         if reference is not None and side != "keras" else ""),
                       "logreg": round(head_accuracy(features[side], "logreg"), 4),
                       "dense256": round(head_accuracy(features[side], "dense256"), 4),
                       # int8: featcache's own held-out fidelity figure and the one-off cost
                       "int8_fidelity": (round(ts[0]["fidelity"], 4)
                                         if ts[0].get("fidelity") is not None else ""),
                       "quantize_s": (round(median([t["quantize"] for t in ts]), 1)
                                      if ts[0].get("quantize") is not None else "")}
                if side == "keras":
                    base = row
                row["vs_keras"] = round(row["img_s"] / base["img_s"], 2)
                row["vs_keras_whole"] = round(row["img_s_whole"] / base["img_s_whole"], 2)
                rows.append(row)
    columns = [("dataset", "dataset"), ("backbone", "backbone"), ("pipeline", "pipeline"),
               ("images", "images"), ("img_s", "img/s (no model build)"), ("vs_keras", "x Keras"),
               ("img_s_whole", "img/s whole process"), ("vs_keras_whole", "x Keras (whole)"),
               ("peak_rss_mib", "peak RSS MiB"), ("rel_l2_vs_f32", "features vs float32 (rel. L2)"),
               ("logreg", "logreg val acc"), ("dense256", "dense256 val acc"),
               ("int8_fidelity", "int8 fidelity (featcache's figure)"),
               ("quantize_s", "quantize s (once)")]
    cpu = meta["cpu"]
    text = (f"# featcache extract vs the Keras-native script\n\n{machine_line(meta)}\n"
            f"CPU flags: {' '.join(cpu['flags'])} (native bfloat16: {cpu['native_bfloat16']}, "
            f"native float16: {cpu['native_float16']}). Medians of {args.runs} alternating runs of "
            f"whole processes.\n\nCommand: `{meta['command']}`\n\n" + markdown_table(rows, columns))
    write_results(args.name, meta, rows, text)


if __name__ == "__main__":
    main()
