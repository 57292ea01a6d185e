"""`featcache audit`: leaks, duplicates, likely label errors and outliers, from cached features.

Nothing here runs a backbone: the cache's feature vectors (one per image;
augmented views left out) and its stored sha256s answer every question.

- `vectors`: the cache as unit vectors, all splits stacked.
- `duplicates`: exact (same bytes) and near (cosine similarity) duplicates,
  across splits first (leaks), then inside each split.
- `label_issues`: self-confidence from out-of-fold linear-head probabilities.
- `outliers`: distance to the k-th nearest training image.
- `page`: the HTML report (thumbnails side by side), the JSON and CSV files.

`audit_cache` runs all of it and returns an `AuditResult`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..cache import FeatureCache
from ..errors import UsageError
from .duplicates import (
    NEAR_THRESHOLD,
    NEIGHBOURS,
    exact_groups,
    near_across_splits,
    near_within_splits,
)
from .kinds import KIND_TITLES, KINDS
from .label_issues import FOLDS, nearest_of_class, score_labels
from .outliers import K, score_outliers
from .vectors import AuditRows, load_rows

TOP = 20


@dataclass
class AuditResult:
    """What `audit_cache` found; `to_json` is `featcache audit --json`.

    Attributes:
        findings: every finding, in `KINDS` order, each most suspicious first;
            a finding is a dict with `kind`, `score` and `images` (path,
            split, label of each image involved; the flagged image first
            where there is one).
        counts: findings per kind.
        label_ranking: every training-split image ranked by self-confidence
            (lowest first), or None when the label check did not run.
        notes: checks that were skipped and why.
    """

    cache: str
    out: str | None
    images: dict[str, int]
    threshold: float
    findings: list[dict]
    counts: dict[str, int]
    label_ranking: list[dict] | None
    seconds: float
    settings: dict
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def top(self, kind: str, n: int = TOP) -> list[dict]:
        return [f for f in self.findings if f["kind"] == kind][:n]

    def to_json(self, top: int | None = TOP) -> dict:
        shown = [{k: v for k, v in f.items() if k != "rows"}
                 for kind in KINDS for f in self.top(kind, top or len(self.findings))]
        return {"cache": self.cache, "out": self.out, "images": self.images,
                "threshold": self.threshold, "counts": self.counts,
                "seconds": round(self.seconds, 2), "settings": self.settings, "notes": self.notes,
                "findings": shown, "files": self.files}


def _pairs(rows: AuditRows, kind: str, found) -> list[dict]:
    return [{"kind": kind, "score": round(sim, 4), "similarity": round(sim, 4),
             "images": [rows.describe(a), rows.describe(b)], "rows": [a, b]}
            for sim, a, b in found]


def _groups(rows: AuditRows, kind: str, groups) -> list[dict]:
    ordered = sorted(groups, key=lambda g: (-len(g), rows.paths[g[0]]))
    return [{"kind": kind, "score": 1.0, "similarity": 1.0, "copies": len(g),
             "images": [rows.describe(i) for i in g], "rows": list(map(int, g))} for g in ordered]


def _label_findings(rows: AuditRows, train_split: str, folds: int, seed: int, notes):
    try:
        scores = score_labels(rows, train_split, folds=folds, seed=seed)
    except UsageError as exc:
        notes.append(f"label check skipped: {exc.cli_message()}")
        return [], None, None
    train = rows.rows_of(train_split)
    order = np.argsort(scores.self_confidence, kind="stable")
    findings = []
    for i in order:
        if scores.preferred_probability[i] <= scores.self_confidence[i]:
            continue  # the head agrees with the label
        preferred = int(scores.preferred[i])
        example = nearest_of_class(rows, int(i), preferred, train)
        images = [rows.describe(i)] + ([rows.describe(example)] if example is not None else [])
        findings.append({
            "kind": "label-issue", "score": round(float(scores.self_confidence[i]), 4),
            "self_confidence": round(float(scores.self_confidence[i]), 4),
            "suggested": rows.class_names[preferred],
            "suggested_probability": round(float(scores.preferred_probability[i]), 4),
            "images": images, "rows": [int(i)] + ([example] if example is not None else [])})
    ranking = [{"rank": r + 1, **rows.describe(i),
                "self_confidence": round(float(scores.self_confidence[i]), 6),
                "suggested": rows.class_names[int(scores.preferred[i])],
                "suggested_probability": round(float(scores.preferred_probability[i]), 6)}
               for r, i in enumerate(i for i in order if rows.splits[i] == train_split)]
    return findings, ranking, scores.folds


def _outlier_findings(rows: AuditRows, train_split: str, k: int) -> tuple[list[dict], float]:
    scores = score_outliers(rows, train_split, k=k)
    flagged = np.flatnonzero(scores.scores > scores.cutoff)
    flagged = flagged[np.argsort(-scores.scores[flagged], kind="stable")]
    return [{"kind": "outlier", "score": round(float(scores.scores[i]), 4),
             "nearest_class": rows.class_names[int(scores.nearest_class[i])],
             "images": [rows.describe(i)], "rows": [int(i)]} for i in flagged], scores.cutoff


def audit_cache(cache: str, out: str | None = None, top: int = TOP,
                threshold: float = NEAR_THRESHOLD, folds: int = FOLDS, neighbors: int = K,
                train_split: str = "train", seed: int = 0, progress: bool | None = None) -> AuditResult:
    """Audit the cache at `cache`; with `out`, write report.html, audit.json and CSVs there.

    Args:
        top: findings of each kind listed in the report and the JSON (the CSV
            files hold every one).
        threshold: cosine similarity from which two different files count as
            near duplicates.
        folds: folds of the training split for the out-of-fold label check.
        neighbors: k of the outlier score (distance to the k-th training image).
        train_split: the split the label check and the outlier score learn from.

    Raises:
        CacheError: no finished cache at `cache`.
        UsageError: a bad setting, or a cache without `train_split`.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    if not 0.0 < float(threshold) <= 1.0:
        raise UsageError(f"{{param:threshold}} {threshold}: a cosine similarity in (0, 1].")
    if int(top) < 1:
        raise UsageError(f"{{param:top}} {top}: must be at least 1.")
    if int(folds) < 2:
        raise UsageError(f"{{param:folds}} {folds}: the label check needs at least 2 folds.")
    if int(neighbors) < 1:
        raise UsageError(f"{{param:neighbors}} {neighbors}: must be at least 1.")
    store = FeatureCache(cache)
    if train_split not in store.splits:
        raise UsageError(f"{{param:train_split}} {train_split}: the cache has no such split "
                         f"(it has {', '.join(store.splits)}).")
    if out is not None:
        from .page import prepare_audit_folder

        out = prepare_audit_folder(out)
    rows = load_rows(store)
    notes: list[str] = []
    steps = tqdm(total=4, desc="audit", unit="check", disable=(None if progress is None else not progress))
    across, within = exact_groups(rows)
    findings = _groups(rows, "cross-split-exact", across)
    findings += _pairs(rows, "cross-split-near", near_across_splits(rows, threshold))
    steps.update()
    findings += _groups(rows, "exact-duplicate", within)
    findings += _pairs(rows, "near-duplicate", near_within_splits(rows, threshold, NEIGHBOURS))
    steps.update()
    label_folds = None
    ranking = None
    if store.multi_label:
        notes.append("label check skipped: it ranks single labels, and this cache is multi-label.")
    else:
        labelled, ranking, label_folds = _label_findings(rows, train_split, folds, seed, notes)
        findings += labelled
    steps.update()
    outliers, cutoff = _outlier_findings(rows, train_split, neighbors)
    findings += outliers
    steps.update()
    steps.close()
    counts = {kind: sum(f["kind"] == kind for f in findings) for kind in KINDS}
    settings = {"threshold": float(threshold), "top": int(top), "folds": label_folds,
                "neighbors": int(neighbors), "outlier_cutoff": round(float(cutoff), 4),
                "train_split": train_split, "seed": int(seed), "label_head": "logreg",
                "backbone": store.fingerprint.get("backbone", "fused"),
                "feature_shape": list(store.feature_shape)}
    result = AuditResult(
        cache=store.path, out=out, images={s: int((rows.splits == s).sum()) for s in store.splits},
        threshold=float(threshold), findings=findings, counts=counts, label_ranking=ranking,
        seconds=0.0, settings=settings, notes=notes)
    result.seconds = time.perf_counter() - started
    if out is not None:
        from .page import write_audit

        result.files = write_audit(result, rows, out, top)
    return result


__all__ = ["AuditResult", "KIND_TITLES", "KINDS", "NEAR_THRESHOLD", "audit_cache"]
