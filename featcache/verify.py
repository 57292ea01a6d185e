"""`featcache verify`: re-read a cache, find damage, and optionally repair it.

Every shard the manifest names is read again in full and checked against the
manifest (sha256, size, row count) and against the cache's fingerprint.
Shard files the manifest does not name and temporaries left by killed
writers are reported as notes: readers never see them.

`repair` re-extracts only the damaged shards, from the images the manifest's
source names, with the backbone rebuilt from the fingerprint; the extraction
refuses (naming what differs) if that backbone or the image list is no longer
the same, so a repaired cache equals the original one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import CacheError, DataError
from .store import MANIFEST_FILE, SHARDS_DIR, FeatureCache, check_shard
from .fileio import TMP_MARKER


@dataclass
class VerifyReport:
    """What `verify` found; `to_json` is the CLI's --json output."""

    cache: str
    shards: int
    rows: int
    damaged: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No damage left (none found, or all of it repaired)."""
        return not self.damaged or set(self.repaired) >= {d["file"] for d in self.damaged}

    def to_json(self) -> dict:
        return {"cache": self.cache, "ok": self.ok, "shards": self.shards, "rows": self.rows,
                "damaged": self.damaged, "repaired": self.repaired, "notes": self.notes}


def check_cache(path: str) -> VerifyReport:
    """Re-read every shard of a finished cache and report what is wrong.

    Raises:
        CacheError: no cache, or no readable manifest, at `path`.
    """
    cache = FeatureCache(path)
    manifest = cache.manifest
    report = VerifyReport(cache.path, len(manifest["shards"]),
                          sum(s["rows"] for s in manifest["shards"]))
    for entry in manifest["shards"]:
        problems = check_shard(cache.path, entry, cache.fingerprint_hash)
        if problems:
            report.damaged.append({"file": entry["file"], "split": entry["split"],
                                   "rows": entry["rows"], "problems": problems})
    for split, info in manifest["splits"].items():
        rows = sum(s["rows"] for s in manifest["shards"] if s["split"] == split)
        if rows != info["rows"]:
            report.damaged.append({"file": MANIFEST_FILE, "split": split, "rows": info["rows"],
                                   "problems": [f"split {split} counts {info['rows']} rows, "
                                                f"its shards hold {rows}"]})
    named = {s["file"] for s in manifest["shards"]}
    folder = os.path.join(cache.path, SHARDS_DIR)
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        rel = f"{SHARDS_DIR}/{name}"
        if TMP_MARKER in name:
            report.notes.append(f"{rel}: unfinished temporary file (a killed writer's); never read, "
                                "removed by the next extract")
        elif rel not in named:
            report.notes.append(f"{rel}: not in the manifest; never read, removed by the next extract")
    return report


def _options_from_manifest(cache: FeatureCache, weights_dir: str | None, weights: str | None):
    from .extract import ExtractOptions

    manifest, fp = cache.manifest, cache.fingerprint
    source = manifest["source"]
    recorded = manifest.get("weights", {})
    if weights is None:
        weights = {"none": "none", "file": recorded.get("path") or ""}.get(recorded.get("source"),
                                                                         "imagenet")
    extraction = manifest.get("extraction", {})
    return ExtractOptions(
        data=source["data"], out=cache.path, backbone=fp["backbone"], image_size=fp["input_size"][0],
        layer=fp["layer"], pooling=fp["pooling"], weights=weights, weights_dir=weights_dir,
        batch_size=extraction.get("batch_size", 32), dtype=fp["dtype"],
        val_fraction=source.get("val_split", 0.0), test_fraction=source.get("test_split", 0.0),
        root=source["root"] if source.get("layout") == "list" else None,
        # the plan check in repair_cache refuses any list that is not what it was
        allow_outside_root=source.get("layout") == "list",
        shard_size=extraction.get("shard_size", 1024), resize=fp["resize"]["method"],
        aspect=fp["resize"]["aspect"], seed=fp["weights"].get("random_seed", 0), progress=False)


def repair_cache(report: VerifyReport, weights_dir: str | None = None,
                 weights: str | None = None) -> VerifyReport:
    """Re-extract the damaged shards of `report.cache`; the others stay untouched.

    Raises:
        CacheError: the images are gone or changed, or the backbone cannot be
            rebuilt identically (FingerprintMismatchError names what differs).
    """
    from .dataset import load_dataset
    from .extract import extract, plan_shards

    damaged = sorted({d["file"] for d in report.damaged})
    if not damaged:
        return report
    cache = FeatureCache(report.cache)
    options = _options_from_manifest(cache, weights_dir, weights)
    if not os.path.exists(options.data):
        raise CacheError(f"{report.cache}: cannot repair: the images' source {options.data} is gone. "
                         "Restore it, or rebuild the cache with featcache extract.")
    try:
        dataset = load_dataset(options.data, options.val_fraction, options.test_fraction, options.root,
                               options.allow_outside_root)
    except DataError as exc:
        raise CacheError(f"{report.cache}: cannot repair: {exc}") from None
    planned = {t.relpath for t in plan_shards(dataset, cache.fingerprint_hash, options.shard_size)}
    named = {s["file"] for s in cache.manifest["shards"]}
    if dataset.class_names != cache.class_names or planned != named:
        raise CacheError(
            f"{report.cache}: cannot repair: the images under {options.data} changed since "
            "extraction, so damaged shards cannot be rebuilt as they were. Run featcache extract "
            "with the same options to bring the cache up to date.")
    extract(options, rebuild=tuple(f for f in damaged if f != MANIFEST_FILE))
    after = check_cache(report.cache)
    report.repaired = [f for f in damaged if f not in {d["file"] for d in after.damaged}]
    return report


def verify(path: str, repair: bool = False, weights_dir: str | None = None,
           weights: str | None = None) -> VerifyReport:
    """Check a cache, and with `repair` re-extract what is damaged."""
    report = check_cache(path)
    if repair and report.damaged:
        repair_cache(report, weights_dir, weights)
    return report
