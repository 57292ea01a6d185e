"""Run a frozen backbone over an image source once and store the features.

`plan_shards` (pure) cuts the sorted image list of each split into shard
tasks whose names hash the files planned for them. `extract` builds the
feature model, checks the cache's fingerprint, skips shards already on disk,
runs the rest through the parallel decoding pipeline and the backbone, and
finally writes the manifest. Killing it at any point loses at most the shard
in progress; running the same command again resumes.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field, replace

import numpy as np

from . import __version__
from .augment_views import AugmentSpec, views_for
from .dataset import SPLIT_ORDER, Dataset, ImageRecord, load_dataset
from .decode import DEFAULT_MAX_PIXELS, ResizeSpec
from .errors import CacheLockedError, DataError, UsageError
from .fileio import read_json, write_json_atomic
from .fingerprint import FORMAT_VERSION, canonical_json, fingerprint_hash, make_fingerprint
from .pipeline import Item, decoded_batches
from .weights import weights_dir as resolve_weights_dir
from .store import (
    MANIFEST_FILE,
    PARTS_DIR,
    SHARDS_DIR,
    CacheLock,
    ShardInfo,
    ShardWriter,
    init_identity,
    read_hashes,
    read_shard_info,
    remove_if_unused,
    remove_stale_temporaries,
    shard_relpath,
    write_failed,
)

DTYPES = ("float32", "float16")
ENGINES = ("local", "dask")
SLICE_MANIFEST = "slice.json"


@dataclass
class ExtractOptions:
    """Everything `featcache extract` takes; see the CLI help for each flag."""

    data: str
    out: str
    backbone: str = "mobilenet"
    image_size: int | None = None
    layer: str | None = None
    pooling: str | None = None
    weights: str = "imagenet"
    weights_dir: str | None = None
    batch_size: int = 32
    dtype: str = "float32"
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    root: str | None = None
    allow_outside_root: bool = False
    strict: bool = False
    workers: int | None = None
    shard_size: int = 1024
    resize: str = "bilinear"
    aspect: str = "stretch"
    max_pixels: int = DEFAULT_MAX_PIXELS
    seed: int = 0
    progress: bool | None = None
    engine: str = "local"
    scheduler: str | None = None
    retries: int = 3
    num_slices: int = 1
    slice_index: int | None = None
    augment_views: int = 0
    augment_seed: int = 0

    @property
    def augment(self) -> AugmentSpec | None:
        return AugmentSpec(int(self.augment_views), int(self.augment_seed)) if self.augment_views else None

    def validate(self) -> None:
        for flag, value in (("--batch-size", self.batch_size), ("--shard-size", self.shard_size)):
            if int(value) < 1:
                raise UsageError(f"{flag} {value}: must be at least 1.")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers {self.workers}: must be at least 1.")
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype {self.dtype}: allowed values are {', '.join(DTYPES)}.")
        if self.image_size is not None and self.image_size < 1:
            raise UsageError(f"--image-size {self.image_size}: must be a positive number of pixels.")
        if self.engine not in ENGINES:
            raise UsageError(f"--engine {self.engine}: allowed values are {', '.join(ENGINES)}.")
        if self.scheduler and self.engine != "dask":
            raise UsageError("--scheduler sends work to a Dask cluster: add --engine dask.")
        if self.scheduler and self.workers is not None:
            raise UsageError("--workers N starts a local Dask cluster; with --scheduler the "
                             "cluster's own workers run the shards: drop one of the two.")
        if self.retries < 0:
            raise UsageError(f"--retries {self.retries}: must be 0 or more.")
        if self.num_slices < 1:
            raise UsageError(f"--num-slices {self.num_slices}: must be at least 1.")
        if self.num_slices > 1 and self.slice_index is None:
            raise UsageError(f"--num-slices {self.num_slices} needs --slice-index I "
                             f"(0 to {self.num_slices - 1}) naming the slice this run extracts.")
        if self.slice_index is not None and not 0 <= self.slice_index < self.num_slices:
            raise UsageError(f"--slice-index {self.slice_index}: must be between 0 and "
                             f"{self.num_slices - 1} (--num-slices {self.num_slices}).")
        if self.augment_views < 0:
            raise UsageError(f"--augment-views {self.augment_views}: must be 0 or more.")
        if self.augment is not None:
            self.augment.validate()

    @property
    def sliced(self) -> bool:
        return self.slice_index is not None


@dataclass(frozen=True)
class ShardTask:
    """One shard to write: a contiguous run of one split's sorted records."""

    split: str
    index: int
    records: tuple[ImageRecord, ...]
    plan_hash: str

    @property
    def relpath(self) -> str:
        return shard_relpath(self.split, self.index, self.plan_hash)


def plan_shards(dataset: Dataset, fingerprint_hash_: str, shard_size: int) -> list[ShardTask]:
    """Cut each split's records into shards of `shard_size` (pure, deterministic).

    A shard's plan hash covers the fingerprint, class names, split and its
    (path, label, size) rows, so any change to what it would hold renames it.
    """
    tasks = []
    for split in SPLIT_ORDER:
        records = [r for r in dataset.records if r.split == split]
        for index, start in enumerate(range(0, len(records), shard_size)):
            chunk = tuple(records[start:start + shard_size])
            plan = canonical_json({
                "fingerprint": fingerprint_hash_, "classes": dataset.class_names, "split": split,
                "rows": [[r.path, r.label, r.size] for r in chunk],
            })
            digest = hashlib.sha256(plan.encode("utf-8", "surrogateescape")).hexdigest()
            tasks.append(ShardTask(split, index, chunk, digest))
    return tasks


def slice_folder(cache_dir: str, index: int, count: int) -> str:
    """Where slice `index` of `count` writes its shards, inside the final cache folder."""
    return os.path.join(cache_dir, PARTS_DIR, f"slice-{index:05d}-of-{count:05d}")


def slice_tasks(tasks: list[ShardTask], index: int, count: int) -> list[ShardTask]:
    """The shard tasks of slice `index` of `count`: every count-th task of the plan."""
    return [t for i, t in enumerate(tasks) if i % count == index]


@dataclass(frozen=True)
class BuildSpec:
    """What any process (this one or a cluster worker) needs to build the feature model.

    It is hashable and picklable; workers keep one built model per BuildSpec.
    """

    backbone: str
    image_size: int
    layer: str | None
    pooling: str | None
    weights: str
    weights_dir: str | None
    seed: int
    resize: ResizeSpec
    dtype: str
    augment: AugmentSpec | None = None

    def build(self):
        from .feature_model import build_feature_extractor

        return build_feature_extractor(self.backbone, self.image_size, self.layer, self.pooling,
                                       self.weights, self.weights_dir, self.seed)


@dataclass
class ExtractorInfo:
    """The parts of a built feature model the cache records (its fingerprint first)."""

    fingerprint: dict
    fingerprint_hash: str
    backbone: str
    feature_shape: tuple[int, ...]
    weights: dict
    tap_name: str


def describe_extractor(extractor, build: BuildSpec) -> ExtractorInfo:
    """The fingerprint of features this extractor makes under `build`'s resize, dtype, views."""
    fingerprint = make_fingerprint(extractor.describe(), build.resize.describe(), build.dtype,
                                   versions())
    if build.augment is not None:  # only then, so caches without views keep their fingerprint
        fingerprint["augment"] = build.augment.describe()
    return ExtractorInfo(fingerprint, fingerprint_hash(fingerprint), extractor.spec.name,
                         tuple(extractor.feature_shape), extractor.weights, extractor.tap_name)


class LocalEngine:
    """Runs shard tasks in this process (the default engine)."""

    def __init__(self, extractor=None):
        self.extractor = extractor

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def prepare(self, build: BuildSpec) -> ExtractorInfo:
        if self.extractor is None:
            self.extractor = build.build()
        return describe_extractor(self.extractor, build)

    def run(self, pending, dataset, build: BuildSpec, options, fph: str, timing: dict):
        return _run_pending(self.extractor, pending, dataset, build.resize, options, fph, timing,
                            augment=build.augment)


def _engine(options: "ExtractOptions", extractor):
    if options.engine == "local":
        return LocalEngine(extractor)
    if extractor is not None:
        raise UsageError("A prebuilt extractor runs in this process only: use engine 'local', "
                         "or let the Dask workers build their own.")
    from .distributed import DaskEngine

    return DaskEngine(options)


@dataclass
class ExtractSummary:
    """What one `extract` run did; `to_json` is the CLI's --json output."""

    cache: str
    backbone: str
    feature_shape: tuple[int, ...]
    dtype: str
    fingerprint_hash: str
    splits: dict[str, int]
    images_extracted: int
    skipped: list[dict]
    shards_written: int
    shards_reused: int
    bytes_written: int
    cache_bytes: int
    seconds: float
    extract_seconds: float
    timing: dict[str, float]
    ignored: int
    warnings: list[str] = field(default_factory=list)
    weights: dict = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.images_extracted / self.extract_seconds if self.extract_seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {
            "cache": self.cache,
            "backbone": self.backbone,
            "feature_shape": list(self.feature_shape),
            "dtype": self.dtype,
            "fingerprint_hash": self.fingerprint_hash,
            "rows": sum(self.splits.values()),
            "splits": self.splits,
            "images": self.images_extracted,
            "skipped": self.skipped,
            "ignored_files": self.ignored,
            "shards_written": self.shards_written,
            "shards_reused": self.shards_reused,
            "bytes_written": self.bytes_written,
            "cache_bytes": self.cache_bytes,
            "seconds": round(self.seconds, 3),
            "extract_seconds": round(self.extract_seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "timing": {k: round(v, 3) for k, v in self.timing.items()},
            "warnings": self.warnings,
            "weights": self.weights,
        }


def versions() -> dict:
    """Library versions that can change features: Keras, its backend, Pillow."""
    import PIL

    from ._keras import backend_info

    return {**backend_info(), "pillow": PIL.__version__}


def _known_shards(cache_dir: str, tasks: list[ShardTask], fph: str) -> dict[str, ShardInfo]:
    """Finished shards of this plan already on disk (from a previous or killed run)."""
    previous: dict[str, dict] = {}
    manifest_path = os.path.join(cache_dir, MANIFEST_FILE)
    if os.path.isfile(manifest_path):
        try:
            previous = {s["file"]: s for s in read_json(manifest_path).get("shards", [])}
        except (OSError, ValueError):
            previous = {}
    known: dict[str, ShardInfo] = {}
    for task in tasks:
        path = os.path.join(cache_dir, task.relpath)
        if not os.path.isfile(path):
            continue
        entry = previous.get(task.relpath)
        if entry and entry.get("bytes") == os.path.getsize(path):
            known[task.relpath] = ShardInfo(**{k: entry[k] for k in (
                "file", "split", "index", "plan_hash", "planned", "rows", "bytes", "sha256")},
                skipped=entry.get("skipped", []))
            continue
        info = read_shard_info(cache_dir, task.relpath, fph)
        if info is not None:
            known[task.relpath] = info
    return known


def _run_pending(extractor, pending: list[ShardTask], dataset: Dataset, resize: ResizeSpec,
                 options: ExtractOptions, fph: str, timing: dict,
                 augment: AugmentSpec | None = None, after_batch=None) -> list[ShardInfo]:
    """Extract `pending` shard by shard; `after_batch(writer)` runs after each batch is written."""
    from tqdm.auto import tqdm

    label_of = {name: i for i, name in enumerate(dataset.class_names)}
    # with augmented views each training image gives 1 + K consecutive rows (view 0 is the image)
    items = [Item(g, dataset.abspath(r), r.path, label_of[r.label], view)
             for g, task in enumerate(pending) for r in task.records
             for view in range(views_for(task.split, augment))]
    workers = options.workers or min(8, os.cpu_count() or 1)
    height, width = resize.size
    padded = np.zeros((options.batch_size, height, width, 3), dtype=np.float32)
    written: list[ShardInfo] = []
    writer: ShardWriter | None = None
    bar = tqdm(total=len(items), unit="img", desc=f"extract {extractor.spec.name}",
               disable=(None if options.progress is None else not options.progress),
               dynamic_ncols=True, smoothing=0.1)
    try:
        for batch in decoded_batches(items, resize, options.batch_size, workers,
                                     max_pixels=options.max_pixels, augment=augment):
            timing["wait_for_decode"] += batch.wait_seconds
            timing["decode_cpu"] += batch.decode_seconds
            if writer is None:
                task = pending[batch.group]
                writer = ShardWriter(options.out, task.split, task.index, task.plan_hash,
                                     len(task.records) * views_for(task.split, augment),
                                     extractor.feature_shape, options.dtype, fph,
                                     views=augment is not None)
            for item, reason in batch.failures:
                if options.strict:
                    raise DataError(
                        f"{item.display}: {reason}. --strict stops at the first unreadable image; "
                        "fix or remove the file, or drop --strict to skip and record such files.")
                if item.view == 0:  # a file's views fail with it: record the file once
                    writer.skip(item.display, reason)
            n = len(batch.items)
            if n:
                start = time.perf_counter()
                padded[:n] = batch.pixels
                padded[n:] = 0  # a batch's padding never depends on earlier batches
                features = np.asarray(extractor.model.predict_on_batch(padded))[:n]
                timing["inference"] += time.perf_counter() - start
                start = time.perf_counter()
                writer.append(features, [it.label for it in batch.items],
                              [it.display for it in batch.items], batch.hashes,
                              [it.view for it in batch.items])
                timing["write"] += time.perf_counter() - start
                if after_batch is not None:
                    after_batch(writer)
            if batch.last_in_group:
                start = time.perf_counter()
                written.append(writer.commit())
                timing["write"] += time.perf_counter() - start
                writer = None
            bar.update(batch.attempted)
    finally:
        bar.close()
        if writer is not None:
            writer.abort()
    return written


def extract(options: ExtractOptions, extractor=None, rebuild: tuple[str, ...] = ()) -> ExtractSummary:
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

    Raises:
        FeatcacheError subclasses with one-line messages (bad flags, data,
        weights, a busy or different cache, --strict on a bad image).
    """
    from .backbones import get_backbone
    from .feature_model import check_options

    started = time.perf_counter()
    timing = dict.fromkeys(
        ("scan", "build_model", "wait_for_decode", "decode_cpu", "inference", "write"), 0.0)
    options.validate()
    if extractor is None:
        spec = get_backbone(options.backbone)
        size = int(options.image_size or spec.input_size)
        check_options(spec, size, options.layer, options.pooling)
    else:
        spec, size = extractor.spec, extractor.image_size
    resize = ResizeSpec((size, size), options.resize, options.aspect)

    start = time.perf_counter()
    workers = options.workers or min(8, os.cpu_count() or 1)
    dataset = load_dataset(options.data, options.val_fraction, options.test_fraction,
                           options.root, options.allow_outside_root, workers=workers)
    timing["scan"] = time.perf_counter() - start

    out = os.path.abspath(options.out)
    if options.sliced:
        out = slice_folder(out, options.slice_index, options.num_slices)
        options = replace(options, out=out)
    created = not os.path.exists(out)
    os.makedirs(out, exist_ok=True)
    weights = options.weights
    if weights not in ("imagenet", "none") and os.path.exists(weights):
        weights = os.path.abspath(weights)  # workers elsewhere resolve it the same way
    build = BuildSpec(spec.name, size, options.layer, options.pooling, weights,
                      resolve_weights_dir(options.weights_dir), options.seed, resize, options.dtype,
                      options.augment)
    try:
        with _engine(options, extractor) as engine:
            return _extract_locked(options, engine, build, dataset, out, timing, started, rebuild)
    except CacheLockedError:
        raise  # the folder belongs to the process holding the lock: touch nothing
    except BaseException:
        if created:
            remove_if_unused(out)
        raise


def _extract_locked(options, engine, build: BuildSpec, dataset, out, timing, started, rebuild=()):
    with CacheLock(out):
        start = time.perf_counter()
        info = engine.prepare(build)
        timing["build_model"] = time.perf_counter() - start
        fingerprint, fph = info.fingerprint, info.fingerprint_hash
        init_identity(out, fingerprint, fph)
        remove_stale_temporaries(out)

        plan = plan_shards(dataset, fph, options.shard_size)
        tasks = slice_tasks(plan, options.slice_index, options.num_slices) if options.sliced else plan
        for relpath in rebuild:
            if os.path.isfile(os.path.join(out, relpath)):
                os.remove(os.path.join(out, relpath))
        known = _known_shards(out, tasks, fph)
        pending = [t for t in tasks if t.relpath not in known]
        images = sum(len(t.records) for t in pending)

        start = time.perf_counter()
        written = engine.run(pending, dataset, build, options, fph, timing)
        extract_seconds = time.perf_counter() - start

        shards = {**known, **{s.file: s for s in written}}
        ordered = [shards[t.relpath] for t in tasks]
        remove_stale_temporaries(out)  # left by workers killed mid-shard and retried elsewhere
        duplicates = _duplicate_warnings(out, ordered, dataset.class_names)
        manifest = _manifest(out, fingerprint, fph, dataset, ordered, options, info, duplicates)
        if options.sliced:
            # a slice is not a cache: `featcache merge` turns all slices into one manifest
            manifest["status"] = "slice"
            manifest["slice"] = {"index": options.slice_index, "count": options.num_slices,
                                 "plan": [t.relpath for t in plan]}
        manifest_path = os.path.join(out, SLICE_MANIFEST if options.sliced else MANIFEST_FILE)
        try:
            write_json_atomic(manifest_path, manifest)
        except OSError as exc:
            raise write_failed(manifest_path, exc) from None
        _remove_unplanned_shards(out, {t.relpath for t in tasks})

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
        warnings=list(dataset.warnings) + duplicates,
        weights=info.weights,
    )


def _duplicate_warnings(out: str, shards: list[ShardInfo], class_names: list[str],
                        listed: int = 5) -> list[str]:
    """One warning per image content filed under more than one class.

    The same bytes with two labels are contradictory training data; both rows
    are kept (they are distinct files), and the user is told.
    """
    seen: dict[str, dict[int, str]] = {}
    for info in shards:
        for digest, label, path in read_hashes(out, info.file):
            seen.setdefault(digest, {}).setdefault(label, path)
    clashes = [by_label for by_label in seen.values() if len(by_label) > 1]
    warnings = []
    for by_label in clashes[:listed]:
        names = ", ".join(f"{p} ({class_names[c]})" for c, p in sorted(by_label.items()))
        warnings.append(f"identical image content under different classes: {names}")
    if len(clashes) > listed:
        warnings.append(f"and {len(clashes) - listed} more images filed under several classes")
    return warnings


def _manifest(out, fingerprint, fph, dataset: Dataset, shards: list[ShardInfo],
              options: ExtractOptions, extractor: ExtractorInfo, duplicates: list[str] = ()) -> dict:
    splits: dict[str, dict] = {}
    for info in shards:
        entry = splits.setdefault(info.split, {"rows": 0, "skipped": 0, "shards": 0})
        entry["rows"] += info.rows
        entry["skipped"] += len(info.skipped)
        entry["shards"] += 1
    return {
        "featcache_format": FORMAT_VERSION,
        "featcache_version": __version__,
        "status": "complete",
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fingerprint_hash": fph,
        "fingerprint": fingerprint,
        "class_names": dataset.class_names,
        "splits": splits,
        "source": {
            "data": os.path.abspath(options.data),
            "root": dataset.root,
            "layout": dataset.layout,
            "val_split": options.val_fraction,
            "test_split": options.test_fraction,
        },
        "weights": extractor.weights,
        "extraction": {"tap": extractor.tap_name, "batch_size": options.batch_size,
                       "shard_size": options.shard_size, "engine": options.engine},
        "shards": [dict(info.to_json(), skipped=info.skipped) for info in shards],
        "ignored": [{"path": p, "reason": r} for p, r in dataset.ignored],
        "warnings": list(dataset.warnings) + list(duplicates),
    }


def _remove_unplanned_shards(out: str, planned: set[str]) -> None:
    folder = os.path.join(out, SHARDS_DIR)
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        rel = f"{SHARDS_DIR}/{name}"
        if name.endswith(".h5") and rel not in planned:
            os.remove(os.path.join(folder, name))
