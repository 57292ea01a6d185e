#!/usr/bin/env python3
"""Real photo sizes: featcache extract (exact and fast decode) against the Keras-native script.

Every shared set is small (longest side 400 px or less); users feed phone
photos (12 MP JPEGs, 2-4 MB) and Kaggle-style 800x600 files. This script
makes both from shared cats_dogs images, in a temporary folder: upscaled
(bicubic) to the size, sensor-like noise added so the JPEG's entropy is a
camera file's (quality 92: about 2.5 MB per phone-size file), and a third of
them stored rotated with the EXIF orientation that turns them upright.

For each size, whole processes, alternating in every round, images/s without
the model build and peak RSS: `benchmarks/keras_native_extract.py`, `featcache
extract --decode exact` (what featcache did before the fast decode) and
`featcache extract` with default flags (the fast decode). Per row: the
features' relative L2 against the exact decode (median over images), the
same for a change of resize filter (bilinear -> bicubic) for scale, and the
validation accuracy of logreg and dense256 heads. Then the real-detail check
(hymenoptera, real photographs, at 96 px: a target a quarter of their size),
and fine-tuning on the phone-size photos: seconds and decode seconds per
epoch, decoding exactly every epoch (before) against the fast decode done
once per run (after).

    flock /work/bench.lock python benchmarks/photo_sizes.py --images 200 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, median, process_env, run_json, shared_path, write_results  # noqa: E402
from vs_keras import WEIGHT_FILES, head_accuracy, keras_side  # noqa: E402

SIZES = {"phone": 4032, "800x600": 800}
PARTS = ("extract", "detail", "small", "finetune")
NOISE = 5.0  # grey-level sigma of the added grain (plus half of it per channel)


_GRAIN: dict[int, np.ndarray] = {}


def grain(long_side: int) -> np.ndarray:
    """One field of sensor-like noise per size, cropped at random offsets for each photo."""
    if long_side not in _GRAIN:
        rng = np.random.default_rng(12345)
        side = long_side + 64
        luma = rng.standard_normal((side, side), dtype=np.float32) * NOISE
        chroma = rng.standard_normal((side, side, 3), dtype=np.float32) * (NOISE / 2)
        _GRAIN[long_side] = np.rint(luma[..., None] + chroma).astype(np.int16)
    return _GRAIN[long_side]


def make_photo(src: str, dst: str, long_side: int, seed: int, rotate: bool) -> int:
    from PIL import Image

    img = Image.open(src).convert("RGB")
    w, h = img.size
    k = long_side / max(w, h)
    img = img.resize((round(w * k), round(h * k)), Image.Resampling.BICUBIC)
    rng = np.random.default_rng(seed)
    dy, dx = rng.integers(0, 64, 2)
    a = np.asarray(img).astype(np.int16)
    a += grain(long_side)[dy:dy + a.shape[0], dx:dx + a.shape[1]]
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    if rotate:  # stored turned a quarter left; orientation 6 turns it upright on display
        img = img.transpose(Image.Transpose.ROTATE_90)
        exif[0x0112] = 6
    img.save(dst, "JPEG", quality=92, exif=exif.tobytes())
    return os.path.getsize(dst)


def make_set(source: str, root: str, long_side: int, n_train: int, n_val: int) -> dict:
    """Photo-size copies of the first images of each class; returns file count and mean bytes."""
    jobs = []
    for split, count in (("train", n_train), ("val", n_val)):
        for cls in ("cats", "dogs"):
            names = sorted(os.listdir(os.path.join(source, split, cls)))[: count // 2]
            os.makedirs(os.path.join(root, split, cls), exist_ok=True)
            for name in names:
                jobs.append((os.path.join(source, split, cls, name),
                             os.path.join(root, split, cls, name)))
    grain(long_side)  # made once, before the threads share it
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        sizes = list(pool.map(lambda j: make_photo(j[1][0], j[1][1], long_side, j[0], j[0] % 3 == 0),
                              enumerate(jobs)))
    return {"files": len(sizes), "mean_mb": round(float(np.mean(sizes)) / 1e6, 2)}


def make_set_in_child(source: str, root: str, long_side: int, n_train: int, n_val: int) -> dict:
    """make_set in a process of its own: the photos' arrays never enter this process, whose
    peak RSS every child it starts would otherwise report as its own (Linux carries the
    parent's high-water mark across fork and exec)."""
    import subprocess

    done = subprocess.run([sys.executable, __file__, "--make-set", source, root, str(long_side),
                           str(n_train), str(n_val)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def featcache_side(data, backbone, weights, out, env, extra=(), image_size=None):
    cmd = [sys.executable, "-m", "featcache", "extract", "--data", data, "--out", out,
           "--backbone", backbone, "--weights", weights, "--json", *extra]
    if image_size:
        cmd += ["--image-size", str(image_size)]
    wall, rss, info = run_json(cmd, env)
    import featcache

    split = {s: (featcache.load_features(out, s).features, featcache.load_features(out, s).labels)
             for s in ("train", "val")}
    # the Keras script's figure leaves out its import of Keras and its model build: so does this
    no_build = info["seconds"] - info["timing"]["build_model"] - info["timing"].get("load_keras", 0.0)
    return {"wall": wall, "rss": rss, "images": info["images"], "no_build": no_build,
            "decode_cpu": info["timing"]["decode_cpu"], "inference": info["timing"]["inference"],
            "decode_bound": info.get("decode_bound"), "decode": info.get("decode", "exact")}, split


def per_image_l2(a, b) -> float:
    """Median over images of |a - b| / |b| (b the reference features)."""
    return float(np.median(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


def both_splits(split):
    return np.concatenate([split["train"][0], split["val"][0]])


def extraction_runs(args, env, backbone: str, size_name: str, data: str, meta: dict):
    """Timed runs of every side; returns what extraction_rows turns into table rows."""
    weights = os.path.join(args.weights_dir, WEIGHT_FILES[backbone])
    sides = {"keras": None, "featcache exact": ["--decode", "exact"],
             "featcache (default: fast)": []}
    timings = {s: [] for s in sides}
    features = {}
    for run in range(args.runs):
        order = list(sides) if run % 2 == 0 else list(reversed(sides))
        for side in order:
            out = tempfile.mkdtemp(prefix="photo-sizes-")
            try:
                if side == "keras":
                    t, split = keras_side(data, backbone, weights, out, env)
                else:
                    t, split = featcache_side(data, backbone, weights, out, env, sides[side])
            finally:
                shutil.rmtree(out, ignore_errors=True)
            timings[side].append(t)
            features.setdefault(side, split)
            print(f"{size_name} {backbone} {side} run {run}: {t['images'] / t['no_build']:.2f} img/s, "
                  f"peak RSS {t['rss']:.0f} MiB", flush=True)
    out = tempfile.mkdtemp(prefix="photo-sizes-bicubic-")
    try:
        _, bicubic = featcache_side(data, backbone, weights, out, env,
                                    ["--decode", "exact", "--resize", "bicubic"])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    exact = both_splits(features["featcache exact"])
    meta.setdefault("resize_filter_l2", {})[f"{size_name} {backbone}"] = round(
        per_image_l2(both_splits(bicubic), exact), 4)
    return size_name, backbone, sides, timings, features


def extraction_rows(args, meta, size_name, backbone, sides, timings, features) -> list[dict]:
    """Table rows of one size and backbone, heads trained here (after every timed run)."""
    exact = both_splits(features["featcache exact"])
    rows, base = [], None
    for side in sides:
        ts = timings[side]
        images = ts[0]["images"]
        row = {"size": size_name, "backbone": backbone, "pipeline": side, "images": images,
               "img_s": round(median([images / t["no_build"] for t in ts]), 2),
               "img_s_whole": round(median([images / t["wall"] for t in ts]), 2),
               "peak_rss_mib": round(median([t["rss"] for t in ts])),
               "decode_cpu_s": (round(median([t["decode_cpu"] for t in ts]), 1)
                                if side != "keras" else ""),
               "decode_bound": ts[0].get("decode_bound", "") if side != "keras" else "",
               "rel_l2_vs_exact": (round(per_image_l2(both_splits(features[side]), exact), 4)
                                   if side != "keras" else ""),
               "rel_l2_bicubic": (meta["resize_filter_l2"][f"{size_name} {backbone}"]
                                  if side == "featcache exact" else ""),
               "logreg": round(head_accuracy(features[side], "logreg"), 4),
               "dense256": round(head_accuracy(features[side], "dense256"), 4) if args.dense else ""}
        base = base or row
        row["vs_keras"] = round(row["img_s"] / base["img_s"], 2)
        rows.append(row)
    return rows


def real_detail_rows(args, env) -> list[dict]:
    """hymenoptera (real photographs, longest side up to 400 px) at 96 px: exact, fast, bicubic."""
    data = os.path.join(args.data_root, "hymenoptera")
    weights = os.path.join(args.weights_dir, WEIGHT_FILES["mobilenet"])
    variants = {"exact": ["--decode", "exact"], "fast": ["--decode", "fast"],
                "exact, bicubic resize": ["--decode", "exact", "--resize", "bicubic"]}
    feats, rows = {}, []
    for name, extra in variants.items():
        out = tempfile.mkdtemp(prefix="photo-sizes-detail-")
        try:
            t, feats[name] = featcache_side(data, "mobilenet", weights, out, env, extra, image_size=96)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        exact = both_splits(feats["exact"])
        rows.append({"variant": name, "images": t["images"],
                     "rel_l2_vs_exact": round(per_image_l2(both_splits(feats[name]), exact), 4),
                     "logreg": round(head_accuracy(feats[name], "logreg"), 4),
                     "img_s": round(t["images"] / t["no_build"], 1)})
    return rows


def small_set_rows(args) -> list[dict]:
    """The shared small sets at 224 px: decode CPU per image, exact and fast (in this process)."""
    from featcache.dataset import load_dataset
    from featcache.decode import ResizeSpec, read_image

    rows = []
    for name in ("cats_dogs", "hymenoptera"):
        dataset = load_dataset(os.path.join(args.data_root, name))
        paths = [dataset.abspath(r) for r in dataset.records]
        seconds = {"exact": [], "fast": []}
        for run in range(args.runs):
            for mode in (("exact", "fast") if run % 2 == 0 else ("fast", "exact")):
                spec = ResizeSpec((224, 224), decode=mode)
                start = time.thread_time()
                for path in paths:
                    try:
                        read_image(path, spec)
                    except Exception:  # noqa: BLE001 - hymenoptera's one GIF that is no image
                        pass
                seconds[mode].append((time.thread_time() - start) / len(paths) * 1000)
        rows.append({"set": name, "images": len(paths),
                     "exact_ms": round(median(seconds["exact"]), 3),
                     "fast_ms": round(median(seconds["fast"]), 3)})
    return rows


def finetune_rows(args, data: str, weights_dir: str) -> list[dict]:
    """Fine-tuning on the phone-size photos: exact decode every epoch (before) vs fast, kept (after)."""
    from featcache.extract import ExtractOptions, extract
    from featcache.finetuning import FinetuneOptions, finetune
    from featcache.train import train_head

    rows = []
    work = tempfile.mkdtemp(prefix="photo-sizes-ft-")
    try:
        for name, decode, keep in (("before: exact decode, every epoch", "exact", False),
                                   ("fast decode, every epoch", "fast", False),
                                   ("after: fast decode, once per run (default)", "fast", True)):
            cache = os.path.join(work, f"cache-{decode}")
            if not os.path.isdir(cache):
                extract(ExtractOptions(data=data, out=cache, backbone="mobilenet", decode=decode,
                                       weights_dir=weights_dir, progress=False))
                train_head(cache, "logreg", os.path.join(work, f"head-{decode}"), progress=False)
            out = os.path.join(work, f"ft-{len(rows)}")
            summary = finetune(data, os.path.join(work, f"head-{decode}"), out,
                               FinetuneOptions(unfreeze_top=2, epochs=args.finetune_epochs,
                                               early_stopping=False, keep_pixels=keep,
                                               augment="flip"),
                               weights_dir=weights_dir, progress=False)
            history = json.loads(Path(out, "history.json").read_text())
            epochs, decode_s = history["epoch_seconds"], history["decode_seconds"]
            rows.append({"run": name, "epochs": len(epochs),
                         "epoch_s": " / ".join(f"{x:.1f}" for x in epochs),
                         "decode_s": " / ".join(f"{x:.1f}" for x in decode_s),
                         "later_vs_first_decode": (round(max(decode_s[1:]) / decode_s[0], 4)
                                                   if len(decode_s) > 1 and decode_s[0] else ""),
                         "val_acc": round(summary.val_accuracy or 0.0, 4)})
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    if sys.argv[1:2] == ["--make-set"]:
        source, root, long_side, n_train, n_val = sys.argv[2:7]
        print(json.dumps(make_set(source, root, int(long_side), int(n_train), int(n_val))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=shared_path("data"))
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--images", type=int, default=300, help="images per size (70 %% train)")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--backbones", nargs="+", default=["mobilenet"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-dense", dest="dense", action="store_false",
                        help="skip the dense256 head")
    parser.add_argument("--finetune-epochs", type=int, default=3,
                        help="fine-tuning epochs on the phone-size photos (0: skip)")
    parser.add_argument("--no-detail", dest="detail", action="store_false",
                        help="skip the real-detail check")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS),
                        help="what to run (default: all); results go to --name")
    parser.add_argument("--decode-nice", type=int,
                        help="FEATCACHE_DECODE_NICE for the featcache processes (default: theirs, "
                             "+10 from the process): 0 where something outside renices the "
                             "benchmark after start, which leaves the decoders behind")
    parser.add_argument("--work", help="folder for the generated photos (default: a temporary one)")
    parser.add_argument("--name", default="photo_sizes")
    args = parser.parse_args()
    if not args.data_root or not args.weights_dir:
        raise SystemExit("pass --data-root and --weights-dir (no ../shared found)")
    from featcache.hardware import cpu_info

    env = process_env()
    if args.decode_nice is not None:
        env["FEATCACHE_DECODE_NICE"] = str(args.decode_nice)
    meta = {"machine": machine(), "cpu": cpu_info().to_json(), "runs": args.runs,
            "command": " ".join(sys.argv), "images_per_size": args.images, "sets": {}}
    work = args.work or tempfile.mkdtemp(prefix="photo-sizes-data-")
    n_train = int(round(args.images * 0.7 / 2)) * 2
    n_val = int(round((args.images - n_train) / 2)) * 2
    try:
        sets = {}
        for size in args.sizes:
            root = os.path.join(work, size)
            started = time.perf_counter()
            if not os.path.isdir(root):
                meta["sets"][size] = make_set_in_child(os.path.join(args.data_root, "cats_dogs"),
                                                       root, SIZES[size], n_train, n_val)
                print(f"made {size}: {meta['sets'][size]} in {time.perf_counter() - started:.0f} s",
                      flush=True)
            sets[size] = root
            files = [f for f in Path(root).rglob("*.jpg")]
            meta["sets"][size] = {"files": len(files), "mean_mb": round(
                float(np.mean([f.stat().st_size for f in files])) / 1e6, 2)}
        runs = [extraction_runs(args, env, backbone, size, sets[size], meta)
                for size in args.sizes for backbone in args.backbones
                if "extract" in args.parts]
        import resource

        # a child's peak RSS can read no lower than this (see make_set_in_child)
        peak_rss_self_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows = [row for run in runs for row in extraction_rows(args, meta, *run)]
        detail = real_detail_rows(args, env) if args.detail and "detail" in args.parts else []
        small = small_set_rows(args) if "small" in args.parts else []
        tuning = (finetune_rows(args, sets["phone"], args.weights_dir)
                  if args.finetune_epochs and "phone" in sets and "finetune" in args.parts else [])
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    columns = [("size", "photos"), ("backbone", "backbone"), ("pipeline", "pipeline"),
               ("images", "images"), ("img_s", "img/s (no model build)"), ("vs_keras", "x Keras"),
               ("img_s_whole", "img/s whole process"), ("peak_rss_mib", "peak RSS MiB"),
               ("decode_cpu_s", "decode CPU s"), ("decode_bound", "decode-bound"),
               ("rel_l2_vs_exact", "features vs exact (rel. L2, median)"),
               ("rel_l2_bicubic", "bicubic instead of bilinear (rel. L2)"),
               ("logreg", "logreg val acc"), ("dense256", "dense256 val acc")]
    meta["this_process_peak_rss_mib"] = round(peak_rss_self_mib)
    cpu = meta["cpu"]
    sets_text = "; ".join(f"{k}: {v['files']} files, {v['mean_mb']} MB each on average"
                          for k, v in meta["sets"].items())
    text = (f"# Real photo sizes: featcache extract (exact, fast) vs the Keras-native script\n\n"
            f"{machine_line(meta)}\nCPU flags: {' '.join(cpu['flags'])}. No GPU was lent to this "
            f"session, so GPU JPEG decoding (nvJPEG) is not measured. Medians of {args.runs} "
            f"alternating runs of whole processes, float32.\n\nPhotos made from shared cats_dogs "
            f"images (70 % train, 30 % val): {sets_text}. A third are "
            "stored rotated with EXIF orientation 6 (the Keras-native loader ignores EXIF, so it "
            "sees those sideways). Peak RSS is each process's own (this script's peak before "
            f"the heads, {meta['this_process_peak_rss_mib']} MiB, is the floor any child reads).\n\n"
            f"Command: `{meta['command']}`\n\n" + (markdown_table(rows, columns) if rows else ""))
    if detail:
        text += ("\n## Real detail: hymenoptera at 96 px (MobileNet, the 224 px weights file)\n\n"
                 + markdown_table(detail, [("variant", "decode"), ("images", "images"),
                                           ("rel_l2_vs_exact", "features vs exact (rel. L2, median)"),
                                           ("logreg", "logreg val acc"), ("img_s", "img/s (1 run)")]))
    if small:
        text += ("\n## The shared small sets at 224 px: decode CPU ms per image (one thread)\n\n"
                 "Nothing there is large enough to reduce, so the fast decode reads them exactly "
                 "as the exact one does.\n\n"
                 + markdown_table(small, [("set", "set"), ("images", "images"),
                                          ("exact_ms", "exact ms/image"), ("fast_ms", "fast ms/image")]))
    if tuning:
        text += ("\n## Fine-tuning MobileNet on the phone-size photos (224 px, top 2 layers, "
                 "logreg head)\n\nSeconds per epoch and CPU seconds spent decoding files per epoch "
                 "(history.json), epoch by epoch.\n\n"
                 + markdown_table(tuning, [("run", "run"), ("epochs", "epochs"),
                                           ("epoch_s", "seconds per epoch"),
                                           ("decode_s", "decode CPU s per epoch"),
                                           ("later_vs_first_decode", "later / first epoch decode"),
                                           ("val_acc", "val acc")]))
    meta["detail"], meta["finetune"], meta["small_sets"] = detail, tuning, small
    write_results(args.name, meta, rows, text)


if __name__ == "__main__":
    main()
