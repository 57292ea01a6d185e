"""Write a trained head and its backbone as one model (`featcache export`): .keras, ONNX or TFLite.

The exported model takes raw RGB pixels (0-255, float32, at the backbone's
input size) and returns class probabilities: preprocessing, backbone, pooling
and head in one graph of built-in Keras layers, so plain
`keras.models.load_model(path)` opens the .keras file without featcache, and
onnxruntime or a TFLite interpreter the others (`featcache.export_formats`).
A JSON file beside it names the classes and the resizing the model expects.

Every export is checked before it counts as done: the written file, run by
its own runtime, and `featcache predict` score the same images (by default up
to 100 of the training cache's validation images); their top-1 agreement
(multi-label: every label decision) and largest probability difference go
into `<name>.parity.json` and the sidecar. Below `min_agreement` the file is
removed and the export fails, unless `force`.

Features of float16 caches are not rounded to float16 inside the exported
graph, so its scores can differ from `featcache predict` by that rounding.
"""

from __future__ import annotations

import os

import numpy as np

from . import export_formats
from ._keras import import_keras
from .artifacts import is_end_to_end, load_end_to_end, load_head, read_head_files
from .errors import ExportError, UsageError, param
from .fileio import write_json_atomic
from .prediction import backbone_for_head

MIN_AGREEMENT = 0.99
CHECK_IMAGES = 100


def export_model(model_dir: str, out_file: str, weights_dir: str | None = None,
                 weights: str | None = None, trust: bool = False,
                 precision: str | None = None, format: str | None = None,
                 quantize: str = "none", check_images: str | None = None,
                 check_count: int = CHECK_IMAGES, min_agreement: float = MIN_AGREEMENT,
                 force: bool = False) -> dict:
    """Export head + backbone (or a fine-tuned model) to `out_file`, then check it.

    Args:
        format: "keras", "onnx" or "tflite" (default: from the file's extension).
        quantize: TFLite only: "none", "float16" (weights) or "dynamic-int8".
        check_images: a folder (or file) of images for the parity check
            (default: the training cache's validation images, else its training images).
        check_count: at most this many images, spread over the listing.
        min_agreement: the share of images on which the export must agree with
            `featcache predict`.
        force: keep an export that agrees less (its report says so).

    Returns:
        What was written: model, sidecar, parity (the report) and the sidecar's entries.

    Raises:
        UsageError: bad output name or format, a converter not installed, no
        images to check; ExportError: the head has no Keras form, the converter
        failed, or the export disagrees with featcache predict;
        FingerprintMismatchError: the backbone cannot be rebuilt identically here.
    """
    fmt = export_formats.format_for(out_file, format)
    export_formats.check_tools(fmt, quantize)
    config, fingerprint = read_head_files(model_dir)
    fp = fingerprint["fingerprint"]
    files = _check_files(config, check_images, check_count)  # before the heavy work
    thresholds = None
    if is_end_to_end(config):  # fine-tuned: already one pixels-to-probabilities model
        model = load_end_to_end(model_dir, config, trust=trust)
        class_names, head_name = config["class_names"], f"{config['head']} (fine-tuned)"
        computes_in = config.get("finetune", {}).get("precision") or fp.get("precision", "float32")
    else:
        head, config, fingerprint = load_head(model_dir, trust=trust)
        head_model = head.to_keras()  # refuses non-linear scikit-learn heads before heavy work
        backbone = backbone_for_head(fingerprint, config, weights_dir, weights, precision,
                                     runtime="keras")  # the export is a Keras model
        keras = import_keras()
        feature_model = backbone.extractor.model
        model = keras.Model(feature_model.input, head_model(feature_model.output),
                            name=f"featcache_{backbone.extractor.spec.name}_{head.name}")
        class_names, head_name = head.class_names, head.name
        computes_in = backbone.extractor.precision
        if head.multi_label:  # one sigmoid per label: the sidecar says where each is decided
            thresholds = [float(t) for t in head.thresholds_]
    from .prediction import scorer_for

    scorer = scorer_for(model_dir, weights_dir, weights, trust, precision=precision)
    pixels = _decoded(files, scorer.resize)
    if fmt != "keras":  # random ops of training-time augmentation have no ONNX/TFLite form
        model = _without_augmentation(model)
    export_formats.write(model, out_file, fmt, quantize, pixels)
    parity = _parity(scorer.score, export_formats.runner(out_file, fmt), pixels, thresholds)
    parity.update(format=fmt, quantize=quantize, min_agreement=min_agreement,
                  reference="featcache predict on the same decoded pixels")
    parity["passed"] = parity["agreement"] >= min_agreement
    stem = os.path.splitext(out_file)[0]
    report_file = stem + ".parity.json"
    write_json_atomic(report_file, parity)
    if not parity["passed"] and not force:
        export_formats.remove(out_file)
        raise ExportError(
            f"{out_file}: the {fmt}{'' if quantize == 'none' else ' ' + quantize} export agrees "
            f"with featcache predict on {parity['agreeing']} of {parity['count']} images "
            f"({parity['agreement']:.1%}, below {min_agreement:.0%}; largest probability "
            f"difference {parity['max_abs_difference']:.3g}), so it was removed; the report is "
            f"in {report_file}. Pass {param('force')}=True to keep it.")
    info = {
        "model": os.path.abspath(out_file),
        "format": fmt,
        "quantize": quantize,
        "class_names": class_names,
        "input": {"shape": [None, *fp["input_size"], 3], "dtype": "float32",
                  "pixels": "RGB, 0-255, not preprocessed (the model does it)",
                  "resize": fp["resize"]},
        "backbone": fp["backbone"], "head": head_name,
        "precision": computes_in,
        "fingerprint_hash": fingerprint["fingerprint_hash"],
        **({"multi_label": {"thresholds": thresholds, "outputs": "one independent probability "
                            "per label; a label applies where it reaches its threshold"}}
           if thresholds is not None else {}),
        "parity": {k: parity[k] for k in ("agreement", "agreeing", "count", "max_abs_difference",
                                          "passed")},
    }
    sidecar = stem + ".json"
    write_json_atomic(sidecar, info)
    info["sidecar"] = os.path.abspath(sidecar)
    info["parity_report"] = os.path.abspath(report_file)
    return info


def _without_augmentation(model):
    """The model with the layers that only act while training (a fine-tuned model's
    `augment_*` layers, dropout) replaced by identities, nested models included; every other
    layer, with its weights, is shared. A fine-tuned model's SavedModel otherwise keeps their
    random ops, which TFLite cannot run."""
    keras = import_keras()
    idle = (keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
            keras.layers.SpatialDropout2D)

    def clone(layer):
        if layer.name.startswith("augment_") or isinstance(layer, idle):
            return keras.layers.Identity(name=layer.name)
        return layer

    return keras.models.clone_model(model, clone_function=clone, recursive=True)


def _check_files(config: dict, check_images: str | None, count: int) -> list[str]:
    """The images of the parity check: `check_images`, or the training cache's val (or
    train) images, at most `count`, spread evenly over the listing."""
    from .dataset import list_images

    if count < 1:
        raise UsageError(f"{param('check_count')} {count}: must be at least 1.")
    if check_images:
        files, _ = list_images([check_images])
        where = check_images
    else:
        from .cache import FeatureCache
        from .errors import CacheError

        path = (config.get("cache") or {}).get("path")
        try:
            cache = FeatureCache(path) if path else None
        except CacheError:
            cache = None
        if cache is None:
            raise UsageError(f"The training cache {path or '(not recorded)'} is not readable here, "
                             f"so its images cannot check the export: pass {param('check_images')} "
                             "DIR.")
        split = "val" if "val" in cache.splits else "train"
        root = cache.manifest["source"]["root"]
        files = [os.path.join(root, p) for p in cache.index(split)[0]]
        where = f"{path} [{split}]"
    files = list(dict.fromkeys(files))  # augmented views list an image more than once
    if not files:
        raise UsageError(f"No images to check the export with in {where}; pass "
                         f"{param('check_images')} DIR.")
    picks = np.unique(np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int))
    return [files[i] for i in picks]


def _decoded(files: list[str], resize) -> np.ndarray:
    """The check images decoded as featcache predict decodes them (unreadable ones left out)."""
    from .pipeline import Item, decoded_batches, default_workers

    items = [Item(0, os.path.abspath(f), f, 0) for f in files]
    batches = [b.pixels for b in decoded_batches(items, resize, 32, default_workers(None))
               if b.items]
    if not batches:
        raise UsageError("None of the images for the export check could be decoded; pass "
                         f"{param('check_images')} DIR.")
    return np.concatenate(batches).astype(np.float32)


def _parity(reference, exported, pixels: np.ndarray, thresholds) -> dict:
    """Top-1 (multi-label: every decision) agreement and probability differences."""
    want = np.concatenate([reference(pixels[i:i + 32]) for i in range(0, len(pixels), 32)])
    got = np.asarray(exported(pixels), dtype=np.float64)
    if got.shape != want.shape:
        raise ExportError(f"The exported model gives scores of shape {got.shape[1:]}, featcache "
                          f"predict {want.shape[1:]}.")
    if thresholds is not None:
        from .multilabel import decide

        same = np.all(decide(want, thresholds) == decide(got, thresholds), axis=1)
    else:
        same = want.argmax(axis=1) == got.argmax(axis=1)
    diff = np.abs(want - got)
    return {"count": int(len(same)), "agreeing": int(same.sum()),
            "agreement": float(same.mean()), "max_abs_difference": float(diff.max()),
            "mean_abs_difference": float(diff.mean())}
