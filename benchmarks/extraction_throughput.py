#!/usr/bin/env python3
"""Extraction throughput: `featcache extract` against the backbone alone.

For each backbone, the same feature model (preprocessing, backbone, pooling)
and batch size run twice over the same images:

* backbone alone: images decoded into memory first, then only
  `predict_on_batch` on full, padded batches is timed;
* featcache: `extract()` into a fresh cache (listing, parallel decode and
  resize, inference, HDF5 writes), timing its extraction phase.

Both exclude model construction and the first (tracing) call. The ratio
featcache / backbone is the pipeline's efficiency: 1.0 means decoding and
writing hide completely behind the backbone. The two sides run back to back,
in alternating order, --runs times; rates are medians over runs and the ratio
is the median of the per-run ratios (this machine's speed drifts between runs,
so pairing matters).

    python benchmarks/extraction_throughput.py --data ../shared/data/hymenoptera \
        --weights-dir ../shared/weights
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, machine_line, markdown_table, median, shared_path, write_results  # noqa: E402

from featcache.dataset import load_dataset  # noqa: E402
from featcache.decode import ResizeSpec, read_image  # noqa: E402
from featcache.extract import ExtractOptions, extract  # noqa: E402
from featcache.feature_model import build_feature_extractor  # noqa: E402


def decode_all(paths, spec, workers):
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        images = list(pool.map(lambda p: read_image(p, spec)[0], paths))
    return np.stack(images), time.perf_counter() - start


def backbone_alone(model, pixels, batch_size):
    n = len(pixels)
    padded = np.zeros((batch_size, *pixels.shape[1:]), dtype=np.float32)
    start = time.perf_counter()
    for i in range(0, n, batch_size):
        chunk = pixels[i:i + batch_size]
        padded[: len(chunk)] = chunk
        model.predict_on_batch(padded)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", default=shared_path("data", "hymenoptera"))
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--backbones", nargs="+", default=["mobilenet", "vgg16"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--name", default="extraction_throughput")
    args = parser.parse_args()
    if not args.data:
        parser.error("--data is required (no ../shared/data/hymenoptera here)")
    workers = args.workers or min(8, os.cpu_count() or 1)

    dataset = load_dataset(args.data)
    paths = [dataset.abspath(r) for r in dataset.records]
    spec = ResizeSpec((args.image_size, args.image_size))
    rows = []
    for name in args.backbones:
        extractor = build_feature_extractor(name, args.image_size, weights_dir=args.weights_dir)
        pixels, decode_seconds = decode_all(paths, spec, workers)
        single_start = time.perf_counter()
        for p in paths[:100]:
            read_image(p, spec)
        decode_ms = 1000 * (time.perf_counter() - single_start) / min(100, len(paths))
        extractor.model.predict_on_batch(np.zeros((args.batch_size, *pixels.shape[1:]), "float32"))

        alone, piped, stages = [], [], []
        for run in range(args.runs):
            # alternate the order so drifts in machine speed do not favour one side
            if run % 2 == 0:
                alone.append(backbone_alone(extractor.model, pixels, args.batch_size))
            with tempfile.TemporaryDirectory() as tmp:
                summary = extract(ExtractOptions(
                    data=args.data, out=os.path.join(tmp, "cache"), batch_size=args.batch_size,
                    workers=workers, progress=False), extractor=extractor)
            piped.append(summary.images_per_second)
            stages.append(summary.timing)
            if run % 2 == 1:
                alone.append(backbone_alone(extractor.model, pixels, args.batch_size))
            print(f"{name} run {run + 1}: backbone alone {alone[-1]:.1f} img/s, "
                  f"featcache {piped[-1]:.1f} img/s", flush=True)
        images = summary.images_extracted
        rows.append({
            "backbone": name,
            "images": images,
            "batch_size": args.batch_size,
            "workers": workers,
            "backbone_img_s": round(median(alone), 2),
            "featcache_img_s": round(median(piped), 2),
            "ratio": round(median([p / a for p, a in zip(piped, alone)]), 3),
            "runs_backbone": " ".join(f"{v:.1f}" for v in alone),
            "runs_featcache": " ".join(f"{v:.1f}" for v in piped),
            "decode_ms_per_img_1thread": round(decode_ms, 2),
            "wait_for_decode_s": round(median([s["wait_for_decode"] for s in stages]), 3),
            "inference_s": round(median([s["inference"] for s in stages]), 2),
            "write_s": round(median([s["write"] for s in stages]), 3),
            "bytes_per_image": round(summary.cache_bytes / max(1, sum(summary.splits.values()))),
        })

    meta = {"machine": machine(), "data": args.data, "image_size": args.image_size,
            "runs": args.runs, "command": " ".join(["python", *sys.argv])}
    columns = [("backbone", "backbone"), ("images", "images"), ("batch_size", "batch"),
               ("backbone_img_s", "backbone alone img/s"), ("featcache_img_s", "featcache img/s"),
               ("ratio", "ratio"), ("decode_ms_per_img_1thread", "decode+resize ms/img (1 thread)"),
               ("wait_for_decode_s", "waited for decode s"), ("inference_s", "inference s"),
               ("write_s", "write s"), ("bytes_per_image", "bytes/img (float32)"),
               ("runs_backbone", "runs: backbone"), ("runs_featcache", "runs: featcache")]
    text = (f"# Extraction throughput ({os.path.basename(args.data.rstrip('/'))}, "
            f"{args.image_size} px, median of {args.runs} runs)\n\n"
            f"{machine_line(meta)}\n\nCommand: `{meta['command']}`\n\n"
            + markdown_table(rows, columns))
    write_results(args.name, meta, rows, text)


if __name__ == "__main__":
    main()
