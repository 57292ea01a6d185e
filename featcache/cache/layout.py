"""Where things live inside a cache folder, and tidying it.

Layout of a cache folder::

    cache.json                  identity: the fingerprint, fixed at creation
    manifest.json               the last complete state (atomically replaced)
    lock                        held by the one process writing the cache
    shards/<split>-<index:05d>-<plan>.h5
    parts/slice-<I>-of-<K>/     slices of a sliced extraction, until merged
                                (each a cache folder with slice.json instead of
                                manifest.json)
"""

from __future__ import annotations

import os

from ..fileio import TMP_MARKER

IDENTITY_FILE = "cache.json"
MANIFEST_FILE = "manifest.json"
SLICE_MANIFEST = "slice.json"
LOCK_FILE = "lock"
SHARDS_DIR = "shards"
PARTS_DIR = "parts"
INT8_DIR = "int8"  # precision int8: the quantized feature models (quantize.py), one per calibration
INPUTS_DIR = "inputs"  # images given in memory, written as PNG files (in_memory.py)


def shard_relpath(split: str, index: int, plan_hash: str) -> str:
    """A shard's path inside the cache; the plan hash renames it when its rows change."""
    return f"{SHARDS_DIR}/{split}-{index:05d}-{plan_hash[:12]}.h5"


def slice_folder(cache_dir: str, index: int, count: int) -> str:
    """Where slice `index` of `count` writes its shards, inside the final cache folder."""
    return os.path.join(cache_dir, PARTS_DIR, f"slice-{index:05d}-of-{count:05d}")


def shard_files(cache_dir: str) -> list[str]:
    """Finished shard files in the folder (relative paths), temporaries excluded."""
    folder = os.path.join(cache_dir, SHARDS_DIR)
    if not os.path.isdir(folder):
        return []
    return sorted(f"{SHARDS_DIR}/{n}" for n in os.listdir(folder)
                  if n.endswith(".h5") and TMP_MARKER not in n)


def temporary_files(cache_dir: str) -> list[str]:
    """Temporary files left by killed writers (relative paths)."""
    found = []
    for sub in ("", SHARDS_DIR):
        folder = os.path.join(cache_dir, sub)
        if os.path.isdir(folder):
            found += [os.path.join(sub, n) if sub else n for n in sorted(os.listdir(folder))
                      if TMP_MARKER in n]
    return found


def remove_stale_temporaries(cache_dir: str) -> int:
    """Delete temporary files left by killed writers (call with the lock held)."""
    found = temporary_files(cache_dir)
    for rel in found:
        os.remove(os.path.join(cache_dir, rel))
    return len(found)


def remove_unplanned_shards(cache_dir: str, planned: set[str]) -> None:
    """Delete finished shards no plan names any more (call with the lock held)."""
    for rel in shard_files(cache_dir):
        if rel not in planned:
            os.remove(os.path.join(cache_dir, rel))


def has_rows(cache_dir: str) -> bool:
    """Whether a manifest or any finished shard exists in the cache folder."""
    return os.path.exists(os.path.join(cache_dir, MANIFEST_FILE)) or bool(shard_files(cache_dir))


def remove_if_unused(cache_dir: str) -> None:
    """Remove a cache folder this run created if it holds nothing but its lock."""
    for sub in (SHARDS_DIR, INT8_DIR):
        if sub == INT8_DIR and not has_rows(cache_dir):  # a quantized model without rows
            import shutil

            shutil.rmtree(os.path.join(cache_dir, sub), ignore_errors=True)
        elif os.path.isdir(os.path.join(cache_dir, sub)) and not os.listdir(os.path.join(cache_dir, sub)):
            os.rmdir(os.path.join(cache_dir, sub))
    leftover = set(os.listdir(cache_dir)) - {LOCK_FILE, IDENTITY_FILE}
    if not leftover and not has_rows(cache_dir):
        for name in (LOCK_FILE, IDENTITY_FILE):
            if os.path.exists(os.path.join(cache_dir, name)):
                os.remove(os.path.join(cache_dir, name))
        os.rmdir(cache_dir)
