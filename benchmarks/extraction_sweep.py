#!/usr/bin/env python3
"""How extraction throughput changes with batch size and decode workers; float16 bytes.

One backbone (default MobileNet, 224 px). For each batch size (default
decode workers) and each worker count (batch 32), `featcache extract` and
the backbone alone on decoded in-memory batches of the same size run back to
back --runs times, as in extraction_throughput.py; rates and ratios are
medians. Last, one extraction per dtype gives the store's bytes per image.

    python benchmarks/extraction_sweep.py --data ../shared/data/hymenoptera \
        --weights-dir ../shared/weights --runs 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, machine_line, markdown_table, median, shared_path, write_results  # noqa: E402
from extraction_throughput import backbone_alone, decode_all  # noqa: E402

from featcache.dataset import load_dataset  # noqa: E402
from featcache.decode import ResizeSpec  # noqa: E402
from featcache.extract import ExtractOptions, extract  # noqa: E402
from featcache.feature_model import build_feature_extractor  # noqa: E402


def measure(extractor, pixels, data, batch, workers, runs, dtype="float32"):
    extractor.model.predict_on_batch(np.zeros((batch, *pixels.shape[1:]), "float32"))
    alone, piped, size = [], [], 0
    for run in range(runs):
        if run % 2 == 0:
            alone.append(backbone_alone(extractor.model, pixels, batch))
        with tempfile.TemporaryDirectory() as tmp:
            s = extract(ExtractOptions(data=data, out=os.path.join(tmp, "cache"), batch_size=batch,
                                       workers=workers, dtype=dtype, progress=False),
                        extractor=extractor)
        piped.append(s.images_per_second)
        size = s.cache_bytes / max(1, sum(s.splits.values()))
        if run % 2 == 1:
            alone.append(backbone_alone(extractor.model, pixels, batch))
    return {"backbone_img_s": round(median(alone), 2), "featcache_img_s": round(median(piped), 2),
            "ratio": round(median([p / a for p, a in zip(piped, alone)]), 3),
            "bytes_per_image": round(size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", default=shared_path("data", "hymenoptera"))
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--backbone", default="mobilenet")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--worker-counts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    if not args.data:
        parser.error("--data is required (no ../shared/data/hymenoptera here)")

    dataset = load_dataset(args.data)
    paths = [dataset.abspath(r) for r in dataset.records]
    default_workers = min(8, os.cpu_count() or 1)
    pixels, _ = decode_all(paths, ResizeSpec((args.image_size, args.image_size)), default_workers)
    extractor = build_feature_extractor(args.backbone, args.image_size, weights_dir=args.weights_dir)
    rows = []
    for batch in args.batch_sizes:
        rows.append({"vary": "batch size", "batch_size": batch, "workers": default_workers,
                     **measure(extractor, pixels, args.data, batch, default_workers, args.runs)})
        print(rows[-1], flush=True)
    for workers in args.worker_counts:
        rows.append({"vary": "decode workers", "batch_size": 32, "workers": workers,
                     **measure(extractor, pixels, args.data, 32, workers, args.runs)})
        print(rows[-1], flush=True)
    sizes = {dtype: measure(extractor, pixels, args.data, 32, default_workers, 1, dtype)["bytes_per_image"]
             for dtype in ("float32", "float16")}

    meta = {"machine": machine(), "data": args.data, "backbone": args.backbone,
            "image_size": args.image_size, "runs": args.runs, "bytes_per_image": sizes,
            "command": " ".join(["python", *sys.argv])}
    columns = [("vary", "varied"), ("batch_size", "batch"), ("workers", "decode workers"),
               ("backbone_img_s", "backbone alone img/s"), ("featcache_img_s", "featcache img/s"),
               ("ratio", "ratio")]
    text = (f"# Extraction sweep ({args.backbone}, {os.path.basename(args.data.rstrip('/'))}, "
            f"{args.image_size} px, median of {args.runs} runs)\n\n{machine_line(meta)}\n\n"
            f"Command: `{meta['command']}`\n\n" + markdown_table(rows, columns)
            + f"\nStore bytes per image (features, labels, paths, hashes, HDF5 overhead): "
              f"float32 {sizes['float32']}, float16 {sizes['float16']}.\n")
    write_results(args.name or f"extraction_sweep_{args.backbone}", meta, rows, text)


if __name__ == "__main__":
    main()
