"""featcache from Python: the command line's verbs as functions.

Each function takes the keyword arguments its command's flags name (snake
case: `--val-fraction` is `val_fraction=`), returns objects instead of
printing, and raises a `FeatcacheError` with the same one-line message the
command prints. The command line calls exactly these functions::

    import featcache
    cache = featcache.extract("photos/", "cache/", backbone="mobilenet")
    head = featcache.train_head(cache.cache, "logreg")          # nothing written without out=
    featcache.prediction(head, ["new/cat.jpg"], top_k=3)

Importing featcache stays cheap: Keras loads only when a model is built.
"""

from __future__ import annotations

import os
from dataclasses import fields

from .errors import UsageError

TOP_K = 3  # classes per image in predict's rows, from Python and from the command line


def _check_options(verb: str, options: dict, cls, name: str, taken: tuple[str, ...] = ()) -> None:
    """Refuse keyword options that are not fields of the verb's options dataclass `cls`.

    Raises:
        UsageError: naming the unknown options and the known ones.
    """
    known = {f.name for f in fields(cls)} - set(taken)
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"{verb} got unknown options {', '.join(unknown)}; the options are the "
                         f"fields of {name}: {', '.join(sorted(known))}.")


def _paths(images) -> list[str]:
    if isinstance(images, (str, os.PathLike)):
        return [os.fspath(images)]
    return [os.fspath(p) for p in images]


def extract(data=None, out=None, backbone: str = "mobilenet", *, extractor=None, labels=None,
            class_names=None, image_column=None, label_column=None, **options):
    """Run the frozen backbone once over `data`; write the features to the cache `out`.

    Args:
        data: a folder of class folders (with or without train/val/test split
            folders) or a CSV/TSV list; or an `ExtractOptions`, alone; or
            images in memory (see `featcache.in_memory`): an array (N, H, W, 3)
            of uint8 or a list of PIL images with `labels`, an iterable or
            `tf.data.Dataset` of (image, label) pairs (integer labels named by
            `class_names`), a Hugging Face dataset (`image_column`,
            `label_column`: default its Image and ClassLabel columns). Those are
            written once as PNG files under `out/inputs/` and extracted from there.
        out: the cache folder (resumed when it holds the same extraction).
        backbone: see `featcache.list_backbones()`.
        extractor: a `FeatureExtractor` built earlier, reused across calls.
        options: any other `ExtractOptions` field, e.g. `image_size=160`,
            `val_fraction=0.2`, `pooling="none"`, `precision="bfloat16"`.

    Returns:
        ExtractSummary (`.cache` is the cache folder).
    """
    from .extract import ExtractOptions
    from .extract import extract as run
    from .in_memory import INPUTS_DIR, is_in_memory, write_inputs

    if isinstance(data, ExtractOptions):
        if out is not None or options:
            raise UsageError("Pass either an ExtractOptions or keyword arguments to extract, not both.")
        return run(data, extractor=extractor)
    if data is None or out is None:
        raise UsageError("extract needs {param:data} (the images) and {param:out} (the cache folder).")
    if is_in_memory(data):
        data = write_inputs(data, os.path.join(os.fspath(out), INPUTS_DIR), labels, class_names,
                            image_column, label_column)
    elif labels is not None or class_names is not None:
        raise UsageError("labels and class_names go with images in memory; a folder's classes are "
                         "its class folders.")
    _check_options("extract", options, ExtractOptions, "featcache.ExtractOptions",
                   taken=("data", "out", "backbone"))
    return run(ExtractOptions(data=os.fspath(data), out=os.fspath(out), backbone=backbone, **options),
               extractor=extractor)


def train_head(cache, model: str = "logreg", out=None, *, train_split: str = "train",
               val_split: str | None = "val", max_memory=None, progress: bool | None = None,
               calibrate: bool = False, calibration_folds: int = 3, **params):
    """Train head `model` on a cache; with `out`, also write its head folder.

    Args:
        cache: a cache folder (or an ExtractSummary).
        model: a head name (`featcache.heads.list_heads()`).
        out: folder for the head's files; None writes nothing.
        params: the head's parameters (`epochs=20`, `C=0.1`, ...).

    Returns:
        The fitted head (a scikit-learn style estimator) with `metrics_`
        (validation metrics), `history_`, `summary_` (what the command prints)
        and what `predict` needs to rebuild its backbone.
    """
    from .train import train_head as run

    summary = run(_cache_path(cache), model, os.fspath(out) if out is not None else None,
                  params=params, train_split=train_split, val_split=val_split,
                  max_memory=max_memory, progress=progress, calibrate=calibrate,
                  calibration_folds=calibration_folds)
    head = summary.estimator
    head.metrics_, head.summary_ = summary.metrics, summary
    return head


def compare(cache, heads: list[str] | None = None, out=None, **options):
    """Train every head (or `heads`), choose on the training split, score each once on val.

    Returns:
        CompareResult: `.rows` (the leaderboard), `.winner`, `.winner_dir`.
        See `featcache.selection.compare_heads` for the options.
    """
    from .selection import compare_heads

    return compare_heads(_cache_path(cache), heads=heads,
                         out=os.fspath(out) if out is not None else None, **options)


def audit(cache, out=None, **options):
    """Leaks, duplicates, likely label errors and outliers of a cache, from its features alone.

    Args:
        cache: a cache folder (or an ExtractSummary).
        out: folder for report.html, audit.json, findings.csv, label_ranking.csv;
            None writes nothing.
        options: `top`, `threshold`, `folds`, `neighbors`, `train_split`,
            `seed`, `progress` (see `featcache.data_audit.audit_cache`).

    Returns:
        AuditResult: `.findings` (most suspicious first, leaks first),
        `.counts`, `.label_ranking`.
    """
    import inspect

    from .data_audit import audit_cache

    known = set(inspect.signature(audit_cache).parameters) - {"cache", "out"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"audit got unknown options {', '.join(unknown)}; the options are: "
                         f"{', '.join(sorted(known))}.")
    return audit_cache(_cache_path(cache), out=os.fspath(out) if out is not None else None, **options)


def evaluate(model, cache, split: str = "val", *, trust: bool = False, weights_dir=None) -> dict:
    """Metrics of a head folder (or a fine-tuned folder) on one split of a cache."""
    from .train import evaluate as run

    return run(os.fspath(model), _cache_path(cache), split, trust=trust, weights_dir=weights_dir)


def export(model, out, *, format: str | None = None, quantize: str = "none",
           check_images=None, check_count: int | None = None, min_agreement: float | None = None,
           force: bool = False, weights_dir=None, weights=None, trust: bool = False,
           precision: str | None = None) -> dict:
    """Write a head folder (or a fine-tuned folder) with its backbone as one .keras, ONNX or
    TFLite model, checked against `predict` on the cache's validation images.

    Returns:
        The sidecar's entries, with `parity` (agreement, largest probability difference).
        See `featcache.export.export_model`.
    """
    from .export import CHECK_IMAGES, MIN_AGREEMENT, export_model

    return export_model(os.fspath(model), os.fspath(out), weights_dir=weights_dir, weights=weights,
                        trust=trust, precision=precision, format=format, quantize=quantize,
                        check_images=os.fspath(check_images) if check_images else None,
                        check_count=check_count or CHECK_IMAGES,
                        min_agreement=MIN_AGREEMENT if min_agreement is None else min_agreement,
                        force=force)


def export_features(cache, out, *, format: str | None = None, split=None):
    """Write a cache's features (one row per image: path, label, split, view, sha256,
    features) as one Parquet or .npz file, readable without featcache.

    Args:
        split: a split name or a list of them (default: every split).

    Returns:
        FeatureExport (see `featcache.feature_export.export_features`).
    """
    from .feature_export import export_features as run

    splits = [split] if isinstance(split, str) else (list(split) if split else None)
    return run(_cache_path(cache), os.fspath(out), format=format, splits=splits)


def predict(model, images, top_k: int = TOP_K, *, weights_dir=None, weights=None,
            batch_size: int = 32, trust: bool = False, workers: int | None = None,
            precision: str | None = None, runtime: str | None = None) -> list[dict]:
    """Top classes of images with a head folder or a head from `train_head`.

    Args:
        images: image files or folders (paths), or images in memory: an array
            (N, H, W, 3) of uint8, a list of PIL images (see `featcache.in_memory`).

    Repeated calls in one process reuse the backbone built by the first.

    Returns:
        One dict per image, in order: {"path", "label", "score", "top_k": [{"label", "score"}]}
        ("index" instead of "path" for images in memory), or {"path", "error"} for
        a file that could not be decoded.
    """
    import tempfile

    from .in_memory import is_in_memory, write_inputs
    from .prediction import image_files, predict_files, predict_images, scorer_for_head

    def run(paths):
        if isinstance(model, (str, os.PathLike)):
            return predict_images(os.fspath(model), paths, top_k=top_k, weights_dir=weights_dir,
                                  weights=weights, batch_size=batch_size, trust=trust,
                                  workers=workers, precision=precision, runtime=runtime)
        files = image_files(paths, top_k)
        scorer = scorer_for_head(model, weights_dir, weights, batch_size, precision, runtime)
        return predict_files(scorer, files, top_k, batch_size, workers)

    paths_given = not is_in_memory(images) or (
        isinstance(images, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in images))
    if paths_given:
        return run(_paths(images))
    with tempfile.TemporaryDirectory(prefix="featcache-predict-") as folder:
        write_inputs(images, folder, need_labels=False)  # lossless PNG copies, read back as files
        rows = run([folder])
    for i, row in enumerate(rows):  # rows come in the images' order; they have no path
        row.pop("path", None)
        row["index"] = i
    return rows


def finetune(data, model, out, *, resume: bool = False, weights_dir=None, weights=None,
             progress: bool | None = None, trust: bool = False, **options):
    """Fine-tune the top of the backbone with a head folder `model` on the images of `data`.

    Args:
        options: `FinetuneOptions` fields (`epochs=5`, `unfreeze_top=...`, ...).

    Returns:
        FinetuneSummary.
    """
    from .finetuning import FinetuneOptions
    from .finetuning import finetune as run

    _check_options("finetune", options, FinetuneOptions, "featcache.finetuning.FinetuneOptions")
    return run(os.fspath(data), os.fspath(model), os.fspath(out), FinetuneOptions(**options),
               resume=resume, weights_dir=weights_dir, weights=weights, progress=progress,
               trust=trust)


def _cache_path(cache) -> str:
    path = getattr(cache, "cache", None) or getattr(cache, "path", None) or cache
    return os.fspath(path)
