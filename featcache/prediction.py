"""Classify new image files with a trained head (`featcache predict`).

The backbone is rebuilt exactly as it was for the cache the head was trained
on (backbone, weights, input size, layer, pooling, resizing), and the rebuilt
fingerprint must equal the training cache's; then images go through the
same decoding pipeline, the backbone and the head.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .artifacts import is_end_to_end, load_end_to_end, load_head, read_head_files
from .dataset import list_images
from .decode import ResizeSpec
from .errors import FeatcacheWarning, UsageError, param
from .fingerprint import check_same, library_versions, make_fingerprint
from .hardware import warn_if_emulated
from .runtimes import installed_runtimes
from .pipeline import Item, decoded_batches, default_workers


@dataclass
class Backbone:
    """A feature extractor rebuilt for a head, with the input handling it expects."""

    extractor: object
    resize: ResizeSpec
    dtype: str


def backbone_for_head(fingerprint: dict, config: dict, weights_dir: str | None = None,
                      weights: str | None = None, precision: str | None = None,
                      runtime: str | None = None, model_dir: str | None = None) -> Backbone:
    """Rebuild the feature model a head's training cache was made with.

    Args:
        fingerprint: the head's fingerprint.json contents.
        config: the head's config.json contents.
        weights_dir: offline ImageNet weights folder (default FEATCACHE_WEIGHTS_DIR).
        weights: override the weights file recorded for --weights PATH caches.
        precision: compute the features in another precision than the cache's
            (e.g. float32 on a CPU without bfloat16): allowed with a warning,
            since the head then sees features that differ slightly from its
            training features. Default: the cache's precision.
        runtime: run it with another runtime than the cache's ("keras",
            "openvino"); at float32 both give the same features to 1e-6, so
            only a change of precision warns. Default: the cache's runtime.
        model_dir: the head folder (an int8 head keeps its quantized model there).

    Raises:
        FingerprintMismatchError: what can be built here differs (weights bytes,
            library versions...); the message names the fields.
    """
    from .feature_model import shared_feature_extractor

    fp = fingerprint["fingerprint"]
    if "fused" in fp:
        names = " + ".join(str(f.get("backbone", "?")) for f in fp["fused"])
        raise UsageError(
            f"This head was trained on a fused cache ({names}): it takes fused features, which no "
            "single backbone makes from images. Score it with featcache evaluate on a fused cache.")
    recorded = config.get("backbone", {}).get("weights", {})
    source = recorded.get("source")
    if weights is None:
        if source == "none":
            weights = "none"
        elif source == "file":
            weights = recorded.get("path") or ""
            if not os.path.isfile(weights):
                raise UsageError(
                    f"The head's backbone used the weights file {recorded.get('file')}, which is not "
                    f"at {weights or 'its recorded path'} any more; pass {{param:weights}} PATH.")
        else:
            weights = "imagenet"
    seed = fp["weights"].get("random_seed", 0)
    resize = ResizeSpec.from_fingerprint(fp["resize"])  # decode mode included
    trained_in = fp.get("precision", "float32")
    precision = precision or trained_in
    made_by = fp.get("runtime")
    if runtime is None:
        runtime = (made_by or {}).get("name", "keras")
        if runtime == "openvino" and precision == "float32" and "openvino" not in installed_runtimes():
            warnings.warn(FeatcacheWarning(
                "the head's cache was extracted with OpenVINO, which is not installed here; "
                "running the backbone with Keras instead (the same float32 features)."),
                stacklevel=2)
            runtime = "keras"
    int8_model = None
    if precision == "int8":
        from .artifacts import INT8_MODEL_DIR

        if runtime != "openvino" or "openvino" not in installed_runtimes():
            precision = "float32"  # Keras runs the float model the int8 one came from (warned below)
        else:
            int8_model = os.path.join(model_dir or "", INT8_MODEL_DIR)
            if trained_in != "int8":
                raise UsageError(f"{param('precision')} int8 runs the quantized model of an int8 "
                                 f"cache, and this head was trained on {trained_in} features: "
                                 f"extract a cache with {param('precision')} int8 and train on it.")
            if model_dir is None or not os.path.isdir(int8_model):
                raise UsageError(f"The head was trained on int8 features, and its quantized model "
                                 f"is not in {int8_model}: pass {param('precision')} float32 to "
                                 "use the float model instead.")
    # one backbone kept per process: repeated predictions reuse it, a new one replaces it
    extractor = shared_feature_extractor(fp["backbone"], fp["input_size"][0], fp["layer"],
                                         fp["pooling"], weights, weights_dir, seed, precision,
                                         runtime, int8_model)
    rebuilt = make_fingerprint(extractor.describe(), resize.describe(), fp["dtype"], library_versions())
    if runtime != (made_by or {}).get("name", "keras"):  # a deliberate choice, same arithmetic
        rebuilt.pop("runtime", None)
        if made_by is not None:
            rebuilt["runtime"] = made_by
    if precision != trained_in:
        warnings.warn(FeatcacheWarning(
            f"the head was trained on {trained_in} features; computing {precision} features "
            f"instead ({param('precision')} {precision}): scores can differ slightly from "
            "the validation metrics."), stacklevel=2)
        rebuilt.pop("precision", None)
        if trained_in != "float32":
            rebuilt["precision"] = trained_in
    else:
        warn_if_emulated(precision)
    check_same(fp, rebuilt, "the head's training cache",
               "Rebuild the cache and retrain the head with what is installed here, or install the "
               "versions and weights it was made with.")
    return Backbone(extractor, resize, fp["dtype"])


def features_of(backbone: Backbone, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """Backbone features of decoded pixels, rounded to the cache's storage dtype."""
    features = backbone.extractor.features(pixels, batch_size)
    return features.astype(backbone.dtype).astype(np.float32)


@dataclass
class PixelScorer:
    """Maps decoded pixels (N, S, S, 3) to class scores, with the resizing it expects."""

    class_names: list[str]
    resize: ResizeSpec
    score: Callable[[np.ndarray], np.ndarray]
    fingerprint: dict
    config: dict
    thresholds: np.ndarray | None = None  # a multi-label head's per-label thresholds


def resize_of(fingerprint: dict) -> ResizeSpec:
    return ResizeSpec.from_fingerprint(fingerprint["fingerprint"]["resize"])


def scorer_for(model_dir: str, weights_dir: str | None = None, weights: str | None = None,
               trust: bool = False, batch_size: int = 32, precision: str | None = None,
               runtime: str | None = None) -> PixelScorer:
    """A pixel scorer for a head folder (backbone rebuilt, then the head) or a
    fine-tuned folder (its end-to-end model)."""
    config, fingerprint = read_head_files(model_dir)
    if is_end_to_end(config):
        model = load_end_to_end(model_dir, config, trust=trust)
        return PixelScorer(config["class_names"], resize_of(fingerprint), keras_scores(model),
                           fingerprint, config)
    head, config, fingerprint = load_head(model_dir, trust=trust)
    backbone = backbone_for_head(fingerprint, config, weights_dir, weights, precision, runtime,
                                 model_dir)
    return PixelScorer(head.class_names, backbone.resize,
                       lambda pixels: head.predict_proba(features_of(backbone, pixels, batch_size)),
                       fingerprint, config, _thresholds(head))


def _thresholds(head) -> np.ndarray | None:
    return head.thresholds_ if head.multi_label else None


def scorer_for_head(head, weights_dir: str | None = None, weights: str | None = None,
                    batch_size: int = 32, precision: str | None = None,
                    runtime: str | None = None) -> PixelScorer:
    """A pixel scorer for a fitted head held in memory (`featcache.train_head` without `out`)."""
    source = getattr(head, "source_", None)
    if source is None:
        raise UsageError("This head does not say which cache it was trained on: pass a head folder, "
                         "or a head returned by featcache.train_head.")
    fingerprint, config = source["fingerprint"], source["config"]
    if fingerprint["fingerprint"].get("precision") == "int8":
        raise UsageError("A head trained on an int8 cache predicts with the quantized model kept in "
                         "its folder: train it with out=FOLDER and pass that folder.")
    backbone = backbone_for_head(fingerprint, config, weights_dir, weights, precision, runtime)
    return PixelScorer(list(head.class_names), backbone.resize,
                       lambda pixels: head.predict_proba(features_of(backbone, pixels, batch_size)),
                       fingerprint, config, _thresholds(head))


def keras_scores(model) -> Callable[[np.ndarray], np.ndarray]:
    """The scoring function of a pixels-to-probabilities Keras model (inference mode)."""
    from ._keras import import_keras

    keras = import_keras()

    def score(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(
            model(pixels.astype(np.float32), training=False)), dtype=np.float64)

    return score


def score_items(scorer: PixelScorer, items: list[Item], batch_size: int = 32,
                workers: int | None = None):
    """Yield (item, scores or None, failure reason or None) for each item, in order."""
    return scored_items(scorer.score, items, scorer.resize, batch_size, workers)


def scored_items(score: Callable[[np.ndarray], np.ndarray], items: list[Item], resize: ResizeSpec,
                 batch_size: int = 32, workers: int | None = None):
    """Decode `items` in parallel and yield (item, score(pixels) row or None, reason or None)."""
    position = 0  # batches cover consecutive items, in order
    for batch in decoded_batches(items, resize, batch_size, default_workers(workers)):
        scores = score(batch.pixels) if batch.items else []
        decoded = {id(item): row for item, row in zip(batch.items, scores)}
        failed = {id(item): reason for item, reason in batch.failures}
        for item in items[position:position + batch.attempted]:
            yield item, decoded.get(id(item)), failed.get(id(item))
        position += batch.attempted


def predict_images(model_dir: str, inputs: list[str], top_k: int = 5, weights_dir: str | None = None,
                   weights: str | None = None, batch_size: int = 32, trust: bool = False,
                   workers: int | None = None, precision: str | None = None,
                   runtime: str | None = None) -> list[dict]:
    """Top-k classes for every image file named or found under the given folders.

    Works for head folders (`featcache train-head`) and fine-tuned folders
    (`featcache finetune`) alike.

    Returns:
        One dict per file, in order: {"path", "label", "score", "top_k": [{"label", "score"}]}
        or {"path", "error"} for files that could not be decoded. A multi-label head gives
        {"path", "labels", "scores", "top_k"} instead: the labels whose probability reaches
        their threshold (best first), and every label's probability.

    Raises:
        UsageError: no images, bad --top-k; FingerprintMismatchError (see backbone_for_head).
    """
    files = image_files(inputs, top_k)  # before the model is built: bad input fails at once
    scorer = scorer_for(model_dir, weights_dir, weights, trust, batch_size, precision, runtime)
    return predict_files(scorer, files, top_k, batch_size, workers)


def image_files(inputs: list[str], top_k: int) -> list[str]:
    """The image files named or found under `inputs`, after checking `top_k`.

    Raises:
        UsageError: top_k below 1, or no image files.
    """
    if top_k < 1:
        raise UsageError(f"{{param:top_k}} {top_k}: must be at least 1.")
    files, _ = list_images(inputs)
    if not files:
        raise UsageError(f"No image files in {', '.join(inputs)}.")
    return files


def predict_files(scorer: PixelScorer, files: list[str], top_k: int, batch_size: int = 32,
                  workers: int | None = None) -> list[dict]:
    """`predict_images` with a scorer built earlier (`scorer_for`, `scorer_for_head`), on the
    files `image_files` listed."""
    names = scorer.class_names
    k = min(top_k, len(names))
    results: list[dict] = []
    items = [Item(0, os.path.abspath(f), f, 0) for f in files]
    for item, row, reason in score_items(scorer, items, batch_size, workers):
        if row is None:
            results.append({"path": item.display, "error": reason})
            continue
        best = np.argsort(-row)[:k]
        top = [{"label": names[i], "score": float(row[i])} for i in best]
        if scorer.thresholds is not None:
            chosen = [i for i in np.argsort(-row) if row[i] >= scorer.thresholds[i]]
            results.append({"path": item.display, "labels": [names[i] for i in chosen],
                            "scores": {name: float(v) for name, v in zip(names, row)}, "top_k": top})
            continue
        results.append({"path": item.display, "label": names[best[0]], "score": float(row[best[0]]),
                        "top_k": top})
    return results
