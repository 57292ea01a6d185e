"""The built-in default job: what featcache is for, shown on a shipped image set in under a minute.

`featcache demo` runs the frozen backbone once over 400 CIFAR-10 images that
ship inside the package (or over the user's folder with `--data`), compares
several heads on the cached features (scikit-learn and Keras heads, chosen
on the training split), estimates what the same training would have cost with
the frozen base inside `model.fit`, predicts three validation images with the
winner, and writes one self-contained HTML report of all of it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from importlib import resources

from .extract import ExtractOptions, ExtractSummary, extract
from .selection import CompareResult, compare_heads

SAMPLE_SET = "cifar10"
# cheap scikit-learn heads and one Keras dense head: the point is that all of them train
# on one extraction, in seconds
DEMO_HEADS = ("logreg", "linear-svm", "ridge", "knn", "dense256")
SAMPLE_PREDICTIONS = 3
REPORT_FILE = "report.html"


def sample_data_dir() -> str:
    """Folder of the shipped CIFAR-10 sample (train/ and val/ class folders)."""
    return str(resources.files("featcache") / "sample_data" / SAMPLE_SET)


@dataclass
class TimeSaved:
    """What the cache saved: the heads' training on cached features against an estimate of the
    same training with the frozen base inside `model.fit`.

    The estimate counts one pass of the backbone over the train and validation
    images per Keras-head epoch run (folds included) and one per scikit-learn
    head, at the backbone's own pace measured during extraction (inference
    only, so it leaves out the decoding that `model.fit` would also repeat).
    """

    heads_seconds: float
    passes: int
    images: int
    backbone_images_per_second: float

    @property
    def in_fit_seconds(self) -> float:
        return self.passes * self.images / self.backbone_images_per_second

    def to_json(self) -> dict:
        return {"heads_seconds": round(self.heads_seconds, 2), "passes": self.passes,
                "images": self.images,
                "backbone_images_per_second": round(self.backbone_images_per_second, 2),
                "in_fit_seconds_estimate": round(self.in_fit_seconds, 1),
                "saved_seconds_estimate": round(self.in_fit_seconds - self.heads_seconds, 1),
                "estimate": True}


def time_saved(comparison: CompareResult, extraction: ExtractSummary) -> TimeSaved | None:
    """The time-saved estimate of a comparison on a cache, or None without a measured pace."""
    rate = extraction.backbone_images_per_second
    ok = [r for r in comparison.rows if r["status"] == "ok"]
    if not rate or not ok:
        return None
    passes = sum(r.get("epochs_run") or 1 for r in ok)
    images = extraction.splits.get("train", 0) + extraction.splits.get("val", 0)
    return TimeSaved(sum(r["fit_seconds"] for r in ok), passes, images, float(rate))


@dataclass
class DemoResult:
    data: str
    extraction: ExtractSummary
    comparison: CompareResult
    predictions: list[dict]
    saved: TimeSaved | None
    report: str
    seconds: float

    @property
    def best(self) -> dict:
        return next(r for r in self.comparison.rows if r.get("winner"))

    def to_json(self) -> dict:
        return {
            "data": self.data,
            "images": sum(self.extraction.splits.values()),
            "images_extracted": self.extraction.images_extracted,
            "extract_seconds": round(self.extraction.extract_seconds, 2),
            "leaderboard": [{k: r.get(k) for k in ("rank", "head", "status", "cv_accuracy",
                                                   "val_accuracy", "fit_seconds", "epochs_run")}
                            for r in self.comparison.rows],
            "best_head": self.comparison.winner,
            "best_val_accuracy": self.best.get("val_accuracy"),
            "time_saved": self.saved.to_json() if self.saved else None,
            "predictions": self.predictions,
            "report": self.report,
            "cache": self.extraction.cache,
            "winner_dir": self.comparison.winner_dir,
            "seconds": round(self.seconds, 2),
            "extract": self.extraction.to_json(),
            "compare": self.comparison.to_json(),
        }


def _sample_images(cache_path: str, n: int) -> list[tuple[str, str]]:
    """(path, true class) of `n` validation images of different classes (the first of each)."""
    from .cache import FeatureCache

    cache = FeatureCache(cache_path)
    split = "val" if "val" in cache.splits else next(iter(cache.splits))
    paths, labels = cache.index(split)  # the file list only: no features read
    root = cache.manifest["source"]["root"]
    chosen, seen = [], set()
    for path, label in zip(paths, labels):
        if int(label) not in seen:
            seen.add(int(label))
            chosen.append((os.path.join(root, path), cache.class_names[int(label)]))
        if len(chosen) == n:
            break
    return chosen


def run_demo(out: str = "featcache-demo", data: str | None = None, backbone: str = "mobilenet",
             heads: tuple[str, ...] = DEMO_HEADS, weights_dir: str | None = None,
             progress: bool | None = None, seed: int = 0) -> DemoResult:
    """Extract into `<out>/cache`, compare `heads` into `<out>/compare`, write `<out>/report.html`.

    Args:
        data: a folder of class folders (default: the shipped sample); without
            a val split folder, 20 % of the images become validation, by content hash.
    """
    from .dataset import load_dataset
    from .prediction import predict_images

    started = time.perf_counter()
    data = os.path.abspath(data) if data else sample_data_dir()
    has_val = "val" in load_dataset(data).split_counts()
    extraction = extract(ExtractOptions(
        data=data, out=os.path.join(out, "cache"), backbone=backbone, weights_dir=weights_dir,
        progress=progress, val_fraction=0.0 if has_val else 0.2, seed=seed))
    comparison = compare_heads(extraction.cache, heads=list(heads), out=os.path.join(out, "compare"),
                               progress=progress, seed=seed)
    samples = _sample_images(extraction.cache, SAMPLE_PREDICTIONS)
    predictions = predict_images(comparison.winner_dir, [p for p, _ in samples], top_k=3,
                                 weights_dir=weights_dir)
    for row, (_, truth) in zip(predictions, samples):
        row["true_label"] = truth
    saved = time_saved(comparison, extraction)
    result = DemoResult(data, extraction, comparison, predictions, saved, "", 0.0)
    result.seconds = time.perf_counter() - started
    result.report = write_report(result, os.path.join(out, REPORT_FILE))
    return result


def write_report(result: DemoResult, path: str) -> str:
    """The demo's self-contained HTML page: leaderboard, chart, confusion matrix, predictions."""
    from .html_report import Page
    from .selection import LEADERBOARD_PNG

    ex, cmp_ = result.extraction, result.comparison
    best = result.best
    page = Page("featcache demo",
                f"{ex.backbone} features of {sum(ex.splits.values())} images from {result.data}, "
                f"extracted once; {len(cmp_.rows)} heads compared on them")
    facts = [("backbone", f"{ex.backbone} {list(ex.feature_shape)} ({ex.runtime}, {ex.precision})"),
             ("images", ", ".join(f"{s} {n}" for s, n in ex.splits.items())),
             ("extraction", f"{ex.images_extracted} images in {ex.extract_seconds:.1f} s"
                            + ("" if ex.images_extracted else " (the cache was already complete)")),
             ("comparison", f"{cmp_.seconds:.1f} s, {cmp_.folds}-fold CV on train"),
             ("winner", f"{cmp_.winner}: {best.get('val_accuracy', 0):.4f} validation accuracy")]
    if result.saved:
        s = result.saved
        facts.append(("time saved (estimate)",
                      f"heads trained in {s.heads_seconds:.1f} s on cached features; with the "
                      f"frozen base inside model.fit the same {s.passes} passes over {s.images} "
                      f"images would take about {s.in_fit_seconds:.0f} s at "
                      f"{s.backbone_images_per_second:.0f} img/s"))
    facts.append(("total", f"{result.seconds:.1f} s"))
    page.facts(facts)
    page.heading("Leaderboard")
    page.paragraph("Heads are ranked by out-of-fold accuracy on the training split; the "
                   "validation split scores each once and never chooses.", note=True)
    columns = [("rank", "#"), ("head", "head"), ("cv_accuracy", "cv accuracy"),
               ("val_accuracy", "val accuracy"), ("val_macro_f1", "val macro F1"),
               ("fit_seconds", "fit s"), ("epochs_run", "epochs")]
    ok = [dict(r, epochs_run=r.get("epochs_run") or None) for r in cmp_.rows if r["status"] == "ok"]
    page.table(ok, columns, highlight=0, table_id="leaderboard")
    chart = os.path.join(cmp_.out, LEADERBOARD_PNG)
    if os.path.isfile(chart):
        page.figure(chart, "Validation accuracy against fit seconds; the winner is circled.")
    matrix = os.path.join(cmp_.winner_dir, "confusion_matrix.png")
    if os.path.isfile(matrix):
        page.heading(f"Confusion matrix of {cmp_.winner}")
        page.figure(matrix, "Rows: true class; columns: predicted (validation split).")
    page.heading("Predictions of the winner")
    items = []
    for row in result.predictions:
        if "error" in row:
            continue
        lines = [os.path.relpath(row["path"], result.data), f"true: {row['true_label']}"] + [f"{t['label']} {t['score']:.2f}" for t in row["top_k"]]
        items.append((row["path"], lines))
    page.gallery(items)
    page.paragraph(f"Next: featcache predict --model {cmp_.winner_dir} YOUR_IMAGES", note=True)
    return page.write(path)
