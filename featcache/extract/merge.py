"""Join the slices of a sliced extraction into one cache (`featcache merge CACHE`).

An extraction with `num_slices=K, slice_index=I` (run K times,
anywhere: a Slurm array, Kubernetes jobs) writes slice I to
`CACHE/parts/slice-I-of-K/`: every K-th shard task of the same deterministic
plan, and a `slice.json` naming the whole plan. Merging checks that all K
slices finished with the same fingerprint and plan, links (or copies, across
filesystems) their shards into `CACHE/shards/` and writes the one manifest.
The result equals a single run of the same command without slices.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass

from ..cache import (
    PARTS_DIR,
    SHARDS_DIR,
    SLICE_MANIFEST,
    CacheLock,
    init_identity,
    manifest_shards,
    new_manifest,
    read_manifest,
    remove_stale_temporaries,
    remove_unplanned_shards,
    write_manifest,
)
from ..errors import CacheError
from ..fileio import TMP_MARKER, fsync_dir

_SLICE_DIR = re.compile(r"^slice-(\d+)-of-(\d+)$")


@dataclass
class MergeSummary:
    cache: str
    slices: int
    shards: int
    splits: dict[str, int]
    linked: int
    copied: int
    parts_removed: bool

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _read_slices(cache: str) -> dict[int, dict]:
    parts = os.path.join(cache, PARTS_DIR)
    found = sorted(n for n in (os.listdir(parts) if os.path.isdir(parts) else [])
                   if _SLICE_DIR.match(n))
    if not found:
        raise CacheError(
            f"{cache}: no slices to merge in {PARTS_DIR}/. Run featcache extract --out {cache} "
            "--num-slices K --slice-index I for every I first.")
    counts = {int(_SLICE_DIR.match(n).group(2)) for n in found}
    if len(counts) != 1:
        raise CacheError(
            f"{cache}/{PARTS_DIR} holds slices of different --num-slices ({sorted(counts)}); "
            "remove the folders of the runs you do not want and merge again.")
    count = counts.pop()
    slices: dict[int, dict] = {}
    unfinished = []
    for name in found:
        index = int(_SLICE_DIR.match(name).group(1))
        path = os.path.join(parts, name, SLICE_MANIFEST)
        if not os.path.isfile(path):
            unfinished.append(index)
            continue
        manifest = read_manifest(path)
        manifest["_folder"] = os.path.join(parts, name)
        slices[index] = manifest
    missing = sorted(set(range(count)) - set(slices) - set(unfinished))
    if missing or unfinished:
        parts_text = []
        if missing:
            parts_text.append(f"slice(s) {', '.join(map(str, missing))} never ran")
        if unfinished:
            parts_text.append(f"slice(s) {', '.join(map(str, sorted(unfinished)))} did not finish")
        raise CacheError(
            f"{cache}: cannot merge {count} slices: {'; '.join(parts_text)}. Run (or rerun) "
            "featcache extract with the same flags and --slice-index I for each, then merge again.")
    return slices


def _check_same_plan(cache: str, slices: dict[int, dict]) -> dict:
    first = slices[0]
    for index, manifest in sorted(slices.items()):
        if manifest["fingerprint_hash"] != first["fingerprint_hash"]:
            raise CacheError(
                f"{cache}: slice {index} was extracted with other settings than slice 0 "
                "(fingerprints differ; compare their slice.json). Rerun it with the same flags.")
        if manifest["slice"]["plan"] != first["slice"]["plan"]:
            raise CacheError(
                f"{cache}: slice {index} planned other shards than slice 0 (the image list or "
                "--shard-size changed between runs). Rerun the slices on the same data.")
    return first


def _place(src: str, dst: str) -> str:
    """Hard-link src to dst (copy across filesystems), atomically; returns how."""
    if os.path.exists(dst) and os.path.getsize(dst) == os.path.getsize(src):
        return "kept"
    tmp = f"{dst}{TMP_MARKER}{os.getpid()}"
    try:
        os.link(src, tmp)
        how = "linked"
    except OSError:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        how = "copied"
    os.replace(tmp, dst)
    return how


def merge_slices(cache: str, remove_parts: bool = False) -> MergeSummary:
    """Merge `cache/parts/slice-*-of-K` into the cache `cache`.

    Raises:
        CacheError: no slices, missing or unfinished ones, or slices that do not agree.
    """
    cache = os.path.abspath(cache)
    slices = _read_slices(cache)
    first = _check_same_plan(cache, slices)
    plan = first["slice"]["plan"]
    entries = {}
    for manifest in slices.values():
        for shard in manifest_shards(manifest):
            entries[shard.file] = (manifest["_folder"], shard)
    lost = [f for f in plan if f not in entries]
    if lost:
        raise CacheError(f"{cache}: the slices hold {len(plan) - len(lost)} of {len(plan)} planned "
                         f"shards (missing {lost[0]}); rerun the slices and merge again.")
    how = {"linked": 0, "copied": 0, "kept": 0}
    with CacheLock(cache):
        init_identity(cache, first["fingerprint"], first["fingerprint_hash"])
        remove_stale_temporaries(cache)
        os.makedirs(os.path.join(cache, SHARDS_DIR), exist_ok=True)
        shards = []
        for relpath in plan:
            folder, shard = entries[relpath]
            src = os.path.join(folder, relpath)
            if not os.path.isfile(src) or os.path.getsize(src) != shard.bytes:
                raise CacheError(f"{src}: missing or changed since its slice finished; rerun that "
                                 "slice and merge again.")
            how[_place(src, os.path.join(cache, relpath))] += 1
            shards.append(shard)
        fsync_dir(os.path.join(cache, SHARDS_DIR))
        manifest = new_manifest(
            fingerprint=first["fingerprint"], fingerprint_hash=first["fingerprint_hash"],
            class_names=first["class_names"], shards=shards, source=first["source"],
            weights=first.get("weights", {}), extraction=first.get("extraction", {}),
            ignored=first.get("ignored", []), warnings=first.get("warnings", []),
            merged_from={"slices": len(slices)})
        write_manifest(cache, manifest)
        remove_unplanned_shards(cache, set(plan))
        if remove_parts:
            shutil.rmtree(os.path.join(cache, PARTS_DIR))
    return MergeSummary(cache, len(slices), len(shards),
                        {s: v["rows"] for s, v in manifest["splits"].items()}, how["linked"],
                        how["copied"], remove_parts)
