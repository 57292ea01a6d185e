"""The `featcache` command line: parse flags, make one library call, print.

Every `FeatcacheError` becomes one line on stderr and exit code 2; Ctrl-C
becomes a line saying how to resume and exit code 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings

from . import __version__
from .errors import FeatcacheError, FeatcacheWarning


def _print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


@contextlib.contextmanager
def _stdout_for_json(enabled: bool):
    """With --json, anything libraries print goes to stderr so stdout stays JSON."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """featcache's own warnings as one plain line; others as Python shows them."""
    if issubclass(category, FeatcacheWarning):
        print(f"featcache: WARNING: {message}", file=sys.stderr)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


# ---------------------------------------------------------------- extract
def _add_extract_flags(p: argparse.ArgumentParser) -> None:
    from .decode import ASPECTS, DEFAULT_MAX_PIXELS, RESAMPLING

    g = p.add_argument_group("what to extract")
    g.add_argument("--backbone", default="mobilenet",
                   help="registry name (see `featcache backbones`); default mobilenet")
    g.add_argument("--image-size", type=int, help="square input size (default: the backbone's own)")
    g.add_argument("--pooling", choices=["avg", "max", "none"],
                   help="global pooling of a spatial tap; none keeps the map (default avg)")
    g.add_argument("--layer", help="tap this named layer instead of the final conv output "
                                   "(e.g. block4_pool; fc1/fc2 for VGG); see `featcache layers`")
    g.add_argument("--weights", default="imagenet",
                   help="imagenet (default), none (random: meaningless features) or a weights file")
    g.add_argument("--weights-dir", help="offline folder of Keras weight files "
                                         "(default: $FEATCACHE_WEIGHTS_DIR)")
    g.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="storage dtype of the features (float16 halves the bytes)")
    g.add_argument("--resize", choices=sorted(RESAMPLING), default="bilinear",
                   help="resampling filter (default bilinear)")
    g.add_argument("--aspect", choices=ASPECTS, default="stretch",
                   help="stretch to the size (default), centre-crop, or pad")
    g.add_argument("--seed", type=int, default=0, help="seed for random weights (--weights none)")
    d = p.add_argument_group("input")
    d.add_argument("--val-split", type=float, default=0.0,
                   help="carve this fraction of train into val, by file content hash")
    d.add_argument("--test-split", type=float, default=0.0,
                   help="carve this fraction of train into test, by file content hash")
    d.add_argument("--root", help="for a CSV/TSV list: folder its paths are relative to "
                                  "(default: the list's folder)")
    d.add_argument("--allow-outside-root", action="store_true",
                   help="accept list paths outside the data root")
    d.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable image instead of skipping it")
    d.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse images larger than this many pixels (decompression bombs)")
    r = p.add_argument_group("running")
    r.add_argument("--batch-size", type=int, default=32, help="images per backbone call (default 32)")
    r.add_argument("--workers", type=int,
                   help="decoding threads (default: CPU count, at most 8); with --engine dask and "
                        "no --scheduler: worker processes of a cluster on this machine")
    r.add_argument("--shard-size", type=int, default=1024,
                   help="images per HDF5 shard; the unit of resume and of distributed work "
                        "(default 1024)")
    r.add_argument("--augment-views", type=int, default=0, metavar="K",
                   help="also store K augmented views (flip, crop, rotation, colour jitter) of each "
                        "training image, next to the image itself (view 0); val/test stay clean")
    r.add_argument("--augment-seed", type=int, default=0,
                   help="seed of the augmented views (default 0)")
    c = p.add_argument_group("scaling out")
    c.add_argument("--engine", choices=["local", "dask"], default="local",
                   help="local (default): this process; dask: shard tasks on a dask.distributed "
                        "cluster (needs a filesystem all workers share)")
    c.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler to send shard tasks to, e.g. tcp://10.0.0.5:8786 "
                        "(default: start a local cluster of --workers processes)")
    c.add_argument("--retries", type=int, default=3,
                   help="Dask: times a failed shard task is retried (default 3)")
    c.add_argument("--num-slices", "--num-shards", dest="num_slices", type=int, default=1,
                   metavar="K", help="split the plan into K slices run anywhere (e.g. a Slurm "
                                     "array); each writes to OUT/parts/; `featcache merge OUT` joins them")
    c.add_argument("--slice-index", "--shard-index", dest="slice_index", type=int, metavar="I",
                   help="the slice (0..K-1) this run extracts")


def _cmd_extract(args) -> int:
    from .extract import ExtractOptions, extract
    from .report import extract_summary

    options = ExtractOptions(
        data=args.data, out=args.out, backbone=args.backbone, image_size=args.image_size,
        layer=args.layer, pooling=args.pooling, weights=args.weights,
        weights_dir=args.weights_dir, batch_size=args.batch_size, dtype=args.dtype,
        val_split=args.val_split, test_split=args.test_split, root=args.root,
        allow_outside_root=args.allow_outside_root, strict=args.strict, workers=args.workers,
        shard_size=args.shard_size, resize=args.resize, aspect=args.aspect,
        max_pixels=args.max_pixels, seed=args.seed,
        progress=False if (args.quiet or args.json) else None, engine=args.engine,
        scheduler=args.scheduler, retries=args.retries, num_slices=args.num_slices,
        slice_index=args.slice_index, augment_views=args.augment_views,
        augment_seed=args.augment_seed)
    with _stdout_for_json(args.json):
        summary = extract(options)
    if args.json:
        _print_json(summary.to_json())
    elif not args.quiet:
        print(extract_summary(summary))
    return 0


# ---------------------------------------------------------------- merge
def _cmd_merge(args) -> int:
    from .merge import merge_slices

    summary = merge_slices(args.cache, remove_parts=args.remove_parts)
    if args.json:
        _print_json(summary.to_json())
    else:
        rows = " · ".join(f"{k} {v}" for k, v in summary.splits.items())
        print(f"featcache merge: {summary.slices} slices, {summary.shards} shards into "
              f"{summary.cache} ({rows}); {summary.linked} linked, {summary.copied} copied"
              + ("; parts/ removed" if summary.parts_removed else ""))
    return 0


# ---------------------------------------------------------------- fuse
def _cmd_fuse(args) -> int:
    from .fusion import fuse_caches

    summary = fuse_caches(args.first, args.second, args.out)
    if args.json:
        _print_json(summary.to_json())
    else:
        rows = " · ".join(f"{k} {v}" for k, v in summary.splits.items())
        print(f"featcache fuse: {summary.feature_shape[0]} features per row ({rows}) in "
              f"{summary.cache}; train heads on it with featcache train-head --cache {summary.cache}")
    return 0


# ---------------------------------------------------------------- info
def _cmd_info(args) -> int:
    from .report import cache_info
    from .store import FeatureCache

    cache = FeatureCache(args.cache)
    if args.json:
        _print_json(cache.manifest)
    else:
        print(f"featcache cache {cache.path}")
        print(cache_info(cache.manifest))
    return 0


# ---------------------------------------------------------------- verify
def _cmd_verify(args) -> int:
    from .verify import verify

    with _stdout_for_json(args.json):
        report = verify(args.cache, repair=args.repair, weights_dir=args.weights_dir,
                        weights=args.weights)
    if args.json:
        _print_json(report.to_json())
    else:
        print(f"featcache verify: {report.cache}: {report.shards} shard(s), {report.rows} rows")
        for d in report.damaged:
            state = "repaired" if d["file"] in report.repaired else "DAMAGED"
            print(f"  {state}: {d['file']} ({d['split']}, {d['rows']} rows): "
                  + "; ".join(d["problems"]))
        for note in report.notes:
            print(f"  note: {note}")
        if report.ok:
            print("  ok" if not report.damaged else "  ok after repair")
    if not report.ok:
        print(f"featcache: {len(report.damaged)} damaged shard(s) in {report.cache}; "
              "run featcache verify --repair to re-extract them", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- backbones / layers
def _cmd_backbones(args) -> int:
    from .backbones import BACKBONES, list_backbones
    from .weights import resolve_weights, weights_dir

    offline = weights_dir(args.weights_dir)
    rows = []
    for name in list_backbones():
        spec = BACKBONES[name]
        choice = resolve_weights(spec, "imagenet", spec.input_size, False, offline)
        rows.append({
            "name": name, "builder": f"keras.applications.{spec.builder}",
            "preprocess": spec.preprocess, "input_size": spec.input_size, "min_size": spec.min_size,
            "weights_file": choice.file_name, "offline_weights": choice.path,
            "top_layers": list(spec.top_layers),
        })
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'name':<18} {'builder':<36} {'prep':<6} {'size':>4}  offline weights")
    for row in rows:
        found = "found" if row["offline_weights"] else ("missing" if offline else "-")
        print(f"{row['name']:<18} {row['builder']:<36} {row['preprocess']:<6} "
              f"{row['input_size']:>4}  {found}")
    if not offline:
        print("\n(set --weights-dir or FEATCACHE_WEIGHTS_DIR to check for offline weight files)")
    return 0


def _cmd_layers(args) -> int:
    from ._keras import import_keras
    from .backbones import get_backbone

    spec = get_backbone(args.backbone)
    size = args.image_size or spec.input_size
    keras = import_keras()
    builder = getattr(keras.applications, spec.builder)
    with _stdout_for_json(args.json):
        model = builder(include_top=bool(spec.top_layers), weights=None,
                        input_shape=(size, size, 3))
    rows = [{"name": layer.name, "type": type(layer).__name__,
             "output_shape": list(layer.output.shape[1:]),
             "needs_top": layer.name in spec.top_layers}
            for layer in model.layers]
    if args.json:
        _print_json(rows)
        return 0
    print(f"{spec.name} at {size}x{size} ({len(rows)} layers; the last conv output is the default tap)")
    for row in rows:
        shape = "x".join("?" if d is None else str(d) for d in row["output_shape"])
        note = "  (full network only)" if row["needs_top"] else ""
        print(f"  {row['name']:<32} {row['type']:<24} {shape}{note}")
    return 0


# ---------------------------------------------------------------- heads
def _units(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(u) for u in text.split(",") if u.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if not units or min(units) < 1:
        raise argparse.ArgumentTypeError(f"expected positive layer sizes, got '{text}'")
    return units


def _add_head_flags(p: argparse.ArgumentParser) -> None:
    from .heads.base import SPATIAL_MODES

    k = p.add_argument_group("Keras heads (linear, dense256, dense512, sigmoid, mlp)")
    k.add_argument("--epochs", type=int, help="most epochs (default 30; sgd: 20 passes)")
    k.add_argument("--batch-size", type=int, default=32, help="rows per step (default 32)")
    k.add_argument("--optimizer", choices=["adam", "sgd", "rmsprop"], default="adam",
                   help="adam (default), sgd with momentum 0.9, or rmsprop")
    k.add_argument("--learning-rate", type=float,
                   help="default 1e-3 (adam, rmsprop) or 1e-2 (sgd)")
    k.add_argument("--patience", type=int, default=5,
                   help="epochs without a lower validation loss before stopping (default 5)")
    k.add_argument("--no-early-stopping", dest="early_stopping", action="store_false",
                   help="train all epochs (by default the best validation-loss weights are kept)")
    k.add_argument("--label-smoothing", type=float, default=0.0)
    k.add_argument("--units", type=_units, default=(512, 128),
                   help="mlp hidden layer sizes, e.g. 512,128 (default)")
    k.add_argument("--dropout", type=float, default=0.5, help="dropout after hidden layers (default 0.5)")
    k.add_argument("--l2", type=float, default=0.0, help="L2 weight penalty (default 0)")
    s = p.add_argument_group("scikit-learn heads (logreg, linear-svm, sgd, ridge, knn, random-forest)")
    s.add_argument("--C", type=float, dest="C", help="inverse regularisation (logreg 1.0, linear-svm 0.01)")
    s.add_argument("--alpha", type=float, help="regularisation (ridge 1.0, sgd 1e-3)")
    s.add_argument("--neighbors", type=int, help="knn: neighbours (default 5)")
    s.add_argument("--trees", type=int, help="random-forest: trees (default 200)")
    s.add_argument("--scale", action=argparse.BooleanOptionalAction, default=None,
                   help="standardise features first (default: on for sgd only)")
    s.add_argument("--pca", type=int, help="reduce to this many PCA components first")
    s.add_argument("--search", action="store_true",
                   help="cross-validate the main hyper-parameter (folds in parallel)")
    s.add_argument("--cv", type=int, default=5, help="folds for --search (default 5)")
    b = p.add_argument_group("both")
    b.add_argument("--class-weight", choices=["balanced"], help="weight classes by inverse frequency")
    b.add_argument("--spatial", choices=SPATIAL_MODES,
                   help="how spatial features reach the head (default: flatten for linear, dense256 "
                        "and sigmoid; avg for the others)")
    b.add_argument("--seed", type=int, default=0, help="makes training repeat exactly (default 0)")
    b.add_argument("--max-memory", help="memory for features, e.g. 2GB (default: half of RAM); "
                                        "larger caches stream from disk")
    b.add_argument("--shuffle-window", type=int,
                   help="rows shuffled together per window (default: about 64 MiB of rows)")


_HEAD_PARAMS = ("epochs", "batch_size", "optimizer", "learning_rate", "early_stopping", "patience",
                "class_weight", "label_smoothing", "units", "dropout", "l2", "C", "alpha", "neighbors",
                "trees", "scale", "pca", "search", "cv", "spatial", "shuffle_window", "seed")


def _head_options(args) -> dict:
    """The head parameters given on the command line (a flag left at its default is not given)."""
    defaults = argparse.ArgumentParser()
    _add_head_flags(defaults)
    unset = vars(defaults.parse_args([]))
    return {k: getattr(args, k) for k in _HEAD_PARAMS if getattr(args, k) != unset[k]}


def _cmd_train_head(args) -> int:
    from .report import train_summary
    from .train import train_head

    with _stdout_for_json(args.json):
        summary = train_head(args.cache, args.model, args.out, params=_head_options(args),
                             train_split=args.train_split, val_split=args.val_split,
                             max_memory=args.max_memory,
                             progress=False if (args.quiet or args.json) else None)
    if args.json:
        _print_json(summary.to_json())
    elif not args.quiet:
        print(train_summary(summary))
    return 0


def _cmd_evaluate(args) -> int:
    from .report import metrics_text
    from .train import evaluate

    with _stdout_for_json(args.json):
        metrics = evaluate(args.model, args.cache, args.split, trust=args.trust)
    if args.json:
        _print_json(metrics)
    else:
        print(metrics_text(metrics, f"featcache evaluate: {metrics['head']} on {args.cache} "
                                    f"[{args.split}]"))
    return 0


def _cmd_predict(args) -> int:
    from .predict import predict_images

    with _stdout_for_json(args.json):
        results = predict_images(args.model, args.inputs, top_k=args.top_k,
                                 weights_dir=args.weights_dir, weights=args.weights,
                                 batch_size=args.batch_size, trust=args.trust)
    if args.json:
        _print_json(results)
    else:
        for row in results:
            if "error" in row:
                print(f"{row['path']}: ERROR {row['error']}")
            else:
                ranked = "  ".join(f"{c['label']} {c['score']:.3f}" for c in row["top_k"])
                print(f"{row['path']}: {ranked}")
    failed = [r for r in results if "error" in r]
    if failed:
        print(f"featcache: {len(failed)} of {len(results)} file(s) could not be read", file=sys.stderr)
        return 1
    return 0


def _cmd_export(args) -> int:
    from .export import export_model

    with _stdout_for_json(args.json):
        info = export_model(args.model, args.out, weights_dir=args.weights_dir,
                            weights=args.weights, trust=args.trust)
    if args.json:
        _print_json(info)
    else:
        print(f"featcache export: wrote {info['model']} ({info['backbone']} + {info['head']}, "
              f"{len(info['class_names'])} classes); classes and input format in {info['sidecar']}")
    return 0


def _cmd_heads(args) -> int:
    from .heads import HEADS, list_heads

    rows = [{"name": n, "kind": HEADS[n].kind, "description": HEADS[n].description,
             "streams_from_disk": HEADS[n].streamable, "exportable": HEADS[n].exportable}
            for n in list_heads()]
    if args.json:
        _print_json(rows)
        return 0
    for row in rows:
        flags = ", ".join(f for f, on in (("streams", row["streams_from_disk"]),
                                           ("exports", row["exportable"])) if on)
        print(f"{row['name']:<14} {row['kind']:<8} {row['description']}" + (f"  [{flags}]" if flags else ""))
    return 0


# ---------------------------------------------------------------- finetune
def _cmd_finetune(args) -> int:
    from .finetune import FinetuneOptions, finetune
    from .report import finetune_summary

    options = FinetuneOptions(
        unfreeze_top=args.unfreeze_top, unfreeze_from=args.unfreeze_from, epochs=args.epochs,
        batch_size=args.batch_size, optimizer=args.optimizer, learning_rate=args.learning_rate,
        early_stopping=args.early_stopping, patience=args.patience, augment=args.augment,
        class_weight=args.class_weight, mixed_precision=args.mixed_precision,
        val_split=args.val_split, test_split=args.test_split, seed=args.seed, workers=args.workers)
    with _stdout_for_json(args.json):
        summary = finetune(args.data, args.head, args.out, options, resume=args.resume,
                           weights_dir=args.weights_dir, weights=args.weights,
                           progress=False if (args.quiet or args.json) else None, trust=args.trust)
    if args.json:
        _print_json(summary.to_json())
    elif not args.quiet:
        print(finetune_summary(summary))
    return 0


# ---------------------------------------------------------------- demo
def _cmd_demo(args) -> int:
    from .demo import run_demo
    from .report import extract_summary, train_summary

    print("featcache demo: MobileNet features of 350 CIFAR-10 images shipped with featcache, "
          "then a logistic-regression head", file=sys.stderr)
    with _stdout_for_json(args.json):
        result = run_demo(out=args.out, weights_dir=args.weights_dir,
                          progress=False if args.json else None)
    if args.json:
        _print_json(result.to_json())
        return 0
    print(extract_summary(result.extraction))
    print()
    print(train_summary(result.training))
    head = result.training.out
    print(f"\nNext: look at {head}/confusion_matrix.png, classify images with\n"
          f"  featcache predict --model {head} IMAGE_OR_FOLDER\n"
          f"or try another head: featcache heads")
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featcache",
        description="Run a frozen pretrained CNN once, cache its features in HDF5, "
                    "train heads on them in seconds.")
    parser.add_argument("--version", action="version", version=f"featcache {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("extract", help="extract backbone features of an image folder into a cache",
                       description="Extract backbone features of an image folder or CSV/TSV list "
                                   "into an HDF5 feature cache. Rerun the same command to resume.")
    p.add_argument("--data", required=True,
                   help="folder of class folders (optionally inside train/ val/ test/), "
                        "or a CSV/TSV of path,label[,split]")
    p.add_argument("--out", required=True, help="cache folder to create or resume")
    _add_extract_flags(p)
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(handler=_cmd_extract)

    p = sub.add_parser("merge", help="join the slices of a sliced extraction into one cache",
                       description="Join CACHE/parts/slice-I-of-K (from featcache extract "
                                   "--num-slices K --slice-index I) into the cache CACHE.")
    p.add_argument("cache", help="the --out folder the slices were extracted to")
    p.add_argument("--remove-parts", action="store_true",
                   help="delete CACHE/parts/ once the cache is complete")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_merge)

    p = sub.add_parser("fuse", help="join two caches of the same images into one (features side by side)",
                       description="Match the rows of two caches by image content hash and write a "
                                   "cache whose features are the first's followed by the second's.")
    p.add_argument("first", help="a cache folder")
    p.add_argument("second", help="a cache of the same images made another way (e.g. another backbone)")
    p.add_argument("--out", required=True, help="folder for the fused cache")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_fuse)

    p = sub.add_parser("info", help="show what a cache holds and how it was made")
    p.add_argument("cache", help="cache folder")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.set_defaults(handler=_cmd_info)

    p = sub.add_parser("verify", help="re-read every shard of a cache and check it; --repair fixes",
                       description="Re-read every shard of a cache and check its checksum, size, "
                                   "row count and fingerprint against the manifest. Exit code 1 "
                                   "when damage is found and not repaired.")
    p.add_argument("cache", help="cache folder")
    p.add_argument("--repair", action="store_true",
                   help="re-extract only the damaged shards from the original images")
    p.add_argument("--weights-dir", help="offline weights folder, for --repair "
                                         "(default: $FEATCACHE_WEIGHTS_DIR)")
    p.add_argument("--weights", help="weights file, for --repair of a cache made with --weights PATH")
    p.add_argument("--json", action="store_true", help="print a machine-readable report")
    p.set_defaults(handler=_cmd_verify)

    p = sub.add_parser("backbones", help="list the backbones featcache knows")
    p.add_argument("--weights-dir", help="offline weights folder to check")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_backbones)

    p = sub.add_parser("layers", help="list a backbone's layers, for --layer")
    p.add_argument("backbone")
    p.add_argument("--image-size", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_layers)

    p = sub.add_parser("train-head", help="train a head on cached features",
                       description="Train a Keras or scikit-learn head on a cache and write the "
                                   "model, metrics, history and plots to --out.")
    p.add_argument("--cache", required=True, help="cache folder from featcache extract")
    p.add_argument("--model", required=True, help="head name (see `featcache heads`)")
    p.add_argument("--out", required=True, help="folder for the trained head")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val", help="split for early stopping and metrics")
    _add_head_flags(p)
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_cmd_train_head)

    p = sub.add_parser("evaluate", help="score a trained head on a split of a cache")
    p.add_argument("--model", required=True, help="head folder from featcache train-head")
    p.add_argument("--cache", required=True, help="cache made the same way as the training cache")
    p.add_argument("--split", default="val")
    p.add_argument("--trust", action="store_true", help="load a scikit-learn pickle featcache did "
                                                        "not write for you")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("predict", help="classify image files with a trained head")
    p.add_argument("--model", required=True, help="head folder from featcache train-head")
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_FOLDERS")
    p.add_argument("--top-k", type=int, default=3, help="classes to show per image (default 3)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--weights-dir", help="offline weights folder (default: $FEATCACHE_WEIGHTS_DIR)")
    p.add_argument("--weights", help="weights file, for heads whose cache used --weights PATH")
    p.add_argument("--trust", action="store_true")
    p.add_argument("--json", action="store_true", help="per image: path, label, score, top_k")
    p.set_defaults(handler=_cmd_predict)

    p = sub.add_parser("export", help="write backbone + head as one Keras model")
    p.add_argument("--model", required=True, help="head folder from featcache train-head")
    p.add_argument("--out", required=True, help="the .keras file to write")
    p.add_argument("--weights-dir", help="offline weights folder (default: $FEATCACHE_WEIGHTS_DIR)")
    p.add_argument("--weights", help="weights file, for heads whose cache used --weights PATH")
    p.add_argument("--trust", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_export)

    p = sub.add_parser("finetune", help="fine-tune the top of the backbone with a trained head",
                       description="Build augmentation + preprocessing + backbone + trained head as "
                                   "one model, unfreeze the top of the backbone and train end to end "
                                   "with a small learning rate. Interrupted? Rerun with --resume.")
    p.add_argument("--data", required=True, help="image folder or CSV/TSV list, as for extract")
    p.add_argument("--head", required=True, help="head folder from featcache train-head")
    p.add_argument("--out", required=True, help="folder for the fine-tuned model")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--unfreeze-top", type=int,
                   help="train the backbone's last N conv/dense layers; BatchNorm stays frozen (default 0: head only)")
    g.add_argument("--unfreeze-from", help="train from this backbone layer up, e.g. block5_conv1")
    p.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs (default 5)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", choices=["adam", "sgd", "rmsprop"], default="adam")
    p.add_argument("--learning-rate", type=float,
                   help="default 1e-5 (adam, rmsprop) or 1e-4 (sgd, momentum 0.9)")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--no-early-stopping", dest="early_stopping", action="store_false")
    p.add_argument("--augment", default="flip,rotation=0.1,zoom=0.1,translation=0.1",
                   help="augmentation while training (default: %(default)s; 'none' to turn off)")
    p.add_argument("--class-weight", choices=["balanced"])
    p.add_argument("--mixed-precision", action="store_true",
                   help="float16 compute with float32 weights (for GPUs; slow on most CPUs)")
    p.add_argument("--val-split", type=float, default=0.0)
    p.add_argument("--test-split", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, help="decoding threads")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--weights-dir", help="offline weights folder (default: $FEATCACHE_WEIGHTS_DIR)")
    p.add_argument("--weights", help="weights file, for heads whose cache used --weights PATH")
    p.add_argument("--trust", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_cmd_finetune)

    p = sub.add_parser("heads", help="list the heads featcache can train")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_heads)

    p = sub.add_parser("demo", help="run the whole job on the built-in CIFAR-10 sample")
    p.add_argument("--out", default="featcache-demo", help="output folder (default featcache-demo)")
    p.add_argument("--weights-dir", help="offline weights folder (default: $FEATCACHE_WEIGHTS_DIR)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.filterwarnings("always", category=FeatcacheWarning)
        warnings.showwarning = _show_warning
        return _run(args)


def _run(args) -> int:
    try:
        return args.handler(args)
    except FeatcacheError as exc:
        from .report import printable

        print(f"featcache: error: {printable(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = {"extract": " Finished shards are kept; run the same command again to resume.",
                "demo": " Finished shards are kept; run it again to resume.",
                "finetune": " Finished epochs are checkpointed; add --resume to continue."}
        print(f"featcache: interrupted.{hint.get(args.command, '')}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
