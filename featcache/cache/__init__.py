"""The feature cache on disk: the only code that knows its layout or opens HDF5 files.

- `layout`: file and folder names inside a cache, and tidying them.
- `shards`: writing one shard crash-safely, describing, checking and reading it.
- `manifest`: the identity file and the manifest (one writer for everyone).
- `lock`: one writer per cache folder.
- `reader`: `FeatureCache`, `load_features` and row-range reads of a split.
"""

from .layout import (
    IDENTITY_FILE,
    INPUTS_DIR,
    INT8_DIR,
    MANIFEST_FILE,
    PARTS_DIR,
    SHARDS_DIR,
    SLICE_MANIFEST,
    remove_if_unused,
    remove_stale_temporaries,
    remove_unplanned_shards,
    shard_files,
    shard_relpath,
    slice_folder,
    temporary_files,
)
from .lock import CacheLock
from .manifest import (
    init_identity,
    manifest_shards,
    new_manifest,
    previous_manifest,
    read_manifest,
    recorded_fingerprint,
    split_counts,
    stored_fingerprint,
    write_manifest,
)
from .reader import Features, FeatureCache, SplitReader, load_features
from .shards import ShardInfo, ShardReader, ShardWriter, check_shard, read_hashes, read_shard_info, write_failed

__all__ = [
    "IDENTITY_FILE", "INPUTS_DIR", "INT8_DIR", "MANIFEST_FILE", "PARTS_DIR", "SHARDS_DIR", "SLICE_MANIFEST", "CacheLock",
    "FeatureCache", "Features", "ShardInfo", "ShardReader", "ShardWriter", "SplitReader",
    "check_shard", "init_identity", "load_features", "manifest_shards", "new_manifest", "recorded_fingerprint",
    "previous_manifest", "read_hashes", "read_manifest", "read_shard_info", "remove_if_unused",
    "remove_stale_temporaries", "remove_unplanned_shards", "shard_files", "shard_relpath",
    "slice_folder", "split_counts", "stored_fingerprint", "temporary_files", "write_failed", "write_manifest",
]
