"""Classify new image files with a trained head (`featcache predict`).

The backbone is rebuilt exactly as it was for the cache the head was trained
on (backbone, weights, input size, layer, pooling, resizing), and the rebuilt
fingerprint must equal the training cache's; then images go through the
same decoding pipeline, the backbone and the head.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .artifacts import load_head
from .dataset import list_images
from .decode import ResizeSpec
from .errors import UsageError
from .fingerprint import check_same, make_fingerprint
from .pipeline import Item, decoded_batches


@dataclass
class Backbone:
    """A feature extractor rebuilt for a head, with the input handling it expects."""

    extractor: object
    resize: ResizeSpec
    dtype: str


def backbone_for_head(fingerprint: dict, config: dict, weights_dir: str | None = None,
                      weights: str | None = None) -> Backbone:
    """Rebuild the feature model a head's training cache was made with.

    Args:
        fingerprint: the head's fingerprint.json contents.
        config: the head's config.json contents.
        weights_dir: offline ImageNet weights folder (default FEATCACHE_WEIGHTS_DIR).
        weights: override the weights file recorded for --weights PATH caches.

    Raises:
        FingerprintMismatchError: what can be built here differs (weights bytes,
            library versions...); the message names the fields.
    """
    from .extract import versions
    from .feature_model import build_feature_extractor

    fp = fingerprint["fingerprint"]
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
                    f"at {weights or 'its recorded path'} any more; pass --weights PATH.")
        else:
            weights = "imagenet"
    seed = fp["weights"].get("random_seed", 0)
    resize = ResizeSpec(tuple(fp["resize"]["size"]), fp["resize"]["method"], fp["resize"]["aspect"])
    extractor = build_feature_extractor(fp["backbone"], fp["input_size"][0], fp["layer"],
                                        fp["pooling"], weights, weights_dir, seed)
    rebuilt = make_fingerprint(extractor.describe(), resize.describe(), fp["dtype"], versions())
    check_same(fp, rebuilt, "the head's training cache",
               "Rebuild the cache and retrain the head with what is installed here, or install the "
               "versions and weights it was made with.")
    return Backbone(extractor, resize, fp["dtype"])


def features_of(backbone: Backbone, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """Backbone features of decoded pixels, rounded to the cache's storage dtype."""
    padded = np.zeros((batch_size, *pixels.shape[1:]), dtype=np.float32)
    out = []
    for start in range(0, len(pixels), batch_size):
        chunk = pixels[start:start + batch_size]
        padded[: len(chunk)] = chunk
        padded[len(chunk):] = 0
        out.append(np.asarray(backbone.extractor.model.predict_on_batch(padded))[: len(chunk)])
    features = np.concatenate(out)
    return features.astype(backbone.dtype).astype(np.float32)


def predict_images(model_dir: str, inputs: list[str], top_k: int = 5, weights_dir: str | None = None,
                   weights: str | None = None, batch_size: int = 32, trust: bool = False,
                   workers: int | None = None) -> list[dict]:
    """Top-k classes for every image file named or found under the given folders.

    Returns:
        One dict per file, in order: {"path", "label", "score", "top_k": [{"label", "score"}]}
        or {"path", "error"} for files that could not be decoded.

    Raises:
        UsageError: no images, bad --top-k; FingerprintMismatchError (see backbone_for_head).
    """
    if top_k < 1:
        raise UsageError(f"--top-k {top_k}: must be at least 1.")
    head, config, fingerprint = load_head(model_dir, trust=trust)
    files, _ = list_images(inputs)
    if not files:
        raise UsageError(f"No image files in {', '.join(inputs)}.")
    backbone = backbone_for_head(fingerprint, config, weights_dir, weights)
    names = head.class_names
    k = min(top_k, len(names))
    results: list[dict] = []
    items = [Item(0, os.path.abspath(f), f, 0) for f in files]
    for batch in decoded_batches(items, backbone.resize, batch_size,
                                 workers or min(8, os.cpu_count() or 1)):
        rows: dict[str, dict] = {item.display: {"path": item.display, "error": reason}
                                 for item, reason in batch.failures}
        if batch.items:
            scores = head.predict_proba(features_of(backbone, batch.pixels, batch_size))
            for item, row in zip(batch.items, scores):
                best = np.argsort(-row)[:k]
                rows[item.display] = {
                    "path": item.display, "label": names[best[0]], "score": float(row[best[0]]),
                    "top_k": [{"label": names[i], "score": float(row[i])} for i in best]}
        # keep the input order within the batch
        covered = [it.display for it in items[len(results):len(results) + batch.attempted]]
        results.extend(rows[p] for p in covered)
    return results
