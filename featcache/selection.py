"""Choose a head for the user: train every head that fits, select on the training split only,
score each once on validation (`featcache compare`, `train-head --model auto`).

Model selection never sees the validation or test split. The training split
is cut into stratified folds grouped by image content hash (every cached
augmented view of an image sits in the fold of its image), and:

* scikit-learn heads with a search grid (the linear heads' regularisation,
  kNN's neighbours, the forest's depth) are cross-validated over the grid;
  the value with the best out-of-fold accuracy (ties: lower log loss) is kept;
* Keras heads train once per fold with early stopping on the held-out fold;
  the final model trains on the whole training split for the median number
  of epochs the folds kept, with no early stopping.

Each head's out-of-fold accuracy on the training split ranks it, and the
winner is the head with the best one (ties: lower out-of-fold log loss, then
the faster fit). Then every final model is scored once on the validation
split, for the leaderboard only. The test split is never read.

Multi-label caches (`featcache.multilabel`) are compared the same way with
multi-label measures: heads that score each label on its own (one-vs-rest
scikit-learn heads, one sigmoid per label in Keras heads), folds stratified
by label set where every set can fill them, heads ranked by out-of-fold mean
average precision (ties: lower mean binary log loss). Each head's per-label
thresholds are tuned on its out-of-fold training scores, not on validation,
so the validation figures of the leaderboard are scores of untouched rows.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .artifacts import prepare_out_folder
from .cache import FeatureCache
from .errors import ParameterError, UsageError, param
from .fileio import write_json_atomic
from .heads import HEADS, canonical_name, create_head, head_params, list_heads
from .heads.calibration import (fit_temperature, grouped_folds, image_groups, label_set_folds,
                                out_of_fold_scores)
from .heads.feed import FeatureSplit, default_memory_budget, human_size, parse_size
from .metrics import safe_log_loss
from .train import (TrainSummary, _check_splits, _plots, _targets, finish_head, predict_split,
                    split_hashes)

LEADERBOARD_JSON = "leaderboard.json"
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_PNG = "leaderboard.png"
COLUMNS = ("rank", "head", "status", "selected", "cv_accuracy", "cv_log_loss", "val_accuracy",
           "val_macro_f1", "val_log_loss", "val_ece", "fit_seconds", "predict_ms_per_1000",
           "model_bytes")
MULTI_LABEL_COLUMNS = ("rank", "head", "status", "selected", "cv_map", "cv_log_loss", "cv_micro_f1",
                       "val_micro_f1", "val_macro_f1", "val_map", "val_exact_sets", "fit_seconds",
                       "predict_ms_per_1000", "model_bytes")
SELECTION = {False: "out-of-fold accuracy on the training split (folds grouped by image), ties: "
                    "lower log loss, then faster fit",
             True: "out-of-fold mean average precision on the training split (folds grouped by "
                   "image), ties: lower mean binary log loss, then faster fit; per-label "
                   "thresholds tuned on the out-of-fold scores"}
BY = {False: "out-of-fold accuracy on train", True: "out-of-fold mean average precision on train"}
RANKED_BY = {False: "cv_accuracy", True: "cv_map"}  # the leaderboard column that ranks heads
CHARTED = {False: ("val_accuracy", "validation accuracy"),  # the column the chart and progress show
           True: ("val_micro_f1", "validation micro F1")}
# cheap heads first, so a budget leaves out the slow ones
ORDER = ("ridge", "linear-svm", "logreg", "sgd", "knn", "random-forest", "dense256", "mlp",
         "dense512", "linear", "sigmoid")


class _OverBudget(Exception):
    pass


@dataclass
class CompareResult:
    """What `compare_heads` did; `to_json` is `featcache compare --json`."""

    cache: str
    out: str | None
    winner: str | None
    winner_dir: str | None
    rows: list[dict]
    folds: int
    seconds: float
    files: list[str] = field(default_factory=list)
    winner_summary: TrainSummary | None = None
    multi_label: bool = False

    def to_json(self) -> dict:
        return {"cache": self.cache, "out": self.out, "winner": self.winner,
                "winner_dir": self.winner_dir, "folds": self.folds,
                "seconds": round(self.seconds, 2), "multi_label": self.multi_label,
                "selection": SELECTION[self.multi_label], "leaderboard": self.rows,
                "files": self.files}


def default_heads(n_classes: int, multi_label: bool = False,
                  feature_shape: tuple[int, ...] = (1,)) -> list[str]:
    """Every registered head that applies to `n_classes` classes (multi-label: labels),
    cheap ones first."""
    names = [n for n in ORDER if n in HEADS] + [n for n in list_heads() if n not in ORDER]
    if not multi_label:
        return [n for n in names if not (HEADS[n].params.get("output") == "sigmoid" and n_classes != 2)]
    return [n for n in names if _takes_multi_label(n, n_classes, feature_shape)]


def _takes_multi_label(name: str, n_labels: int, feature_shape: tuple[int, ...]) -> bool:
    try:
        create_head(name).check_params(n_labels, feature_shape, multi_label=True)
    except ParameterError:  # e.g. a single sigmoid unit, or an SGD head trained by partial_fit
        return False
    return True


def _rank(targets: np.ndarray, scores: np.ndarray, multi_label: bool) -> tuple[tuple, dict]:
    """(sort key, measures) of out-of-fold scores: accuracy then log loss, or (multi-label)
    mean average precision then mean binary log loss."""
    if not multi_label:
        accuracy, loss = float(np.mean(scores.argmax(axis=1) == targets)), safe_log_loss(targets, scores)
        return _rank_key(accuracy, loss), {"cv_accuracy": accuracy, "cv_log_loss": loss}
    from .metrics import multilabel_metrics
    from .multilabel import tune_thresholds

    thresholds = tune_thresholds(targets, scores)
    m = multilabel_metrics(targets, scores, thresholds, [str(j) for j in range(targets.shape[1])])
    ap = m["mean_average_precision"]
    ap = 0.0 if np.isnan(ap) else ap
    return _rank_key(ap, m["log_loss"]), {"cv_map": ap, "cv_log_loss": m["log_loss"],
                                         "cv_micro_f1": m["micro_f1"], "thresholds": thresholds}


def _head_name(name: str) -> str:
    try:
        return canonical_name(name)
    except UsageError as exc:  # the message names --model; here the flag is --heads
        raise UsageError(str(exc.args[0]).replace(param("model"), param("heads"))) from None


def _user_params(name: str, params: dict | None) -> dict:
    """The user's head parameters that apply to head `name` (others are left out)."""
    if not params:
        return {}
    applies = set(head_params(name))
    return {k: v for k, v in params.items() if k in applies and v is not None}


def _grid_params(name: str, value) -> dict:
    """create_head keywords that set the search-grid parameter of `name` to `value`."""
    from .heads.sklearn_heads import ESTIMATOR_PARAMS

    spec = HEADS[name]
    searched = spec.params["search_grid"][0]
    ours = {theirs: mine for mine, theirs in ESTIMATOR_PARAMS.items()}
    if searched in ours:
        return {ours[searched]: value}
    return {"estimator_params": {**(spec.params.get("estimator_params") or {}), searched: value}}


def _fold_scores_sklearn(name: str, base: dict, value, searched: bool, X, y, folds, n_classes,
                         deadline):
    from joblib import Parallel, delayed
    from sklearn.exceptions import ConvergenceWarning

    def one(rows, held_out):
        head = create_head(name, **base, **(_grid_params(name, value) if searched else {}))
        head.fit(X[rows], y[rows], progress=False)
        part = np.zeros((len(held_out), n_classes))
        part[:, head.classes_.astype(np.int64)] = head.predict_proba(X[held_out])
        return held_out, part

    if deadline is not None and time.perf_counter() > deadline:
        raise _OverBudget()
    scores = np.zeros((len(y), n_classes))
    # a grid value whose solver stops short just scores worse; one warning per fold and
    # value would bury the leaderboard (the final fit still warns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for held_out, part in Parallel(n_jobs=-1, prefer="threads")(delayed(one)(a, b) for a, b in folds):
            scores[held_out] = part
    return scores


def _rank_key(accuracy: float, log_loss: float) -> tuple:
    return (-round(accuracy, 10), round(log_loss, 10))


def _select(name: str, base: dict, X, y, folds, n_classes: int, deadline, multi_label: bool = False):
    """Model selection for one head on the training rows (`y`: class indices, or the
    (N, L) 0/1 label vectors of a multi-label split, with `n_classes` = L).

    Returns:
        (final head, unfitted, with the chosen settings; out-of-fold scores of those
        settings; their measures from `_rank`; what was chosen, for the leaderboard and
        config).
    """
    spec = HEADS[name]
    if spec.kind == "sklearn":
        grid = spec.params.get("search_grid")
        values = list(grid[1]) if grid else [None]
        if grid and grid[0] == "n_neighbors":  # a neighbour count needs that many rows to fit on
            smallest = min(len(rows) for rows, _ in folds)
            values = [v for v in values if v <= smallest] or [max(1, smallest)]
        tried = []
        for value in values:
            scores = _fold_scores_sklearn(name, base, value, grid is not None, X, y, folds,
                                          n_classes, deadline)
            tried.append((*_rank(y, scores, multi_label), value, scores))
        _, measures, value, scores = min(tried, key=lambda t: t[0])
        chosen = {grid[0]: value} if grid else {}
        measure = RANKED_BY[multi_label]
        selection = {"searched": grid[0] if grid else None,
                     f"{measure}_per_value": {str(v): round(m[measure], 4) for _, m, v, _ in tried}
                     if grid else {},
                     "chosen": chosen}
        head = create_head(name, **base, **(_grid_params(name, value) if grid else {}))
        return head, scores, measures, selection

    made = []

    def make():
        if deadline is not None and time.perf_counter() > deadline:
            raise _OverBudget()
        made.append(create_head(name, **base))
        return made[-1]

    scores, epochs = out_of_fold_scores(make, X, y, folds, n_classes)
    chosen_epochs = max(1, int(round(float(np.median(epochs))))) if epochs else None
    selection = {"fold_best_epochs": epochs, "chosen": {"epochs": chosen_epochs},
                 "fold_epochs_run": sum(epochs_run(name, h) for h in made)}
    final = dict(base, early_stopping=False)
    if chosen_epochs is not None:
        final["epochs"] = chosen_epochs
    return create_head(name, **final), scores, _rank(y, scores, multi_label)[1], selection


def epochs_run(name: str, head) -> int:
    """Training epochs the fitted head `name` ran (0 for a scikit-learn head)."""
    history = getattr(head, "history_", None) or {}
    return len(history.get("loss", [])) if HEADS[name].kind == "keras" else 0


def _predict_ms_per_1000(head, rows: np.ndarray, repeats: int = 3) -> float:
    batch = np.resize(rows, (1000, *rows.shape[1:])).astype(np.float32)
    head.predict_proba(batch[:10])  # warm-up: Keras traces its call once
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        head.predict_proba(batch)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def compare_heads(cache_path: str, heads: list[str] | None = None, out: str | None = None,
                  winner_out: str | None = None, budget: float | None = None, cv: int = 3,
                  calibrate: bool = False, max_memory: str | int | None = None,
                  progress: bool | None = None, train_split: str = "train",
                  val_split: str | None = "val", params: dict | None = None,
                  seed: int = 0) -> CompareResult:
    """Train every head, choose on the training split, score each once on validation.

    Args:
        cache_path: a finished cache.
        heads: head names (default: every head that applies, see `default_heads`).
        out: folder for the leaderboard (JSON, CSV, chart), every head's folder
            under heads/ and the winner's under winner/. None: only `winner_out`.
        winner_out: also (or only) write the winner's head folder here, with the
            leaderboard files beside it (`train-head --model auto`).
        budget: seconds the comparison may take; heads not finished by then are
            listed as "over budget" (cheap heads run first).
        cv: folds of the training split (grouped by image content hash).
        calibrate: calibrate every head on its held-out folds (see `train_head`).
        max_memory: memory budget for features (the comparison holds train and
            validation in memory).
        progress: a bar over the heads (None: only on a terminal).
        train_split, val_split: the splits; any other split (test) is never read.
        params: head parameters, applied to the heads they apply to.
        seed: seeds the folds and the heads.

    Raises:
        UsageError: unknown heads, a cache too large for memory, too few images.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    deadline = start + float(budget) if budget else None
    cache = FeatureCache(cache_path)
    multi_label = cache.multi_label
    if calibrate and multi_label:
        raise UsageError(f"{param('calibrate')} applies to single-label caches; {cache_path} is a "
                         "multi-label cache (its heads give each label its own probability).")
    val_split = _check_splits(cache, cache_path, train_split, val_split)
    n_outputs = len(cache.label_names)
    names = (default_heads(n_outputs, multi_label, cache.feature_shape) if not heads
             else list(dict.fromkeys(_head_name(h) for h in heads)))
    if out is None and winner_out is None:
        raise UsageError(f"Give {param('out')}: the folder for the leaderboard and the winning head.")
    memory = parse_size(max_memory) or default_memory_budget()
    row = 4 * int(np.prod(cache.feature_shape))
    need = row * (cache.splits[train_split] + (cache.splits.get(val_split, 0) if val_split else 0))
    if need > memory:
        raise UsageError(
            f"Comparing heads holds the training and validation features in memory "
            f"({human_size(need)} as float32) but {param('max_memory')} is {human_size(memory)}. "
            f"Raise {param('max_memory')}, or train one head that streams from disk with "
            "featcache train-head --model sgd or a Keras head.")
    base_params = {"seed": seed, **(params or {})}
    for name in names:
        create_head(name, **_user_params(name, base_params)).check_params(
            n_outputs, cache.feature_shape, multi_label)

    out = _prepare_compare_folder(out) if out is not None else None
    scratch = None
    heads_root = os.path.join(out, "heads") if out else (scratch := tempfile.mkdtemp(prefix="featcache-compare-"))
    train = FeatureSplit(cache, train_split, True)
    val = FeatureSplit(cache, val_split, True) if val_split else None
    try:
        X, y = train.all_features(), np.asarray(train.labels, dtype=np.int64)
        groups = image_groups(split_hashes(cache, train_split))
        if multi_label:  # choose on the label vectors; the folds keep label sets apart
            folds = label_set_folds(y, groups, cv, seed)
            y = _targets(train).astype(np.int64)
        else:
            folds = grouped_folds(y, groups, cv, seed)
        timing_rows = val.all_features() if val is not None and val.n_rows else X
        rows, fitted = [], {}
        bar = tqdm(names, desc="compare", unit="head", leave=False,
                   disable=None if progress is None else not progress)
        for name in bar:
            bar.set_postfix_str(name)
            head_start = time.perf_counter()
            record = {"head": name, "kind": HEADS[name].kind}
            try:
                head, oof, measures, selection = _select(name, _user_params(name, base_params), X, y,
                                                         folds, n_outputs, deadline, multi_label)
                if deadline is not None and time.perf_counter() > deadline:
                    raise _OverBudget()
                fit_start = time.perf_counter()
                head.fit_cache(train, None, progress=False)
                fit_seconds = time.perf_counter() - fit_start
                temperature = None
                if calibrate and HEADS[name].kind == "keras":
                    temperature = fit_temperature(oof, y)
                folder = prepare_out_folder(os.path.join(heads_root, name))
                summary = finish_head(folder, head, cache, train, val, fit_seconds, True,
                                      calibrate=calibrate, temperature=temperature,
                                      calibration_folds=cv, plots=False,
                                      thresholds=measures.pop("thresholds", None),
                                      extra={"selection": {**selection, "folds": len(folds),
                                                           "by": BY[multi_label]}})
            except _OverBudget:
                record.update(status="over budget", fit_seconds=round(time.perf_counter() - head_start, 2))
                rows.append(record)
                continue
            record.update(status="ok", selected=selection["chosen"],
                          **{k: round(v, 4) for k, v in measures.items()},
                          **_val_measures(summary.metrics, val is not None, multi_label))
            record.update(
                fit_seconds=round(time.perf_counter() - head_start, 2),
                final_fit_seconds=round(fit_seconds, 2),
                # every epoch over the training rows, folds included (Keras heads only)
                epochs_run=selection.get("fold_epochs_run", 0) + epochs_run(name, head),
                predict_ms_per_1000=round(_predict_ms_per_1000(head, timing_rows), 2),
                model_bytes=os.path.getsize(os.path.join(folder, summary.files[0])),
                folder=folder)
            if calibrate:
                record["val_ece_before_calibration"] = round(summary.metrics["calibration"]["ece_before"], 4)
            rows.append(record)
            fitted[name] = (head, summary)
            if not bar.disable:
                bar.write(_progress_line(record, multi_label))
        bar.close()
        ok = [r for r in rows if r["status"] == "ok"]
        ok.sort(key=lambda r: (_rank_key(r[RANKED_BY[multi_label]], r["cv_log_loss"]), r["fit_seconds"]))
        for rank, r in enumerate(ok, 1):
            r["rank"] = rank
            r["winner"] = rank == 1
        rows = ok + [r for r in rows if r["status"] != "ok"]
        if not ok:
            raise UsageError(f"No head finished within {param('budget')}={budget} seconds; "
                             "raise it or name fewer heads.")
        winner = ok[0]["head"]
        head, summary = fitted[winner]
        winner_dir = None
        scored = val if val is not None else train
        scores = predict_split(head, scored)
        targets = [d for d in (os.path.join(out, "winner") if out else None, winner_out) if d]
        for target in targets:
            target = prepare_out_folder(target)
            for entry in os.listdir(summary.out):
                shutil.copy2(os.path.join(summary.out, entry), os.path.join(target, entry))
            _plots(target, winner, head, summary.metrics, cache.class_names, scored.labels, scores)
            winner_dir = winner_dir or target
        result = CompareResult(cache=cache.path, out=out or winner_out, winner=winner,
                               winner_dir=winner_dir, rows=rows, folds=len(folds),
                               seconds=time.perf_counter() - start, multi_label=multi_label)
        for folder in [d for d in (out, winner_out) if d]:
            result.files += _write_leaderboard(folder, result, os.path.basename(cache.path.rstrip("/")))
        if winner_out:
            summary.out = os.path.abspath(winner_out)
            summary.files = sorted(os.listdir(winner_out))
            summary.notes = {**summary.notes, "compared": [r["head"] for r in rows]}
        result.winner_summary = summary
        result.seconds = time.perf_counter() - start
        return result
    finally:
        train.close()
        if val is not None:
            val.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _prepare_compare_folder(out: str) -> str:
    """Create --out, or clear a previous comparison's heads from it; refuse other folders."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"{param('out')} {out}: is a file, not a folder.")
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(os.path.join(out, LEADERBOARD_JSON)):
            raise UsageError(f"{param('out')} {out}: folder is not empty and holds no featcache "
                             "comparison. Choose a new or empty folder.")
        for old in ("heads", "winner"):
            shutil.rmtree(os.path.join(out, old), ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    return out


def _val_measures(metrics: dict, scored: bool, multi_label: bool) -> dict:
    """The leaderboard's validation columns from a head's metrics (None without validation)."""
    keys = ({"val_micro_f1": "micro_f1", "val_macro_f1": "macro_f1", "val_map": "mean_average_precision",
             "val_exact_sets": "accuracy", "val_log_loss": "log_loss"} if multi_label else
            {"val_accuracy": "accuracy", "val_macro_f1": "macro_f1", "val_log_loss": "log_loss",
             "val_ece": "ece"})
    return {k: (round(float(metrics[m]), 4) if scored else None) for k, m in keys.items()}


def _progress_line(r: dict, multi_label: bool = False) -> str:
    cv, val = RANKED_BY[multi_label], CHARTED[multi_label][0]
    return (f"  {r['head']:<14} {cv.replace('_', ' ')} {r[cv]:.4f}  {val.replace('_', ' ')} "
            + (f"{r[val]:.4f}" if r.get(val) is not None else "-")
            + f"  {r['fit_seconds']:.1f} s  {r['selected']}")


def _write_leaderboard(folder: str, result: CompareResult, title: str) -> list[str]:
    """leaderboard.json, leaderboard.csv and the accuracy-against-time chart in `folder`."""
    from .plots import plot_leaderboard

    write_json_atomic(os.path.join(folder, LEADERBOARD_JSON), result.to_json())
    with open(os.path.join(folder, LEADERBOARD_CSV), "w", newline="") as fh:
        columns = MULTI_LABEL_COLUMNS if result.multi_label else COLUMNS
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in result.rows:
            writer.writerow({k: (r.get(k) if k != "selected" else
                                 " ".join(f"{a}={b}" for a, b in (r.get(k) or {}).items()))
                             for k in columns})
    written = [os.path.join(folder, LEADERBOARD_JSON), os.path.join(folder, LEADERBOARD_CSV)]
    measure = CHARTED[result.multi_label]
    if any(r.get(measure[0]) is not None for r in result.rows):
        written.append(plot_leaderboard(result.rows, os.path.join(folder, LEADERBOARD_PNG),
                                        f"{title}: winner {result.winner}", *measure))
    return written
