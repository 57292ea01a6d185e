"""Write a cache's features as one Parquet or .npz file, readable without featcache
(`featcache export-features`).

One row per cached row: path (relative to the data root), label (the class
name; a multi-label cache's label set, "daisy;white"), split, view (0 for the
image itself, 1.. for cached augmented views), sha256 of the image file, and
the feature vector (flattened; the file records the shape of one row).

* Parquet (pyarrow): columns path, label, split, view, sha256 and features, a
  fixed-size list of float32; the schema metadata holds `featcache` (JSON:
  feature shape, class names, fingerprint hash, backbone).
* npz (numpy): arrays path, label, split, view, sha256 (strings and ints) and
  features (rows, *feature shape) as float32, plus metadata (a JSON string).

Splits are written one after the other, so memory holds one split at a time
for Parquet (row groups) and the whole selection for npz.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from .cache import FeatureCache
from .errors import UsageError, param

FORMATS = ("parquet", "npz")


@dataclass
class FeatureExport:
    """What `export_features` wrote; `to_json` is the command's --json output."""

    out: str
    format: str
    rows: int
    splits: dict[str, int]
    feature_shape: tuple[int, ...]
    bytes: int

    def to_json(self) -> dict:
        return {"out": self.out, "format": self.format, "rows": self.rows, "splits": self.splits,
                "feature_shape": list(self.feature_shape), "bytes": self.bytes}


def export_features(cache_path: str, out: str, format: str | None = None,
                    splits: list[str] | None = None) -> FeatureExport:
    """Write the features of `splits` (default: all) of a cache to `out`.

    Raises:
        UsageError: unknown format or split, pyarrow missing for Parquet, or `out`
            being a folder.
    """
    cache = FeatureCache(cache_path)
    fmt = format or {".parquet": "parquet", ".npz": "npz"}.get(os.path.splitext(out)[1].lower())
    if fmt not in FORMATS:
        raise UsageError(f"{param('format')} {format or '(from ' + out + ')'}: use parquet or npz "
                         "(or name the file .parquet or .npz).")
    chosen = list(splits) if splits else list(cache.splits)
    for split in chosen:
        if split not in cache.splits:
            raise UsageError(f"{param('split')} {split}: {cache_path} has splits "
                             f"{', '.join(cache.splits)}.")
    if os.path.isdir(out):
        raise UsageError(f"{param('out')} {out}: is a folder; name the file to write.")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError('--format parquet needs pyarrow: pip install "featcache[parquet]"') \
                from None
    metadata = {"feature_shape": list(cache.feature_shape), "class_names": cache.class_names,
                "multi_label": cache.multi_label, "fingerprint_hash": cache.fingerprint_hash,
                "backbone": cache.fingerprint.get("backbone"), "dtype": "float32"}
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    partial = out + ".partial"
    writer = _parquet if fmt == "parquet" else _npz
    try:
        counts = writer(cache, chosen, partial, metadata)
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):  # a failed write leaves nothing half-written behind
            os.remove(partial)
    return FeatureExport(os.path.abspath(out), fmt, sum(counts.values()), counts,
                         cache.feature_shape, os.path.getsize(out))


def _columns(cache: FeatureCache, split: str) -> dict:
    data = cache.read(split, dtype="float32")
    n = len(data.labels)
    views = data.views if data.views is not None else np.zeros(n, dtype=np.int64)
    return {"path": list(data.paths), "label": [cache.class_names[i] for i in data.labels],
            "split": [split] * n, "view": np.asarray(views, dtype=np.int32),
            "sha256": list(data.hashes), "features": data.features.reshape(n, -1)}


def _parquet(cache: FeatureCache, splits: list[str], path: str, metadata: dict) -> dict[str, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    width = int(np.prod(cache.feature_shape))
    schema = pa.schema([("path", pa.string()), ("label", pa.string()), ("split", pa.string()),
                        ("view", pa.int32()), ("sha256", pa.string()),
                        ("features", pa.list_(pa.float32(), width))],
                       metadata={"featcache": json.dumps(metadata)})
    counts = {}
    with pq.ParquetWriter(path, schema) as writer:
        for split in splits:
            c = _columns(cache, split)
            flat = pa.array(np.ascontiguousarray(c.pop("features")).ravel(), pa.float32())
            table = pa.table({**c, "features": pa.FixedSizeListArray.from_arrays(flat, width)},
                             schema=schema)
            writer.write_table(table)
            counts[split] = table.num_rows
    return counts


def _npz(cache: FeatureCache, splits: list[str], path: str, metadata: dict) -> dict[str, int]:
    parts = [_columns(cache, split) for split in splits]
    counts = {split: len(p["path"]) for split, p in zip(splits, parts)}
    joined = {key: np.concatenate([np.asarray(p[key]) for p in parts]) for key in parts[0]}
    joined["features"] = joined["features"].reshape(-1, *cache.feature_shape)
    with open(path, "wb") as fh:  # np.savez would add .npz to a name without it
        np.savez(fh, **{k: (v.astype(str) if v.dtype.kind in "OU" else v) for k, v in joined.items()},
                 metadata=np.array(json.dumps(metadata)))
    return counts
