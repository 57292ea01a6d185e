"""Calibrated probabilities: folds grouped by image, temperature scaling, and what it changed.

Calibration is fitted on held-out training rows only. `grouped_folds` splits a
training split into stratified folds that keep every row of one image (its
augmented views share the image's sha256) in the same fold, so a held-out
fold never scores copies of rows the model trained on.

Keras heads are calibrated by temperature scaling: one number T fitted to the
out-of-fold scores by minimising the log loss, then folded into the last
Dense layer (its kernel and bias divided by T), so the saved model, `predict`
and `export` give the calibrated probabilities with no extra step.
scikit-learn heads use `sklearn.calibration.CalibratedClassifierCV` with the
same folds (see `SklearnHead.calibrate`).
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError, UsageError


def image_groups(hashes) -> np.ndarray:
    """One group number per row: rows of the same image file (same sha256) share it."""
    return np.unique(np.asarray(hashes), return_inverse=True)[1]


def grouped_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int = 0,
                  what: str = "{param:cv}") -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds of training rows with each group (image) in one fold.

    Args:
        labels: (N,) class indices.
        groups: (N,) group numbers (`image_groups`).
        n_folds: folds wanted; fewer when a class has fewer images.
        seed: shuffles the groups.
        what: the flag named in the error.

    Returns:
        A list of (train rows, held-out rows) index pairs.

    Raises:
        ParameterError / UsageError: fewer than 2 folds possible.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels)
    if int(n_folds) < 2:
        raise ParameterError("cv", n_folds, "needs at least 2 folds.")
    images_per_class = [len(np.unique(groups[labels == c])) for c in np.unique(labels)]
    folds = min(int(n_folds), min(images_per_class))
    if folds < 2:
        raise UsageError(f"{what}: cross-validation needs at least 2 training images of every "
                         f"class; the smallest class has {min(images_per_class)}.")
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=int(seed))
    return [(np.sort(a), np.sort(b)) for a, b in splitter.split(np.zeros(len(labels)), labels, groups)]


def label_set_folds(sets: np.ndarray, groups: np.ndarray, n_folds: int, seed: int = 0,
                    what: str = "{param:cv}") -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds of a multi-label training split, each group (image) in one fold.

    Stratified by label set while every set has an image for each fold (then
    each fold sees every combination); otherwise groups are shuffled into
    folds without stratification, since rare combinations cannot fill them.

    Args:
        sets: (N,) label-set indices (the cache's classes of a multi-label cache).
        groups: (N,) group numbers (`image_groups`).
        n_folds: folds wanted; fewer when there are fewer images.

    Raises:
        ParameterError / UsageError: fewer than 2 folds possible.
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    sets = np.asarray(sets)
    if int(n_folds) < 2:
        raise ParameterError("cv", n_folds, "needs at least 2 folds.")
    folds = min(int(n_folds), len(np.unique(groups)))
    if folds < 2:
        raise UsageError(f"{what}: cross-validation needs at least 2 training images.")
    smallest = min(len(np.unique(groups[sets == s])) for s in np.unique(sets))
    splitter = (StratifiedGroupKFold(folds, shuffle=True, random_state=int(seed)) if smallest >= folds
                else GroupKFold(folds, shuffle=True, random_state=int(seed)))
    return [(np.sort(a), np.sort(b)) for a, b in splitter.split(np.zeros(len(sets)), sets, groups)]


def _log_probs(scores: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(scores, dtype=np.float64), 1e-12, None))


def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Scores p made softer (T > 1) or sharper (T < 1): softmax(log p / T)."""
    z = _log_probs(scores) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimises the log loss of `apply_temperature(scores, T)`.

    Args:
        scores: (N, C) held-out class scores (rows sum to 1).
        labels: (N,) true class indices.
    """
    from scipy.optimize import minimize_scalar

    logp = _log_probs(scores)
    labels = np.asarray(labels, dtype=np.int64)

    def loss(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(lse - z[np.arange(len(z)), labels]))

    best = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(best.x))


def fold_temperature(model, temperature: float) -> None:
    """Divide the last Dense layer of a Keras head's model by T (in place)."""
    names = [layer.name for layer in model.layers]
    last = model.get_layer("probabilities" if "probabilities" in names else "probability")
    kernel, bias = last.get_weights()
    last.set_weights([kernel / temperature, bias / temperature])


def out_of_fold_scores(make_head, X: np.ndarray, labels: np.ndarray, folds, n_classes: int,
                       early_stopping: bool = True, progress=None):
    """Scores of every training row from a head trained without that row's fold.

    Args:
        make_head: returns a fresh unfitted head.
        X: training rows; labels: their class indices (multi-label: their (N, L) 0/1
            label vectors, and `n_classes` is L).
        folds: from `grouped_folds`.
        early_stopping: Keras heads stop on the held-out fold's loss.
        progress: called with the fold number after each fold.

    Returns:
        (scores (N, C), best epochs of the Keras heads per fold (empty for others)).
    """
    scores = np.zeros((len(labels), n_classes))
    epochs = []
    for i, (train_rows, held_out) in enumerate(folds):
        head = make_head()
        if hasattr(head, "early_stopping") and early_stopping:
            head.fit(X[train_rows], labels[train_rows],
                     validation_data=(X[held_out], labels[held_out]), progress=False)
            if head.best_epoch_ is not None:
                epochs.append(head.best_epoch_ + 1)
        else:
            head.fit(X[train_rows], labels[train_rows], progress=False)
        part = head.predict_proba(X[held_out])
        scores[np.ix_(held_out, head.classes_.astype(np.int64))] = part
        if progress is not None:
            progress(i)
    return scores, epochs


def calibration_report(labels: np.ndarray, before: np.ndarray, after: np.ndarray, method: str,
                       **extra) -> dict:
    """ECE and log loss on one split before and after calibration, for metrics.json."""
    from ..metrics import expected_calibration_error, safe_log_loss

    return {"method": method, **extra,
            "ece_before": expected_calibration_error(labels, before),
            "ece_after": expected_calibration_error(labels, after),
            "log_loss_before": safe_log_loss(labels, before),
            "log_loss_after": safe_log_loss(labels, after)}
