"""Run an extraction: list the images, plan, skip finished shards, run the rest, write the manifest.

Killing it at any point loses at most the shards in progress; running the
same extraction again resumes. The engine (local or Dask) only decides where
the pending shard tasks run.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

from .._keras import import_keras
from ..augment_views import views_for
from ..cache import (
    MANIFEST_FILE,
    SLICE_MANIFEST,
    CacheLock,
    ShardInfo,
    init_identity,
    manifest_shards,
    new_manifest,
    previous_manifest,
    read_hashes,
    read_shard_info,
    recorded_fingerprint,
    remove_if_unused,
    remove_stale_temporaries,
    remove_unplanned_shards,
    slice_folder,
    stored_fingerprint,
    write_manifest,
)
from ..dataset import Dataset, load_dataset
from ..decode import DEFAULT_DECODE, ResizeSpec, decode_of
from ..errors import CacheLockedError, UsageError, param, plain
from ..hardware import warn_if_emulated
from ..multilabel import SEPARATOR as MULTI_LABEL_SEPARATOR
from ..pipeline import default_workers
from ..weights import weights_dir as resolve_weights_dir
from .engines import create_engine
from .options import ExtractOptions
from .plan import BuildSpec, ExtractorInfo, ShardJob, ShardTask, plan_shards, slice_tasks
from .shard import new_timing
from .summary import ExtractSummary


def _runtime_for(options: ExtractOptions) -> str:
    """The runtime to extract with: the one asked for; for "auto" a resumed cache's own, else
    the fastest exact one installed here (runtimes.resolve_runtime)."""
    from ..hardware import cpu_info, gpus
    from ..runtimes import installed_runtimes, resolve_runtime

    if options.runtime != "auto":
        return options.runtime
    out = os.path.abspath(options.out)
    if options.sliced:
        out = slice_folder(out, options.slice_index, options.num_slices)
    recorded = recorded_fingerprint(out)
    if recorded:  # resuming: keep the cache's runtime when it can run here
        made_with = (recorded.get("runtime") or {}).get("name", "keras")
        if made_with in installed_runtimes():
            return made_with
    return resolve_runtime("auto", options.precision, cpu_info(), bool(gpus()))


def _known_shards(cache_dir: str, tasks: list[ShardTask], fph: str,
                  manifest: dict) -> dict[str, ShardInfo]:
    """Finished shards of this plan already on disk (from a previous or killed run), checked
    against the previous run's `manifest` where it lists them."""
    previous = {s.file: s for s in manifest_shards(manifest)}
    known: dict[str, ShardInfo] = {}
    for task in tasks:
        path = os.path.join(cache_dir, task.relpath)
        if not os.path.isfile(path):
            continue
        entry = previous.get(task.relpath)
        if entry and entry.bytes == os.path.getsize(path):
            known[task.relpath] = entry
            continue
        info = read_shard_info(cache_dir, task.relpath, fph)
        if info is not None:
            known[task.relpath] = info
    return known


def _duplicate_warnings(out: str, shards: list[ShardInfo], class_names: list[str],
                        listed: int = 5) -> list[str]:
    """Warnings about identical image content: under several classes (one per image), and a
    one-line hint when the same bytes sit in two splits (a leak `featcache audit` lists).

    The same bytes with two labels are contradictory training data; both rows
    are kept (they are distinct files), and the user is told.
    """
    seen: dict[str, dict[int, str]] = {}
    splits: dict[str, set[str]] = {}
    for info in shards:
        for digest, label, path in read_hashes(out, info.file):
            seen.setdefault(digest, {}).setdefault(label, path)
            splits.setdefault(digest, set()).add(info.split)
    clashes = [by_label for by_label in seen.values() if len(by_label) > 1]
    warnings = []
    for by_label in clashes[:listed]:
        names = ", ".join(f"{p} ({class_names[c]})" for c, p in sorted(by_label.items()))
        warnings.append(f"identical image content under different classes: {names}")
    if len(clashes) > listed:
        warnings.append(f"and {len(clashes) - listed} more images filed under several classes")
    leaks = sum(len(s) > 1 for s in splits.values())
    if leaks:
        warnings.append(f"{leaks} image{'s' if leaks > 1 else ''} sit byte-identical in two splits "
                        f"(a leak that inflates validation figures): featcache audit {out} lists "
                        "them, with near copies")
    return warnings


def _progress_bar(options: ExtractOptions, total: int, backbone: str, engine: str):
    from tqdm.auto import tqdm

    label = f"extract {backbone}" + ("" if engine == "local" else f" ({engine})")
    return tqdm(total=total, unit="img", desc=label,
                disable=(None if options.progress is None else not options.progress),
                dynamic_ncols=True, smoothing=0.1)


def extract(options: ExtractOptions, extractor=None, rebuild: tuple[str, ...] = (),
            after_batch=None) -> ExtractSummary:
    """Extract features for every image of `options.data` into `options.out`.

    Resumes when the cache exists with the same fingerprint; refuses when its
    fingerprint differs.

    Args:
        options: what to extract and how.
        extractor: a `FeatureExtractor` built earlier, to reuse across calls
            (notebooks, benchmarks); it then decides backbone, image size,
            layer, pooling and weights, and those options are ignored.
        rebuild: shard files (relative to the cache) to delete and extract
            again even if they look finished (`featcache verify --repair`).
        after_batch: called as after_batch(writer) after every batch written
            (a hook for tests; runs on the workers with the Dask engine).

    Raises:
        FeatcacheError subclasses with one-line messages (bad options, data,
        weights, a busy or different cache, `strict` on a bad image).
    """
    from ..backbones import get_backbone
    from ..feature_model import check_options

    started = time.perf_counter()
    timing = {"load_keras": 0.0, "scan": 0.0, "build_model": 0.0, **new_timing()}
    options.validate()
    # Keras and its backend load once per process (seconds for TensorFlow); timed apart, as a
    # plain Keras script's own import is, so the other figures are this extraction's work
    start = time.perf_counter()
    import_keras()
    timing["load_keras"] = time.perf_counter() - start
    if extractor is not None and options.runtime == "auto":  # the model built earlier decides
        options = replace(options, runtime=extractor.runtime)
    options = replace(options, runtime=_runtime_for(options))
    if options.runtime == "openvino":
        from ..runtimes import import_openvino

        import_openvino()  # say how to install it before the images are even listed
    if extractor is None:
        spec = get_backbone(options.backbone)
        size = int(options.image_size or spec.input_size)
        check_options(spec, size, options.layer, options.pooling)
    else:
        spec, size = extractor.spec, extractor.image_size
    start = time.perf_counter()
    dataset = load_dataset(options.data, options.val_fraction, options.test_fraction,
                           options.root, options.allow_outside_root,
                           workers=default_workers(options.workers))
    timing["scan"] = time.perf_counter() - start

    out = os.path.abspath(options.out)
    if options.sliced:
        out = slice_folder(out, options.slice_index, options.num_slices)
        options = replace(options, out=out)
    options = replace(options, decode=_decode_mode(options.decode, out))
    resize = ResizeSpec((size, size), options.resize, options.aspect, options.decode)
    created = not os.path.exists(out)
    os.makedirs(out, exist_ok=True)
    weights = options.weights
    if weights not in ("imagenet", "none") and os.path.exists(weights):
        weights = os.path.abspath(weights)  # workers elsewhere resolve it the same way
    build = BuildSpec(spec.name, size, options.layer, options.pooling, weights,
                      resolve_weights_dir(options.weights_dir), options.seed, resize, options.dtype,
                      options.augment, options.precision, options.runtime)
    for name in ("precision", "runtime"):
        if extractor is not None and getattr(extractor, name) != getattr(options, name):
            raise UsageError(f"{param(name)} {getattr(options, name)}: the extractor passed in "
                             f"uses {getattr(extractor, name)}.")
    if options.engine == "local":
        warn_if_emulated(options.precision)
    try:
        with create_engine(options, extractor) as engine:
            return _extract_locked(options, engine, build, dataset, out, timing, started, rebuild,
                                   after_batch)
    except CacheLockedError:
        raise  # the folder belongs to the process holding the lock: touch nothing
    except BaseException:
        if created:
            remove_if_unused(out)
        raise


def _decode_mode(asked: str | None, out: str) -> str:
    """The decode mode of this run: as asked, else the existing cache's, else the default.

    Raises:
        UsageError: the cache already holds features decoded the other way.
    """
    stored = stored_fingerprint(out)
    if stored is None:
        return asked or DEFAULT_DECODE
    made = decode_of(stored)
    if asked is not None and asked != made:
        raise UsageError(f"{param('decode')} {asked}: the cache in {out} was extracted with the "
                         f"{made} decode; resume it with {param('decode')} {made}, or choose "
                         f"another {param('out')}.")
    return made


def _extract_locked(options: ExtractOptions, engine, build: BuildSpec, dataset: Dataset, out: str,
                    timing: dict, started: float, rebuild, after_batch) -> ExtractSummary:
    with CacheLock(out):
        quantized, made = None, False
        if build.precision == "int8":
            start = time.perf_counter()
            quantized, made = _int8_model(out, build, dataset, options)
            timing["quantize"] = time.perf_counter() - start
            build = replace(build, int8_model=quantized.folder)
        start = time.perf_counter()
        try:
            info = engine.prepare(build)
            timing["build_model"] = time.perf_counter() - start
            fingerprint, fph = info.fingerprint, info.fingerprint_hash
            init_identity(out, fingerprint, fph)
        except BaseException:
            if made:  # this run's quantized model belongs to no cache
                import shutil

                shutil.rmtree(quantized.folder, ignore_errors=True)
            raise
        remove_stale_temporaries(out)

        plan = plan_shards(dataset, fph, options.shard_size)
        tasks = slice_tasks(plan, options.slice_index, options.num_slices) if options.sliced else plan
        for relpath in rebuild:
            if os.path.isfile(os.path.join(out, relpath)):
                os.remove(os.path.join(out, relpath))
        before = previous_manifest(out)  # read once: the shards it lists and the speed it kept
        known = _known_shards(out, tasks, fph, before)
        pending = [t for t in tasks if t.relpath not in known]
        images = sum(len(t.records) for t in pending)

        job = ShardJob(dataset.root, tuple(dataset.class_names), out, build, fph,
                       options.batch_size, options.strict, options.max_pixels,
                       None if engine.name == "dask" else options.workers, after_batch)
        rows = sum(len(t.records) * views_for(t.split, build.augment) for t in pending)
        bar = _progress_bar(options, rows, info.backbone, engine.name)
        start = time.perf_counter()
        try:
            written = engine.run(pending, job, timing, bar)
        finally:
            bar.close()
        extract_seconds = time.perf_counter() - start

        shards = {**known, **{s.file: s for s in written}}
        ordered = [shards[t.relpath] for t in tasks]
        remove_stale_temporaries(out)  # left by workers killed mid-shard and retried elsewhere
        duplicates = _duplicate_warnings(out, ordered, dataset.class_names)
        quantization = _quantization_entry(out, quantized)
        speed = _backbone_speed(rows, timing, options, before)
        manifest = _manifest(fingerprint, fph, dataset, ordered, options, info, duplicates,
                             engine.name, quantization, speed)
        if options.sliced:
            # a slice is not a cache: merging turns all slices into one manifest
            manifest["status"] = "slice"
            manifest["slice"] = {"index": options.slice_index, "count": options.num_slices,
                                 "plan": [t.relpath for t in plan]}
        write_manifest(out, manifest, SLICE_MANIFEST if options.sliced else MANIFEST_FILE)
        remove_unplanned_shards(out, {t.relpath for t in tasks})

    skipped = [s for info_ in ordered for s in info_.skipped]
    return ExtractSummary(
        cache=out,
        backbone=info.backbone,
        feature_shape=info.feature_shape,
        dtype=options.dtype,
        fingerprint_hash=fph,
        splits={s: v["rows"] for s, v in manifest["splits"].items()},
        images_extracted=images - sum(len(s.skipped) for s in written),
        skipped=skipped,
        shards_written=len(written),
        shards_reused=len(known),
        bytes_written=sum(s.bytes for s in written),
        cache_bytes=sum(s.bytes for s in ordered),
        seconds=time.perf_counter() - started,
        extract_seconds=extract_seconds,
        timing=timing,
        ignored=len(dataset.ignored),
        decode=options.decode,
        warnings=list(dataset.warnings) + duplicates
        + ([plain(quantized.warning)] if quantized is not None and quantized.warning else []),
        weights=info.weights,
        runtime=options.runtime,
        precision=options.precision,
        quantization=quantization,
        backbone_images_per_second=(speed or {}).get("images_per_second"),
    )


def _backbone_speed(rows: int, timing: dict, options: ExtractOptions, previous: dict) -> dict | None:
    """The backbone's own pace in this run (rows over inference seconds), for the manifest.

    A run that extracted nothing (the cache was complete) keeps the figure the
    cache already holds, so what reads it later (the demo's time-saved estimate)
    still has one.
    """
    seconds = timing.get("inference", 0.0)
    if rows > 0 and seconds > 0:
        return {"rows": rows, "inference_seconds": round(seconds, 3),
                "images_per_second": round(rows / seconds, 2), "runtime": options.runtime,
                "precision": options.precision}
    return (previous.get("extraction") or {}).get("backbone_speed")


def _int8_model(out: str, build: BuildSpec, dataset: Dataset, options: ExtractOptions):
    """The quantized model for this cache's calibration sample: reused, or made now.

    Returns (Quantized, whether this call made it). The calibration sample is
    drawn with the seed from the training split; images that fail to decode are
    left out (extraction reports them as usual).
    """
    import numpy as np

    from .. import quantize
    from ..cache import INT8_DIR
    from ..decode import read_image
    from ..errors import BadImageError

    quantize.import_nncf()  # says how to install it before anything heavy
    train = [r for r in dataset.records if r.split == "train"] or dataset.records
    paths = sorted(dataset.abspath(r) for r in train)
    if len(paths) < 2:
        raise UsageError(f"{param('precision')} int8 calibrates on the training images, and "
                         f"there are {len(paths)}: add images or use float32.")

    def decoded(chosen):
        pixels, hashes = [], []
        for path in chosen:
            try:
                arr, digest = read_image(path, build.resize, max_pixels=options.max_pixels)
            except BadImageError:
                continue
            pixels.append(arr.astype(np.float32))
            hashes.append((path, digest))
        return pixels, hashes

    import random

    rng = random.Random(int(options.seed))
    order = paths[:]
    rng.shuffle(order)
    n_check = min(quantize.HELD_OUT_IMAGES, max(1, len(order) // 4))
    n_cal = min(int(options.calibration_images), len(order) - n_check)
    cal_pixels, cal_hashes = decoded(order[:n_cal])
    if not cal_pixels:
        raise UsageError(f"{param('precision')} int8: none of the {n_cal} calibration images "
                         "could be decoded.")
    identity = quantize.calibration_identity(cal_hashes, options.seed)
    folder = os.path.join(out, INT8_DIR, identity["sha256"][:16])
    found = quantize.load(folder)
    if found is not None and found.calibration == identity:
        return found, False
    check_pixels, _ = decoded(order[n_cal:n_cal + n_check])
    if not check_pixels:
        check_pixels = cal_pixels[:n_check]
    float_model = replace(build, precision="float32", int8_model=None).build()
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    return quantize.quantize(float_model, np.stack(cal_pixels), np.stack(check_pixels), folder,
                             identity), True


def _manifest(fingerprint, fph, dataset: Dataset, shards: list[ShardInfo], options: ExtractOptions,
              extractor: ExtractorInfo, duplicates: list[str], engine: str,
              quantization: dict | None = None, speed: dict | None = None) -> dict:
    return new_manifest(
        fingerprint=fingerprint, fingerprint_hash=fph, class_names=dataset.class_names,
        shards=shards,
        source={
            "data": os.path.abspath(options.data),
            "root": dataset.root,
            "layout": dataset.layout,
            # label sets (featcache.multilabel); absent for single-label data, as in older caches
            **({"multi_label": MULTI_LABEL_SEPARATOR} if dataset.multi_label else {}),
            # the on-disk names of the fractions, kept so older featcache reads them
            "val_split": options.val_fraction,
            "test_split": options.test_fraction,
        },
        weights=extractor.weights,
        extraction={"tap": extractor.tap_name, "batch_size": options.batch_size,
                    "shard_size": options.shard_size, "engine": engine,
                    **({"backbone_speed": speed} if speed else {})},
        ignored=[{"path": p, "reason": r} for p, r in dataset.ignored],
        warnings=list(dataset.warnings) + list(duplicates),
        **({"quantization": quantization} if quantization else {}),
    )


def _quantization_entry(out: str, quantized) -> dict | None:
    """What the manifest records of an int8 model: where it is, what calibrated it, how close it is."""
    if quantized is None:
        return None
    return {"model": os.path.relpath(quantized.folder, out), "calibration": quantized.calibration,
            "fidelity": quantized.fidelity}
