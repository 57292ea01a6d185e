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
    r.add_argument("--workers", type=int, help="decoding threads (default: CPU count, at most 8)")
    r.add_argument("--shard-size", type=int, default=1024,
                   help="rows per HDF5 shard; the unit of resume (default 1024)")


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
        progress=False if (args.quiet or args.json) else None)
    with _stdout_for_json(args.json):
        summary = extract(options)
    if args.json:
        _print_json(summary.to_json())
    elif not args.quiet:
        print(extract_summary(summary))
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


# ---------------------------------------------------------------- demo
def _cmd_demo(args) -> int:
    from .demo import run_demo
    from .report import extract_summary

    print("featcache demo: MobileNet features of 350 CIFAR-10 images shipped with featcache",
          file=sys.stderr)
    with _stdout_for_json(args.json):
        summary = run_demo(out=args.out, weights_dir=args.weights_dir,
                           progress=False if args.json else None)
    if args.json:
        _print_json(summary.to_json())
        return 0
    print(extract_summary(summary))
    print(f"\nNext: load the features in Python with "
          f"featcache.load_features('{summary.cache}', 'train'), "
          f"or inspect them with: featcache info {summary.cache}")
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

    p = sub.add_parser("info", help="show what a cache holds and how it was made")
    p.add_argument("cache", help="cache folder")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.set_defaults(handler=_cmd_info)

    p = sub.add_parser("backbones", help="list the backbones featcache knows")
    p.add_argument("--weights-dir", help="offline weights folder to check")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_backbones)

    p = sub.add_parser("layers", help="list a backbone's layers, for --layer")
    p.add_argument("backbone")
    p.add_argument("--image-size", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_layers)

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
        print(f"featcache: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("featcache: interrupted. Finished shards are kept; run the same command again "
              "to resume.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
