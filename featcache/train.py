"""Train a head on a cache, score it, and write its folder (`featcache train-head`, `evaluate`).

The training split is read in memory when train and validation features fit
in `max_memory` (as float32), otherwise streamed from the HDF5 shards in the
same shuffled order, for the heads that can stream.

On a multi-label cache (`featcache.multilabel`) the head scores every label,
its per-label thresholds are tuned on the validation split (F1), and the
metrics are micro/macro F1, mean average precision and per-label
precision/recall instead of accuracy and a confusion matrix.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from .artifacts import (
    CONFIG_FILE,
    FINGERPRINT_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    is_end_to_end,
    load_head,
    head_source,
    prepare_out_folder,
    read_head_files,
    write_head,
)
from .errors import CacheError, UsageError, param
from .fileio import write_json_atomic
from .fingerprint import check_same
from .heads import create_head, get_head_spec
from .heads.feed import FeatureSplit, Schedule, default_memory_budget, human_size, parse_size, window_rows_for
from .metrics import classification_metrics, multilabel_metrics
from .cache import FeatureCache


@dataclass
class TrainSummary:
    """What `train_head` did; `to_json` is train-head's --json output."""

    out: str
    head: str
    val_accuracy: float | None
    train_accuracy: float
    seconds: float
    in_memory: bool
    train_rows: int
    val_rows: int
    metrics: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    estimator: object = field(default=None, repr=False)  # the fitted head itself

    def to_json(self) -> dict:
        return {
            "out": self.out, "head": self.head, "val_accuracy": self.val_accuracy,
            "train_accuracy": self.train_accuracy, "seconds": round(self.seconds, 3),
            "in_memory": self.in_memory, "train_rows": self.train_rows, "val_rows": self.val_rows,
            "top5_accuracy": self.metrics.get("top5_accuracy"), "macro_f1": self.metrics.get("macro_f1"),
            **({"multi_label": True, "micro_f1": self.metrics["micro_f1"],
                "mean_average_precision": self.metrics["mean_average_precision"]}
               if self.metrics.get("multi_label") else {}),
            "files": self.files, "notes": self.notes,
        }


def predict_split(head, data: FeatureSplit, batch_size: int = 512) -> np.ndarray:
    """Scores for every row of a split, in stored order, streaming if needed."""
    schedule = Schedule(data, batch_size, shuffle=False)
    parts = [head.predict_proba(schedule.batch(i)[0]) for i in range(len(schedule))]
    return np.concatenate(parts) if parts else np.zeros((0, head.n_classes))


def _plan_memory(cache: FeatureCache, train_split: str, val_split: str | None, budget: int,
                 head) -> bool:
    """Whether to hold the features in memory; refuses what cannot work under the budget."""
    row = 4 * int(np.prod(cache.feature_shape))
    need = row * (cache.splits[train_split] + (cache.splits.get(val_split, 0) if val_split else 0))
    if need <= budget:
        return True
    if not head.can_stream():
        raise UsageError(
            f"{param('model')}={head.name} needs the features in memory ({human_size(need)} as "
            f"float32) but {param('max_memory')} is {human_size(budget)}. Raise {param('max_memory')}, "
            f"or use {param('model')}=sgd or a Keras head, which train from disk.")
    # streaming keeps two windows of the training split and two of the validation split
    windows = 4 if val_split else 2
    need = windows * row * window_rows_for(row, head.batch_size, head.shuffle_window)
    if need > budget:
        raise UsageError(
            f"{param('max_memory')}={human_size(budget)} cannot hold {windows} shuffle windows "
            f"({human_size(need)}); raise it or lower {param('shuffle_window')} and "
            f"{param('batch_size')}.")
    return False


def train_head(cache_path: str, model: str, out: str | None, params: dict | None = None,
               train_split: str = "train", val_split: str | None = "val",
               max_memory: str | int | None = None, progress: bool | None = None,
               calibrate: bool = False, calibration_folds: int = 3) -> TrainSummary:
    """Train head `model` on `cache_path` and write it to `out`.

    Args:
        cache_path: a finished cache.
        model: head name (see `featcache.heads.list_heads`); to let featcache choose,
            see `featcache.selection.compare_heads`.
        out: folder for the head's files; None: write nothing (the summary's
            `estimator` is the fitted head).
        params: head parameters the user set, e.g. {"epochs": 10}; None values and
            missing ones take the head's defaults (see `featcache.heads.create_head`).
        train_split: split to train on.
        val_split: split for early stopping and metrics; None or missing: train only.
        max_memory: memory budget for features, e.g. "2GB" (default: half of RAM).
        progress: show an epoch bar (None: only on a terminal).
        calibrate: fit calibrated probabilities on held-out training folds
            (temperature scaling for Keras heads, CalibratedClassifierCV for
            scikit-learn heads); metrics.json then reports ECE before and after.
        calibration_folds: folds for `calibrate` (grouped by image).

    Raises:
        FeatcacheError subclasses with one-line messages.
    """
    head = create_head(model, **(params or {}))
    cache = FeatureCache(cache_path)
    val_split = _check_splits(cache, cache_path, train_split, val_split)
    budget_bytes = parse_size(max_memory) or default_memory_budget()
    head.check_params(len(cache.label_names), cache.feature_shape, cache.multi_label)
    in_memory = _plan_memory(cache, train_split, val_split, budget_bytes, head)
    if calibrate and cache.multi_label:
        raise UsageError(f"{param('calibrate')} applies to single-label caches; a multi-label "
                         f"head's thresholds are tuned on the validation split instead.")
    if calibrate and not in_memory:
        raise UsageError(f"{param('calibrate')} needs the training features in memory (it trains on "
                         f"held-out folds); raise {param('max_memory')}.")
    out = prepare_out_folder(out) if out is not None else None
    train = FeatureSplit(cache, train_split, in_memory)
    val = FeatureSplit(cache, val_split, in_memory) if val_split else None
    try:
        temperature = None
        if calibrate and get_head_spec(head.name).kind == "keras":
            temperature = _keras_temperature(head, cache, train, calibration_folds)
        start = time.perf_counter()
        head.fit_cache(train, val, progress=progress)
        seconds = time.perf_counter() - start
        return finish_head(out, head, cache, train, val, seconds, in_memory,
                           calibrate=calibrate, temperature=temperature,
                           calibration_folds=calibration_folds)
    finally:
        train.close()
        if val is not None:
            val.close()


def _check_splits(cache: FeatureCache, cache_path: str, train_split: str, val_split: str | None):
    """The validation split to use (None when the cache has none); refuses unusable caches."""
    if train_split not in cache.splits:
        raise CacheError(f"{cache_path}: no '{train_split}' split to train on "
                         f"(splits: {', '.join(cache.splits)}).")
    if len(cache.class_names) < 2:
        raise UsageError(f"{cache_path}: only one class ({cache.class_names[0]}); "
                         "a classifier needs at least two.")
    return val_split if val_split in cache.splits else None


def split_hashes(cache: FeatureCache, split: str) -> list[str]:
    """The sha256 of each row's image file, in stored order (without reading features)."""
    hashes: list[str] = []
    for shard in cache.shards(split):
        with cache.open_shard(shard) as f:
            hashes.extend(f.hashes())
    return hashes


def _keras_temperature(head, cache: FeatureCache, train: FeatureSplit, folds: int) -> float:
    """Temperature fitted to out-of-fold scores of copies of `head` on the training split."""
    from sklearn.base import clone

    from .heads.calibration import fit_temperature, grouped_folds, image_groups, out_of_fold_scores

    labels = train.labels
    splits = grouped_folds(labels, image_groups(split_hashes(cache, train.split)), folds, head.seed)
    scores, _ = out_of_fold_scores(lambda: clone(head), train.all_features(), labels, splits,
                                   len(cache.class_names))
    return fit_temperature(scores, labels)


def finish_head(out: str | None, head, cache: FeatureCache, train, val, seconds: float, in_memory: bool,
                calibrate: bool = False, temperature: float | None = None,
                calibration_folds: int = 3, extra: dict | None = None,
                plots: bool = True, thresholds=None) -> TrainSummary:
    """Score a fitted head, calibrate it if asked, and write its folder (model, config,
    metrics, history, plots).

    Args:
        temperature: for a Keras head with `calibrate`, the temperature to fold into it.
        extra: more entries for the config's "training" record (e.g. the selection).
        plots: draw history, confusion matrix and reliability PNGs.
        thresholds: multi-label heads: per-label thresholds chosen elsewhere (`compare`
            tunes them on out-of-fold training scores); None tunes them on validation.
    """
    from .heads.calibration import calibration_report, fold_temperature, grouped_folds, image_groups

    scored = val if val is not None else train
    train_scores = predict_split(head, train)
    scores = predict_split(head, val) if val is not None else train_scores
    notes, uncalibrated = dict(head.notes_), None
    if head.multi_label:
        from .multilabel import decide, tune_thresholds

        if thresholds is not None:
            head.thresholds_ = np.asarray(thresholds, dtype=np.float64)
            notes["thresholds"] = "tuned on out-of-fold scores of the training split"
        elif val is not None and val.n_rows:
            head.thresholds_ = tune_thresholds(_targets(val), scores)
        metrics = multilabel_metrics(_targets(scored), scores, head.thresholds_, head.class_names)
        train_accuracy = float(np.mean(np.all(decide(train_scores, head.thresholds_)
                                              == _targets(train), axis=1)))
    else:
        calibration = None
        if calibrate:
            uncalibrated = scores
            if temperature is not None:
                fold_temperature(head.model_, temperature)
                method = "temperature scaling"
            else:
                splits = grouped_folds(train.labels, image_groups(split_hashes(cache, train.split)),
                                       calibration_folds, getattr(head, "seed", 0))
                head.calibrate(train.all_features(), train.labels, splits)
                temperature = head.temperature
                method = "CalibratedClassifierCV (temperature)"
            train_scores = predict_split(head, train)
            scores = predict_split(head, val) if val is not None else train_scores
            calibration = calibration_report(scored.labels, uncalibrated, scores, method,
                                             temperature=round(float(temperature), 4),
                                             folds=calibration_folds, split=scored.split)
            notes["calibration"] = {k: calibration[k] for k in ("method", "temperature", "folds")}
        metrics = classification_metrics(scored.labels, scores, cache.class_names)
        if calibration is not None:
            metrics["calibration"] = calibration
        train_accuracy = float(np.mean(train_scores.argmax(axis=1) == train.labels))
    metrics["split"] = scored.split
    training = {"seconds": round(seconds, 3), "in_memory": in_memory, "train_split": train.split,
                "val_split": val.split if val is not None else None, "train_rows": train.n_rows,
                "val_rows": val.n_rows if val is not None else 0,
                "best_epoch": head.best_epoch_, **notes, **(extra or {})}
    head.source_ = head_source(cache)  # what rebuilds its backbone (featcache.predict)
    head.val_accuracy_ = metrics["accuracy"] if val is not None else None
    files = []
    if out is not None:
        config = write_head(out, head, cache, training)
        write_json_atomic(os.path.join(out, METRICS_FILE), metrics)
        write_json_atomic(os.path.join(out, HISTORY_FILE), head.history_)
        files = [config["model_file"], CONFIG_FILE, FINGERPRINT_FILE, METRICS_FILE, HISTORY_FILE]
    if plots and out is not None:
        files += _plots(out, head.name, head, metrics, cache.class_names, scored.labels, scores,
                        uncalibrated)
    return TrainSummary(
        out=out, head=head.name,
        val_accuracy=metrics["accuracy"] if val is not None else None,
        train_accuracy=train_accuracy, seconds=seconds, in_memory=in_memory,
        train_rows=train.n_rows, val_rows=val.n_rows if val is not None else 0,
        metrics=metrics, files=files, notes={**notes, "best_epoch": head.best_epoch_, **(extra or {})},
        estimator=head)


def _targets(split) -> np.ndarray:
    """A multi-label split's (rows, labels) 0/1 matrix."""
    return split.label_indicator[split.labels]


def _plots(out: str, name: str, head, metrics: dict, class_names: list[str], labels, scores,
           uncalibrated=None) -> list[str]:
    from .plots import plot_confusion, plot_history, plot_reliability

    written = []
    if plot_history(head.history_, os.path.join(out, "history.png"), f"{name} head",
                    best_epoch=head.best_epoch_):
        written.append("history.png")
    if metrics.get("multi_label"):
        from .plots import plot_per_label

        plot_per_label(metrics, os.path.join(out, "per_label.png"),
                       f"{name}: {metrics['split']} micro F1 {metrics['micro_f1']:.3f}")
        return written + ["per_label.png"]
    plot_confusion(metrics["confusion_matrix"], class_names, os.path.join(out, "confusion_matrix.png"),
                   f"{name}: {metrics['split']} accuracy {metrics['accuracy']:.3f}")
    written.append("confusion_matrix.png")
    curves = ({"before calibration": uncalibrated, "calibrated": scores} if uncalibrated is not None
              else {name: scores})
    plot_reliability(labels, curves, os.path.join(out, "reliability.png"),
                     f"{name}: reliability on {metrics['split']}")
    written.append("reliability.png")
    return written


def evaluate(model_dir: str, cache_path: str, split: str = "val", trust: bool = False,
             weights_dir: str | None = None) -> dict:
    """Score a trained head, or a fine-tuned model, on one split of a cache made the same way.

    A head scores the cached features. A fine-tuned model has its own backbone,
    so it scores the split's images, found through the cache's file list.

    Raises:
        FingerprintMismatchError: the cache's features were made differently
            from those the model was trained on (the message names the fields).
    """
    config, trained = read_head_files(model_dir)
    cache = FeatureCache(cache_path)
    check_same(trained["fingerprint"], cache.fingerprint, f"cache {cache_path}",
               f"The model in {model_dir} can only score data prepared like its training cache.")
    if cache.label_names != config["class_names"]:
        raise UsageError(f"cache {cache_path} has {'labels' if cache.multi_label else 'classes'} "
                         f"{cache.label_names}; the model was trained on {config['class_names']}.")
    if is_end_to_end(config):
        labels, scores = _score_images(model_dir, cache, split, trust, weights_dir)
    else:
        head, config, _ = load_head(model_dir, trust=trust)
        budget = default_memory_budget()
        data = FeatureSplit(cache, split, in_memory=cache.splits.get(split, 0) * 4 *
                            int(np.prod(cache.feature_shape)) <= budget)
        try:
            scores = predict_split(head, data)
        finally:
            data.close()
        labels = data.labels
        if head.multi_label:
            metrics = multilabel_metrics(_targets(data), scores, head.thresholds_, cache.label_names)
            metrics.update(split=split, head=config["head"])
            return metrics
    metrics = classification_metrics(labels, scores, cache.class_names)
    metrics["split"] = split
    metrics["head"] = config["head"] + (" (fine-tuned)" if is_end_to_end(config) else "")
    return metrics


def _score_images(model_dir, cache: FeatureCache, split: str, trust: bool, weights_dir):
    from .pipeline import Item
    from .prediction import score_items, scorer_for

    paths, labels = cache.index(split)
    root = cache.manifest["source"]["root"]
    items = [Item(0, os.path.join(root, p), p, int(label)) for p, label in zip(paths, labels)]
    scorer = scorer_for(model_dir, weights_dir=weights_dir, trust=trust)
    kept, scores = [], []
    for item, row, reason in score_items(scorer, items):
        if row is None:
            raise CacheError(f"{item.path}: {reason}. A fine-tuned model is evaluated on the cache's "
                             f"images, which must still be under {root}.")
        kept.append(item.label)
        scores.append(row)
    return np.array(kept), np.array(scores)
