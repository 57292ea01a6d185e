"""The `featcache` command line: parse flags, make one library call, print.

Each subcommand is one row of `COMMANDS`: the function that adds its flags
and the handler that calls the library and prints what `featcache.report`
formats. Flags that fill an options dataclass have the field's name as their
`dest`, so `options_from_args` builds it. Every `FeatcacheError` becomes one
line on stderr (parameters spelled as flags) and exit code 2; Ctrl-C becomes
a line saying how to resume and exit code 130.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import warnings
from typing import Callable, NamedTuple

from . import report
from .api import TOP_K
from ._version import __version__
from .errors import FeatcacheError, FeatcacheWarning, UsageError, param
from .hardware import PRECISIONS
from .quantize import CALIBRATION_IMAGES
from .runtimes import RUNTIME_CHOICES, RUNTIMES


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


def _emit(args, result, text: Callable[[object], str]) -> None:
    """Print `result` as JSON with --json, else as `text(result)` unless --quiet."""
    if args.json:
        _print_json(result.to_json() if hasattr(result, "to_json") else result)
    elif not getattr(args, "quiet", False) and (lines := text(result)):
        print(lines)


def _progress(args) -> bool | None:
    """Progress bars: off with --quiet or --json, else the library decides (on a terminal)."""
    return False if (getattr(args, "quiet", False) or args.json) else None


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """featcache's own warnings as one plain line; others as Python shows them."""
    if issubclass(category, FeatcacheWarning):
        text = message.cli_message() if isinstance(message, FeatcacheWarning) else message
        print(f"featcache: WARNING: {text}", file=sys.stderr)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def options_from_args(cls, args: argparse.Namespace, **overrides):
    """Build the options dataclass `cls` from the flags whose `dest` is one of its fields.

    Args:
        cls: a dataclass such as `ExtractOptions` or `FinetuneOptions`.
        args: parsed flags; attributes that are not fields of `cls` are ignored.
        **overrides: values for fields no flag sets (e.g. `progress`).

    Returns:
        An instance of `cls`; fields neither parsed nor overridden keep their defaults.
    """
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
              if f.init and not f.metadata.get("deprecated") and hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


class _Store(argparse.Action):
    """Store a flag's value; its old spellings still parse but print a deprecation note."""

    def __init__(self, option_strings, dest, deprecated=(), **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.deprecated = tuple(deprecated)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.deprecated:
            print(report.deprecated_flag(option_string, self.option_strings[0]), file=sys.stderr)
        setattr(namespace, self.dest, values)


def _flag(p, name: str, *, deprecated: tuple[str, ...] = (), **kwargs) -> argparse.Action:
    """Add flag `name`; each spelling in `deprecated` still works, with a note on stderr.

    The old spellings are registered with the parser, then dropped from the
    action's `option_strings`, so help, usage and error messages show only `name`.
    """
    action = p.add_argument(name, *deprecated, action=_Store, deprecated=deprecated, **kwargs)
    action.option_strings = [name]
    return action


def _add_output_flags(p, quiet: bool = False, json_help: str = "print machine-readable JSON") -> None:
    p.add_argument("--json", action="store_true", help=json_help)
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")




def _add_precision_override(p) -> None:
    p.add_argument("--precision", choices=PRECISIONS,
                   help="compute the backbone's features in this precision instead of the "
                        "cache's (a warning says the head was trained on other features)")


def _add_weights_flags(p) -> None:
    """--weights-dir and --weights, where a head's backbone is rebuilt."""
    p.add_argument("--weights-dir", help="offline folder of Keras weight files "
                                         "(default: $FEATCACHE_WEIGHTS_DIR)")
    p.add_argument("--weights", help="weights file, for heads whose cache used --weights PATH")


def _add_trust_flag(p) -> None:
    p.add_argument("--trust", action="store_true",
                   help="load a scikit-learn pickle featcache did not write for you")


def _add_model_flag(p, deprecated: tuple[str, ...] = ()) -> None:
    _flag(p, "--model", deprecated=deprecated, required=True, metavar="HEAD_DIR",
          help="head folder from featcache train-head")


def _add_fraction_flags(p) -> None:
    """--val-fraction / --test-fraction; the old --val-split / --test-split still work."""
    _flag(p, "--val-fraction", deprecated=("--val-split",), type=float, default=0.0, metavar="F",
          help="carve this fraction of train into val, by file content hash (default 0)")
    _flag(p, "--test-fraction", deprecated=("--test-split",), type=float, default=0.0, metavar="F",
          help="carve this fraction of train into test, by file content hash (default 0)")


# ---------------------------------------------------------------- extract
def _add_extract_flags(p: argparse.ArgumentParser) -> None:
    from .decode import ASPECTS, DECODES, DEFAULT_MAX_PIXELS, RESAMPLING

    p.add_argument("--data", required=True,
                   help="folder of class folders (optionally inside train/ val/ test/), "
                        "or a CSV/TSV of path,label[,split]")
    p.add_argument("--out", required=True, help="cache folder to create or resume")
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
    g.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto",
                   help="what runs the backbone: auto (default: OpenVINO on x86 CPUs where it "
                        "is installed, Keras on GPUs; a resumed cache keeps its own; "
                        "FEATCACHE_RUNTIME sets it), keras, or openvino (the same features at "
                        "float32); part of the cache's fingerprint")
    g.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="what the backbone computes in: float32 (default), bfloat16 (about 2x "
                        "faster for VGG-size backbones on CPUs with AVX512_BF16/AMX, see "
                        "`featcache hardware`), float16 (GPUs) or int8 (with --runtime openvino: "
                        "quantized on your training images, its feature error measured and "
                        "reported); part of the cache's fingerprint")
    g.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES, metavar="N",
                   help="--precision int8: how many training images (drawn with --seed) "
                        "calibrate the quantization (default 300)")
    g.add_argument("--resize", choices=sorted(RESAMPLING), default="bilinear",
                   help="resampling filter (default bilinear)")
    g.add_argument("--aspect", choices=ASPECTS, default="stretch",
                   help="stretch to the size (default), centre-crop, or pad")
    g.add_argument("--decode", choices=DECODES,
                   help="fast (default for a new cache): JPEGs much larger than the input size are "
                        "decoded at 1/2-1/8 scale first, several times faster on photos; exact: "
                        "every pixel. Part of the fingerprint; default when resuming: the cache's")
    g.add_argument("--seed", type=int, default=0, help="seed for random weights (--weights none)")
    d = p.add_argument_group("input")
    _add_fraction_flags(d)
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
    _add_output_flags(p, quiet=True, json_help="print a machine-readable summary")


def _cmd_extract(args) -> int:
    from .api import extract
    from .extract import ExtractOptions

    options = options_from_args(ExtractOptions, args, progress=_progress(args))
    with _stdout_for_json(args.json):
        summary = extract(options)
    _emit(args, summary, report.extract_summary)
    return 0


# ---------------------------------------------------------------- merge / fuse / info / verify
def _add_merge_flags(p) -> None:
    p.add_argument("cache", help="the --out folder the slices were extracted to")
    p.add_argument("--remove-parts", action="store_true",
                   help="delete CACHE/parts/ once the cache is complete")
    _add_output_flags(p)


def _cmd_merge(args) -> int:
    from .extract.merge import merge_slices

    _emit(args, merge_slices(args.cache, remove_parts=args.remove_parts), report.merge_summary)
    return 0


def _add_fuse_flags(p) -> None:
    p.add_argument("first", help="a cache folder")
    p.add_argument("second", help="a cache of the same images made another way (e.g. another backbone)")
    p.add_argument("--out", required=True, help="folder for the fused cache")
    _add_output_flags(p)


def _cmd_fuse(args) -> int:
    from .fusion import fuse_caches

    _emit(args, fuse_caches(args.first, args.second, args.out), report.fuse_summary)
    return 0


def _add_info_flags(p) -> None:
    p.add_argument("cache", help="cache folder")
    _add_output_flags(p, json_help="print the whole manifest as JSON")


def _cmd_info(args) -> int:
    from .cache import FeatureCache

    cache = FeatureCache(args.cache)
    _emit(args, cache.manifest, lambda manifest: report.info_summary(cache.path, manifest))
    return 0


def _add_verify_flags(p) -> None:
    p.add_argument("cache", help="cache folder")
    p.add_argument("--repair", action="store_true",
                   help="re-extract only the damaged shards from the original images")
    p.add_argument("--weights-dir", help="offline weights folder, for --repair "
                                         "(default: $FEATCACHE_WEIGHTS_DIR)")
    p.add_argument("--weights", help="weights file, for --repair of a cache made with --weights PATH")
    _add_output_flags(p, json_help="print a machine-readable report")


def _cmd_verify(args) -> int:
    from .verify import verify

    with _stdout_for_json(args.json):
        result = verify(args.cache, repair=args.repair, weights_dir=args.weights_dir,
                        weights=args.weights)
    _emit(args, result, report.verify_summary)
    if not result.ok:
        print(report.verify_failure(result), file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- backbones / layers / heads
def _add_backbones_flags(p) -> None:
    p.add_argument("--weights-dir", help="offline weights folder to check "
                                         "(default: $FEATCACHE_WEIGHTS_DIR)")
    _add_output_flags(p)


def _cmd_backbones(args) -> int:
    from .weights import list_backbone_weights

    _emit(args, list_backbone_weights(args.weights_dir), report.backbones_table)
    return 0


def _add_hardware_flags(p) -> None:
    _add_output_flags(p)


def _cmd_hardware(args) -> int:
    from .hardware import describe

    _emit(args, describe(), report.hardware_text)
    return 0


def _add_layers_flags(p) -> None:
    p.add_argument("backbone", help="registry name (see `featcache backbones`)")
    p.add_argument("--image-size", type=int, help="square input size (default: the backbone's own)")
    _add_output_flags(p)


def _cmd_layers(args) -> int:
    from .feature_model import list_layers

    with _stdout_for_json(args.json):
        listing = list_layers(args.backbone, args.image_size)
    _emit(args, listing, report.layers_table)
    return 0


def _add_heads_list_flags(p) -> None:
    _add_output_flags(p)


def _cmd_heads(args) -> int:
    from .heads import HEADS, list_heads

    rows = [{"name": n, "kind": HEADS[n].kind, "description": HEADS[n].description,
             "streams_from_disk": HEADS[n].streamable, "exportable": HEADS[n].exportable}
            for n in list_heads()]
    _emit(args, rows, report.heads_table)
    return 0


# ---------------------------------------------------------------- train-head
def _add_train_head_flags(p) -> None:
    p.add_argument("--cache", required=True, help="cache folder from featcache extract")
    p.add_argument("--model", required=True,
                   help="head name (see `featcache heads`), or auto: compare the heads on the "
                        "training split (as featcache compare does) and keep the winner")
    p.add_argument("--out", required=True, help="folder for the trained head")
    p.add_argument("--calibrate", action="store_true",
                   help="calibrate the probabilities on held-out training folds (temperature "
                        "scaling; scikit-learn heads through CalibratedClassifierCV); metrics "
                        "report the expected calibration error before and after")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="with --model auto: seconds the comparison may take")
    p.add_argument("--train-split", default="train", metavar="NAME",
                   help="split to train on (default train)")
    p.add_argument("--val-split", default="val", metavar="NAME",
                   help="split for early stopping and metrics (default val)")
    _add_head_flags(p)
    _add_output_flags(p, quiet=True, json_help="print a machine-readable summary")


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
    k.add_argument("--batch-size", type=int, help="rows per step (default 32)")
    k.add_argument("--optimizer", choices=["adam", "sgd", "rmsprop"],
                   help="adam (default), sgd with momentum 0.9, or rmsprop")
    k.add_argument("--learning-rate", type=float,
                   help="default 1e-3 (adam, rmsprop) or 1e-2 (sgd)")
    k.add_argument("--patience", type=int,
                   help="epochs without a lower validation loss before stopping (default 5)")
    k.add_argument("--no-early-stopping", dest="early_stopping", action="store_false", default=None,
                   help="train all epochs (by default the best validation-loss weights are kept)")
    k.add_argument("--label-smoothing", type=float, help="default 0")
    k.add_argument("--units", type=_units,
                   help="mlp hidden layer sizes, e.g. 512,128 (default)")
    k.add_argument("--dropout", type=float, help="dropout after hidden layers (default 0.5)")
    k.add_argument("--l2", type=float, help="L2 weight penalty (default 0)")
    s = p.add_argument_group("scikit-learn heads (logreg, linear-svm, sgd, ridge, knn, random-forest)")
    s.add_argument("--C", type=float, dest="C", help="inverse regularisation (logreg 1.0, linear-svm 0.01)")
    s.add_argument("--alpha", type=float, help="regularisation (ridge 1.0, sgd 1e-3)")
    s.add_argument("--neighbors", type=int, help="knn: neighbours (default 5)")
    s.add_argument("--trees", type=int, help="random-forest: trees (default 200)")
    s.add_argument("--scale", action=argparse.BooleanOptionalAction, default=None,
                   help="standardise features first (default: on for sgd only)")
    s.add_argument("--pca", type=int, help="reduce to this many PCA components first")
    s.add_argument("--search", action="store_true", default=None,
                   help="cross-validate the main hyper-parameter (folds in parallel)")
    s.add_argument("--cv", type=int, help="folds for --search (default 5)")
    b = p.add_argument_group("both")
    b.add_argument("--class-weight", choices=["balanced"], help="weight classes by inverse frequency")
    b.add_argument("--spatial", choices=SPATIAL_MODES,
                   help="how spatial features reach the head (default: flatten for linear, dense256 "
                        "and sigmoid; avg for the others)")
    b.add_argument("--seed", type=int, help="makes training repeat exactly (default 0)")
    b.add_argument("--max-memory", help="memory for features, e.g. 2GB (default: half of RAM); "
                                        "larger caches stream from disk")
    b.add_argument("--shuffle-window", type=int,
                   help="rows shuffled together per window (default: about 64 MiB of rows)")


_HEAD_PARAMS = ("epochs", "batch_size", "optimizer", "learning_rate", "early_stopping", "patience",
                "class_weight", "label_smoothing", "units", "dropout", "l2", "C", "alpha", "neighbors",
                "trees", "scale", "pca", "search", "cv", "spatial", "shuffle_window", "seed")


def _head_options(args) -> dict:
    """The head parameters given on the command line (every head flag parses to None when not given)."""
    return {k: getattr(args, k) for k in _HEAD_PARAMS if getattr(args, k, None) is not None}


def _cmd_train_head(args) -> int:
    from .api import compare, train_head
    from .report import train_summary

    progress = False if (args.quiet or args.json) else None
    with _stdout_for_json(args.json):
        if args.model.lower() == "auto":
            summary = compare(args.cache, winner_out=args.out, budget=args.budget,
                              calibrate=args.calibrate, max_memory=args.max_memory,
                              progress=progress, train_split=args.train_split,
                              val_split=args.val_split, params=_head_options(args)).winner_summary
        else:
            if args.budget is not None:
                raise UsageError(f"{param('budget')} applies only with {param('model')} auto.")
            summary = train_head(args.cache, args.model, args.out, train_split=args.train_split,
                                 val_split=args.val_split, max_memory=args.max_memory,
                                 progress=progress, calibrate=args.calibrate,
                                 **_head_options(args)).summary_
    if args.json:
        _print_json(summary.to_json())
    elif not args.quiet:
        print(train_summary(summary))
    return 0


# ---------------------------------------------------------------- compare
def _add_compare_flags(p) -> None:
    p.add_argument("--cache", required=True, help="cache folder from featcache extract")
    p.add_argument("--heads", type=lambda text: [h for h in text.split(",") if h.strip()],
                   help="comma-separated head names (default: every head that fits the cache)")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="seconds the comparison may take; cheap heads run first and heads not "
                        "finished in time are listed as over budget (default: no limit)")
    p.add_argument("--out", default="featcache-compare",
                   help="folder for the leaderboard, every head (heads/NAME) and the winner "
                        "(winner/); default featcache-compare")
    p.add_argument("--cv", type=int, default=3,
                   help="folds of the training split, grouped by image (default 3)")
    p.add_argument("--calibrate", action="store_true",
                   help="calibrate every head on its held-out training folds")
    p.add_argument("--train-split", default="train", metavar="NAME",
                   help="split to choose on (default train)")
    p.add_argument("--val-split", default="val", metavar="NAME",
                   help="split each final head is scored on once (default val)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and the heads (default 0)")
    p.add_argument("--max-memory", help="memory for features, e.g. 2GB (default: half of RAM)")
    _add_output_flags(p, quiet=True, json_help="print the leaderboard as JSON")


def _cmd_compare(args) -> int:
    from .api import compare

    with _stdout_for_json(args.json):
        result = compare(args.cache, heads=args.heads, out=args.out, budget=args.budget,
                         cv=args.cv, calibrate=args.calibrate, max_memory=args.max_memory,
                         progress=_progress(args), train_split=args.train_split,
                         val_split=args.val_split, seed=args.seed)
    _emit(args, result, report.compare_summary)
    return 0


# ---------------------------------------------------------------- audit
def _add_audit_flags(p) -> None:
    from .data_audit import NEAR_THRESHOLD, TOP
    from .data_audit.label_issues import FOLDS
    from .data_audit.outliers import K

    p.add_argument("cache", help="cache folder from featcache extract")
    p.add_argument("--out", default="featcache-audit",
                   help="folder for report.html, audit.json, findings.csv and label_ranking.csv "
                        "(default featcache-audit)")
    p.add_argument("--top", type=int, default=TOP,
                   help=f"findings of each kind shown in the report and --json (default {TOP}; "
                        "findings.csv lists every one)")
    p.add_argument("--threshold", type=float, default=NEAR_THRESHOLD,
                   help=f"cosine similarity of features from which two different files count "
                        f"as near duplicates (default {NEAR_THRESHOLD})")
    p.add_argument("--folds", type=int, default=FOLDS,
                   help=f"folds of the training split for the label check (default {FOLDS})")
    p.add_argument("--neighbors", type=int, default=K,
                   help=f"outlier score: distance to the k-th nearest training image (default {K})")
    p.add_argument("--train-split", default="train", metavar="NAME",
                   help="split the label check and the outlier score learn from (default train)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds (default 0)")
    _add_output_flags(p, quiet=True, json_help="print the findings as JSON")


def _cmd_audit(args) -> int:
    from .api import audit

    with _stdout_for_json(args.json):
        result = audit(args.cache, out=args.out, top=args.top, threshold=args.threshold,
                       folds=args.folds, neighbors=args.neighbors, train_split=args.train_split,
                       seed=args.seed, progress=_progress(args))
    if args.json:
        _print_json(result.to_json(args.top))
    elif not args.quiet:
        print(report.audit_summary(result))
    return 0


# ---------------------------------------------------------------- evaluate / predict / export
def _add_evaluate_flags(p) -> None:
    _add_model_flag(p)
    p.add_argument("--cache", required=True, help="cache made the same way as the training cache")
    p.add_argument("--split", default="val", metavar="NAME", help="split to score (default val)")
    _add_trust_flag(p)
    _add_output_flags(p)


def _cmd_evaluate(args) -> int:
    from .api import evaluate

    with _stdout_for_json(args.json):
        metrics = evaluate(args.model, args.cache, args.split, trust=args.trust)
    _emit(args, metrics, lambda m: report.evaluate_summary(m, args.cache, args.split))
    return 0


def _add_predict_flags(p) -> None:
    _add_model_flag(p)
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_FOLDERS")
    p.add_argument("--top-k", type=int, default=TOP_K,
                   help=f"classes to show per image (default {TOP_K})")
    p.add_argument("--batch-size", type=int, default=32, help="images per backbone call (default 32)")
    _add_precision_override(p)
    p.add_argument("--runtime", choices=RUNTIMES,
                   help="run the backbone with this runtime instead of the cache's")
    _add_weights_flags(p)
    _add_trust_flag(p)
    _add_output_flags(p, json_help="per image: path, label, score, top_k")


def _cmd_predict(args) -> int:
    from .api import predict

    with _stdout_for_json(args.json):
        results = predict(args.model, args.inputs, top_k=args.top_k,
                          weights_dir=args.weights_dir, weights=args.weights,
                          batch_size=args.batch_size, trust=args.trust,
                          precision=args.precision, runtime=args.runtime)
    _emit(args, results, report.predictions)
    failed = sum("error" in r for r in results)
    if failed:
        print(report.unreadable_files(failed, len(results)), file=sys.stderr)
        return 1
    return 0


def _add_export_flags(p) -> None:
    from .export import CHECK_IMAGES, MIN_AGREEMENT
    from .export_formats import QUANTIZE

    _add_model_flag(p)
    p.add_argument("--out", required=True, help="the file to write: .keras, .onnx or .tflite")
    p.add_argument("--format", choices=["keras", "onnx", "tflite"],
                   help="default: from the --out extension")
    p.add_argument("--quantize", choices=QUANTIZE, default="none",
                   help="tflite only: float16 weights or dynamic-range int8 (default none)")
    p.add_argument("--check-images", metavar="DIR",
                   help="images for the parity check (default: the training cache's "
                        "validation images)")
    p.add_argument("--check-count", type=int, default=CHECK_IMAGES,
                   help=f"at most this many check images (default {CHECK_IMAGES})")
    p.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT,
                   help="share of check images on which the export must agree with featcache "
                        f"predict (default {MIN_AGREEMENT})")
    p.add_argument("--force", action="store_true",
                   help="keep an export that agrees less (its parity report says so)")
    _add_precision_override(p)
    _add_weights_flags(p)
    _add_trust_flag(p)
    _add_output_flags(p)


def _cmd_export(args) -> int:
    from .api import export

    with _stdout_for_json(args.json):
        info = export(args.model, args.out, weights_dir=args.weights_dir, weights=args.weights,
                      trust=args.trust, precision=args.precision, format=args.format,
                      quantize=args.quantize, check_images=args.check_images,
                      check_count=args.check_count, min_agreement=args.min_agreement,
                      force=args.force)
    _emit(args, info, report.export_summary)
    return 0


def _add_export_features_flags(p) -> None:
    p.add_argument("cache", help="cache folder")
    p.add_argument("--out", required=True, help="the file to write (.parquet or .npz)")
    p.add_argument("--format", choices=["parquet", "npz"], help="default: from the --out extension")
    p.add_argument("--split", action="append", metavar="NAME",
                   help="only this split (repeat for several; default: every split)")
    _add_output_flags(p, json_help="print what was written as JSON")


def _cmd_export_features(args) -> int:
    from .api import export_features

    result = export_features(args.cache, args.out, format=args.format, split=args.split)
    _emit(args, result, report.feature_export_summary)
    return 0


# ---------------------------------------------------------------- finetune
def _add_finetune_flags(p) -> None:
    from .finetuning import BACKBONE_LR_FACTOR, DEFAULT_AUGMENT, SCHEDULES

    p.add_argument("--data", required=True, help="image folder or CSV/TSV list, as for extract")
    _add_model_flag(p, deprecated=("--head",))
    p.add_argument("--out", required=True, help="folder for the fine-tuned model")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--unfreeze-top", type=int, metavar="N",
                   help="train the backbone's last N conv/dense layers; 0: the head only "
                        "(default: the backbone's top block, see `featcache backbones`; "
                        "BatchNorm always stays frozen)")
    g.add_argument("--unfreeze-from", metavar="LAYER",
                   help="train from this backbone layer up, e.g. block5_conv1")
    p.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs (default 5)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    p.add_argument("--optimizer", choices=["adam", "sgd", "rmsprop"], default="adam",
                   help="adam (default), sgd with momentum 0.9, or rmsprop")
    p.add_argument("--learning-rate", type=float,
                   help="the head's peak rate: default 1e-4 (adam, rmsprop) or 1e-3 (sgd, "
                        "momentum 0.9)")
    p.add_argument("--backbone-lr-factor", type=float, default=BACKBONE_LR_FACTOR,
                   help="the unfrozen backbone layers learn at this fraction of the head's rate "
                        "(default %(default)s)")
    p.add_argument("--warmup-epochs", type=float, default=1.0,
                   help="linear warm-up from a tenth of the rate over this many epochs, at most half the run "
                        "(default 1; 0: none)")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                   help="after the warm-up: cosine decay to zero by the last epoch (default) or "
                        "constant")
    p.add_argument("--patience", type=int, default=3,
                   help="epochs without a better validation accuracy (ties: lower loss) before "
                        "stopping (default 3)")
    p.add_argument("--no-early-stopping", dest="early_stopping", action="store_false",
                   help="train all epochs (by default the best epoch, epoch 0 included, is kept)")
    p.add_argument("--augment", default=DEFAULT_AUGMENT,
                   help="augmentation while training (default: %(default)s; 'none' to turn off)")
    p.add_argument("--class-weight", choices=["balanced"], help="weight classes by inverse frequency")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="what the backbone computes in while training (default: its cache's "
                        "precision); bfloat16 on CPUs with AVX512_BF16/AMX, float16 or bfloat16 "
                        "on GPUs; the head and the loss stay float32")
    p.add_argument("--mixed-precision", dest="precision", action="store_const", const="float16",
                   help=argparse.SUPPRESS)  # deprecated spelling of --precision float16
    _add_fraction_flags(p)
    p.add_argument("--seed", type=int, default=0, help="seed of augmentation and data order (default 0)")
    p.add_argument("--workers", type=int, help="decoding threads (default: CPU count, at most 8)")
    p.add_argument("--no-keep-pixels", dest="keep_pixels", action="store_false",
                   help="decode the image files again every epoch instead of keeping their pixels "
                        "for the run (in memory, or a temporary file in --out when they do not fit)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    _add_weights_flags(p)
    _add_trust_flag(p)
    _add_output_flags(p, quiet=True, json_help="print a machine-readable summary")


def _cmd_finetune(args) -> int:
    from .api import finetune
    from .finetuning import FinetuneOptions

    options = options_from_args(FinetuneOptions, args)
    with _stdout_for_json(args.json):
        summary = finetune(args.data, args.model, args.out,
                           **{f.name: getattr(options, f.name) for f in dataclasses.fields(options)},
                           resume=args.resume, weights_dir=args.weights_dir, weights=args.weights,
                           progress=_progress(args), trust=args.trust)
    _emit(args, summary, report.finetune_summary)
    return 0


# ---------------------------------------------------------------- demo
def _add_demo_flags(p) -> None:
    p.add_argument("--out", default="featcache-demo", help="output folder (default featcache-demo)")
    p.add_argument("--data", help="run the demo on your own folder of class folders instead of "
                                   "the shipped CIFAR-10 sample (no val/ folder: 20%% become "
                                   "validation)")
    p.add_argument("--weights-dir", help="offline folder of Keras weight files "
                                         "(default: $FEATCACHE_WEIGHTS_DIR)")
    _add_output_flags(p)


def _cmd_demo(args) -> int:
    from .demo import run_demo

    print(report.demo_intro(args.data), file=sys.stderr)
    with _stdout_for_json(args.json):
        result = run_demo(out=args.out, data=args.data, weights_dir=args.weights_dir,
                          progress=_progress(args))
    _emit(args, result, report.demo_summary)
    return 0


# ---------------------------------------------------------------- the table
class Command(NamedTuple):
    """One subcommand: the function that adds its flags and the one that runs it."""

    add_flags: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]
    help: str
    description: str | None = None


COMMANDS: dict[str, Command] = {
    "extract": Command(
        _add_extract_flags, _cmd_extract,
        "extract backbone features of an image folder into a cache",
        "Extract backbone features of an image folder or CSV/TSV list into an HDF5 feature "
        "cache. Rerun the same command to resume."),
    "merge": Command(
        _add_merge_flags, _cmd_merge,
        "join the slices of a sliced extraction into one cache",
        "Join CACHE/parts/slice-I-of-K (from featcache extract --num-slices K --slice-index I) "
        "into the cache CACHE."),
    "fuse": Command(
        _add_fuse_flags, _cmd_fuse,
        "join two caches of the same images into one (features side by side)",
        "Match the rows of two caches by image content hash and write a cache whose features "
        "are the first's followed by the second's."),
    "info": Command(_add_info_flags, _cmd_info, "show what a cache holds and how it was made"),
    "verify": Command(
        _add_verify_flags, _cmd_verify,
        "re-read every shard of a cache and check it; --repair fixes",
        "Re-read every shard of a cache and check its checksum, size, row count and "
        "fingerprint against the manifest. Exit code 1 when damage is found and not repaired."),
    "backbones": Command(_add_backbones_flags, _cmd_backbones, "list the backbones featcache knows"),
    "layers": Command(_add_layers_flags, _cmd_layers, "list a backbone's layers, for --layer"),
    "hardware": Command(_add_hardware_flags, _cmd_hardware,
                        "what this machine computes fast: CPU flags, GPUs, native precisions"),
    "train-head": Command(
        _add_train_head_flags, _cmd_train_head,
        "train a head on cached features",
        "Train a Keras or scikit-learn head on a cache and write the model, metrics, history "
        "and plots to --out."),
    "compare": Command(
        _add_compare_flags, _cmd_compare,
        "train every head, choose on the training split, show a leaderboard",
        "Train every head that fits the cache, choose each one's settings by cross-validation "
        "on the training split (folds grouped by image), score each once on the validation "
        "split, and save the winner as a head folder. The test split is never read."),
    "audit": Command(
        _add_audit_flags, _cmd_audit,
        "find leaks, duplicates, likely label errors and outliers from the cached features",
        "From a cache's features alone (no backbone run): byte-identical and near-identical "
        "images across splits (leaks) and inside each split, images whose label a cross-"
        "validated linear head doubts, and images far from every training image. Writes an "
        "HTML report with thumbnails, JSON and CSV files."),
    "evaluate": Command(_add_evaluate_flags, _cmd_evaluate,
                        "score a trained head on a split of a cache"),
    "predict": Command(_add_predict_flags, _cmd_predict, "classify image files with a trained head"),
    "export": Command(
        _add_export_flags, _cmd_export,
        "write backbone + head as one .keras, ONNX or TFLite model, checked against predict",
        "Write the backbone and a trained head (or a fine-tuned model) as one model taking "
        "raw pixels: .keras, ONNX or TFLite (optionally quantized). The written file is run by "
        "its own runtime on the training cache's validation images and must agree with "
        "featcache predict, or the export fails (--force keeps it)."),
    "export-features": Command(
        _add_export_features_flags, _cmd_export_features,
        "write a cache's features as one Parquet or .npz file",
        "One row per image: path, label, split, view, sha256 and the feature vector, readable "
        "with pyarrow or numpy alone."),
    "finetune": Command(
        _add_finetune_flags, _cmd_finetune,
        "fine-tune the top of the backbone with a trained head",
        "Build augmentation + preprocessing + backbone + trained head as one model, unfreeze "
        "the top of the backbone and train end to end with a small learning rate. "
        "Interrupted? Rerun with --resume."),
    "heads": Command(_add_heads_list_flags, _cmd_heads, "list the heads featcache can train"),
    "demo": Command(_add_demo_flags, _cmd_demo,
                    "run the whole job on the built-in CIFAR-10 sample"),
}


def build_parser() -> argparse.ArgumentParser:
    """The `featcache` parser: one subparser per row of `COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="featcache",
        description="Run a frozen pretrained CNN once, cache its features in HDF5, "
                    "train heads on them in seconds.")
    parser.add_argument("--version", action="version", version=f"featcache {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.description)
        command.add_flags(p)
        p.set_defaults(handler=command.handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `featcache` command.

    Args:
        argv: the arguments after the program name; None for `sys.argv[1:]`.

    Returns:
        The exit code: 0 done, 1 damage or unreadable files reported, 2 a
        `FeatcacheError` (printed as one line), 130 interrupted.
    """
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
        print(report.error_line(exc.cli_message()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(report.interrupted(args.command), file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
