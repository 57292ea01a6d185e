"""The cache's two JSON files: its identity (cache.json) and its manifest.

`cache.json` fixes the fingerprint when a cache is created; every later
writer checks it. `manifest.json` is the last complete state: fingerprint,
class names, per-split counts, every shard with its checksum, and what the
source held. This module is the manifest's only writer: extraction, merging,
fusion and repair all build it with `new_manifest` and write it with
`write_manifest` (atomically: readers see the old or the new state, whole).
"""

from __future__ import annotations

import os
import time

from .._version import __version__
from ..errors import CacheError
from ..fileio import read_json, write_json_atomic
from ..fingerprint import FORMAT_VERSION, check_same
from .layout import IDENTITY_FILE, INPUTS_DIR, INT8_DIR, LOCK_FILE, MANIFEST_FILE, PARTS_DIR, SHARDS_DIR, has_rows
from .shards import ShardInfo, write_failed


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def split_counts(shards: list[ShardInfo]) -> dict[str, dict]:
    """Per split: rows, skipped files and shards, in the shards' order."""
    splits: dict[str, dict] = {}
    for info in shards:
        entry = splits.setdefault(info.split, {"rows": 0, "skipped": 0, "shards": 0})
        entry["rows"] += info.rows
        entry["skipped"] += len(info.skipped)
        entry["shards"] += 1
    return splits


def new_manifest(*, fingerprint: dict, fingerprint_hash: str, class_names: list[str],
                 shards: list[ShardInfo], source: dict, weights: dict, extraction: dict,
                 ignored: list[dict] = (), warnings: list[str] = (), status: str = "complete",
                 **extra) -> dict:
    """The manifest of a cache holding `shards` (in their stable order).

    Args:
        extra: further top-level entries (a slice's plan, what a merge joined).
    """
    return {
        "featcache_format": FORMAT_VERSION,
        "featcache_version": __version__,
        "status": status,
        "updated": _now(),
        "fingerprint_hash": fingerprint_hash,
        "fingerprint": fingerprint,
        "class_names": list(class_names),
        "splits": split_counts(shards),
        "source": source,
        "weights": weights,
        "extraction": extraction,
        "shards": [info.to_manifest() for info in shards],
        "ignored": list(ignored),
        "warnings": list(warnings),
        **extra,
    }


def manifest_shards(manifest: dict) -> list[ShardInfo]:
    """The shards a manifest (or a slice's manifest) names, in its order."""
    return [ShardInfo.from_manifest(entry) for entry in manifest.get("shards", [])]


def write_manifest(cache_dir: str, manifest: dict, name: str = MANIFEST_FILE) -> None:
    """Atomically replace the manifest (or a slice's `slice.json`).

    Raises:
        CacheError: it could not be written (the previous one is kept).
    """
    path = os.path.join(cache_dir, name)
    try:
        write_json_atomic(path, manifest)
    except OSError as exc:
        raise write_failed(path, exc) from None


def read_manifest(path: str) -> dict:
    """A manifest file's contents.

    Raises:
        CacheError: unreadable.
    """
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable manifest ({exc}).") from exc


def previous_manifest(cache_dir: str) -> dict:
    """The manifest already in the folder, or {} when there is none or it is unreadable."""
    path = os.path.join(cache_dir, MANIFEST_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


def recorded_fingerprint(cache_dir: str) -> dict:
    """The fingerprint the folder's cache was started with, or {} (no cache, unreadable)."""
    for name in (IDENTITY_FILE, MANIFEST_FILE):
        try:
            found = read_json(os.path.join(cache_dir, name)).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(found, dict):
            return found
    return {}


def stored_fingerprint(cache_dir: str) -> dict | None:
    """The fingerprint of the features already in the folder; None when it holds none."""
    path = os.path.join(cache_dir, IDENTITY_FILE)
    if not (os.path.isfile(path) and has_rows(cache_dir)):
        return None
    try:
        return read_json(path).get("fingerprint")
    except (OSError, ValueError):
        return None  # init_identity says what is wrong with it


def init_identity(cache_dir: str, fingerprint: dict, fingerprint_hash: str) -> bool:
    """Create the cache's identity file, or check an existing one matches.

    Returns:
        True if the cache is new.

    Raises:
        FingerprintMismatchError: the cache was made with other settings.
        CacheError: the folder holds something that is not a featcache cache.
    """
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, IDENTITY_FILE)
    if os.path.exists(path):
        try:
            stored = read_json(path)
        except (OSError, ValueError) as exc:
            raise CacheError(f"{path}: unreadable cache identity ({exc}).") from exc
        if has_rows(cache_dir) or stored.get("fingerprint_hash") == fingerprint_hash:
            check_same(stored.get("fingerprint", {}), fingerprint, f"cache {cache_dir}",
                       "Use another {param:out} for these settings, or delete the cache to "
                       "rebuild it.")
            return False
        os.remove(path)  # an earlier run stopped before writing any features: nothing to mix
    others = [n for n in os.listdir(cache_dir) if n not in (LOCK_FILE, SHARDS_DIR, PARTS_DIR, INT8_DIR,
                                                               INPUTS_DIR)]
    if others:
        raise CacheError(
            f"{{param:out}} {cache_dir}: folder is not empty and is not a featcache cache "
            f"(found {', '.join(sorted(others)[:3])}). Choose an empty or new folder."
        )
    write_json_atomic(path, {
        "featcache_cache": FORMAT_VERSION,
        "created": _now(),
        "fingerprint_hash": fingerprint_hash,
        "fingerprint": fingerprint,
    })
    return True
