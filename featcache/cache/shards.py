"""Shard files: writing one under a temporary name, describing, checking and reading it.

A shard holds, per row, `features` (float16/float32, chunked in about 1 MiB
blocks for batched reads), `labels` (int32 index into the manifest's class
names), `paths` (relative to the data root), `hashes` (sha256 of the image
file) and, in caches with augmented views, `views`; its attributes name its
split, index, plan hash, fingerprint hash and the files it skipped. A shard
is written under a temporary name, flushed, fsynced and renamed into place,
so a shard file that exists is complete. This module and `featcache.cache`'s
readers are the only code that opens HDF5 files.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..errors import CacheError
from ..fileio import TMP_MARKER, fsync_dir, sha256_file
from ..fingerprint import FORMAT_VERSION
from . import forksafe
from .layout import shard_relpath

CHUNK_BYTES = 1 << 20
COLUMNS = ("features", "labels", "paths", "hashes")


def _encode_path(path: str) -> bytes:
    return os.fsencode(path)


def _decode_path(raw) -> str:
    return os.fsdecode(raw if isinstance(raw, bytes) else str(raw).encode())


@dataclass
class ShardInfo:
    """What the manifest records about one finished shard."""

    file: str
    split: str
    index: int
    plan_hash: str
    planned: int
    rows: int
    bytes: int
    sha256: str
    skipped: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "file": self.file, "split": self.split, "index": self.index,
            "plan_hash": self.plan_hash, "planned": self.planned, "rows": self.rows,
            "bytes": self.bytes, "sha256": self.sha256,
        }

    def to_manifest(self) -> dict:
        """The manifest's entry: `to_json` plus the files the shard skipped."""
        return dict(self.to_json(), skipped=list(self.skipped))

    @classmethod
    def from_manifest(cls, entry: dict) -> "ShardInfo":
        return cls(**{k: entry[k] for k in (
            "file", "split", "index", "plan_hash", "planned", "rows", "bytes", "sha256")},
            skipped=list(entry.get("skipped", [])))


def write_failed(path: str, exc: BaseException) -> CacheError:
    """A one-line error for a failed write (disk full, file too large, I/O error)."""
    text = str(exc)
    code = getattr(exc, "errno", None)
    if not isinstance(code, int):
        found = re.search(r"errno = (\d+)", text)  # HDF5 quotes the OS error number
        code = int(found.group(1)) if found else None
    reason = os.strerror(code) if code else (text.splitlines()[0] if text else type(exc).__name__)
    return CacheError(
        f"{path}: cannot write ({reason}). Finished shards are kept; free space (or lift the "
        "file size limit) and run the same command again to resume.")


class ShardWriter:
    """Writes one shard under a temporary name; `commit` makes it visible.

    Rows are appended batch by batch, so a shard never has to fit in memory.
    Write failures (disk full, a file size limit) raise `CacheError` naming
    the shard; the temporary file is removed by `abort`.
    """

    def __init__(self, cache_dir: str, split: str, index: int, plan_hash: str, planned: int,
                 feature_shape: tuple[int, ...], dtype: str, fingerprint_hash: str,
                 views: bool = False):
        self.cache_dir = cache_dir
        self.relpath = shard_relpath(split, index, plan_hash)
        self.final = os.path.join(cache_dir, self.relpath)
        self.tmp = f"{self.final}{TMP_MARKER}{os.getpid()}"
        self.split, self.index, self.plan_hash, self.planned = split, index, plan_hash, planned
        self.rows = 0
        self.skipped: list[dict] = []
        os.makedirs(os.path.dirname(self.final), exist_ok=True)
        capacity = max(planned, 1)
        row_bytes = int(np.prod(feature_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        # about 1 MiB chunks, balanced so the last one is not mostly empty space
        per_chunk = max(1, min(capacity, CHUNK_BYTES // max(row_bytes, 1)))
        n_chunks = -(-capacity // per_chunk)
        chunk_rows = -(-capacity // n_chunks)
        self._file = None
        self._vfd: tuple[int, tuple[int, int]] | None = None
        try:
            self._create(feature_shape, dtype, capacity, chunk_rows, fingerprint_hash, views)
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc) from None

    def _create(self, feature_shape, dtype, capacity, chunk_rows, fingerprint_hash, views) -> None:
        split, index, plan_hash, planned = self.split, self.index, self.plan_hash, self.planned
        self._file = h5py.File(self.tmp, "w")
        f = self._file
        try:  # the OS file descriptor HDF5 writes through, to disarm it if a write fails
            fd = int(f.id.get_vfd_handle())
            st = os.fstat(fd)
            self._vfd = (fd, (st.st_dev, st.st_ino))
            forksafe.register(fd)  # a forked child must not keep HDF5's lock on the shard
        except (OSError, RuntimeError, ValueError, TypeError):
            self._vfd = None
        f.attrs.update({
            "featcache_format": FORMAT_VERSION, "fingerprint_hash": fingerprint_hash,
            "split": split, "index": index, "plan_hash": plan_hash, "planned": planned,
        })
        self._features = f.create_dataset(
            "features", shape=(capacity, *feature_shape), maxshape=(capacity, *feature_shape),
            dtype=dtype, chunks=(chunk_rows, *feature_shape))
        self._labels = f.create_dataset("labels", shape=(capacity,), maxshape=(capacity,),
                                        dtype="int32")
        self._paths = f.create_dataset("paths", shape=(capacity,), maxshape=(capacity,),
                                       dtype=h5py.string_dtype("utf-8"))
        self._hashes = f.create_dataset("hashes", shape=(capacity,), maxshape=(capacity,),
                                        dtype="S64")
        # caches with --augment-views: which view of its image each row is (0: the image itself)
        self._views = (f.create_dataset("views", shape=(capacity,), maxshape=(capacity,),
                                        dtype="int16") if views else None)

    def _failed(self, exc: BaseException) -> CacheError:
        """After a failed write: disarm HDF5's file, close and remove it, and say why.

        HDF5 keeps dirty metadata of a file whose write failed and retries
        flushing it on every later close or garbage collection, which fails
        again (or crashes the process). Pointing its descriptor at /dev/null
        lets it finish closing; the temporary file is then deleted.
        """
        if self._vfd is not None:
            fd, identity = self._vfd
            forksafe.unregister(fd)
            self._vfd = None
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == identity:  # still HDF5's descriptor of our file
                    null = os.open(os.devnull, os.O_RDWR)
                    try:
                        os.dup2(null, fd)
                    finally:
                        os.close(null)
            except OSError:
                pass
        error = write_failed(self.tmp, exc)
        self.abort()
        return error

    def append(self, features: np.ndarray, labels, paths, hashes, views=None) -> None:
        n = len(labels)
        if n == 0:
            return
        a, b = self.rows, self.rows + n
        try:
            self._features[a:b] = np.asarray(features, dtype=self._features.dtype)
            self._labels[a:b] = np.asarray(labels, dtype=np.int32)
            self._paths[a:b] = [_encode_path(p) for p in paths]
            self._hashes[a:b] = [h.encode("ascii") for h in hashes]
            if self._views is not None:
                self._views[a:b] = (np.zeros(n, np.int16) if views is None
                                    else np.asarray(views, np.int16))
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc) from None
        self.rows = b

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append({"path": path, "split": self.split, "reason": reason})

    def commit(self) -> ShardInfo:
        """Trim, flush, fsync and rename the shard into place."""
        try:
            return self._commit()
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc) from None

    def _commit(self) -> ShardInfo:
        for ds in (self._features, self._labels, self._paths, self._hashes, self._views):
            if ds is not None:
                ds.resize(self.rows, axis=0)
        self._file.attrs["rows"] = self.rows
        self._file.attrs["skipped"] = json.dumps(self.skipped)
        self._file.flush()  # a full disk shows here, while every handle is still ours to disarm
        self._features = self._labels = self._paths = self._hashes = None
        self._file.close()
        if self._vfd is not None:
            forksafe.unregister(self._vfd[0])
        self._file = self._vfd = None  # closed: its descriptor number may be reused
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        digest = sha256_file(self.tmp)
        size = os.path.getsize(self.tmp)
        os.replace(self.tmp, self.final)
        fsync_dir(os.path.dirname(self.final))
        return ShardInfo(self.relpath, self.split, self.index, self.plan_hash, self.planned,
                         self.rows, size, digest, list(self.skipped))

    def abort(self) -> None:
        """Close and delete the temporary file (after an error or an interrupt)."""
        self._features = self._labels = self._paths = self._hashes = None
        f, self._file = self._file, None
        if self._vfd is not None:
            forksafe.unregister(self._vfd[0])
        self._vfd = None
        try:
            if f is not None and f.id.valid:
                f.close()
        except Exception:  # noqa: BLE001 - already broken; removing the file is what matters
            pass
        try:
            os.remove(self.tmp)
        except FileNotFoundError:
            pass


def read_shard_info(cache_dir: str, relpath: str, fingerprint_hash: str) -> ShardInfo | None:
    """Describe a finished shard found on disk, or None if it is unusable.

    A shard is usable when it opens, belongs to this fingerprint and its
    datasets hold the row count its attributes claim.
    """
    path = os.path.join(cache_dir, relpath)
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if attrs.get("fingerprint_hash") != fingerprint_hash:
                return None
            rows = int(attrs["rows"])
            if any(f[name].shape[0] != rows for name in COLUMNS):
                return None
            skipped = json.loads(attrs.get("skipped", "[]"))
            info = ShardInfo(relpath, str(attrs["split"]), int(attrs["index"]),
                             str(attrs["plan_hash"]), int(attrs["planned"]), rows, 0, "", skipped)
    except (OSError, KeyError, ValueError):
        return None
    info.bytes = os.path.getsize(path)
    info.sha256 = sha256_file(path)
    return info


def check_shard(cache_dir: str, entry: dict, fingerprint_hash: str) -> list[str]:
    """Everything wrong with one manifest shard entry's file; [] when intact.

    Re-reads the whole file: its sha256 and size against the manifest, then
    its attributes and every dataset's row count.
    """
    path = os.path.join(cache_dir, entry["file"])
    if not os.path.isfile(path):
        return ["file is missing"]
    problems = []
    size = os.path.getsize(path)
    if size != entry.get("bytes"):
        problems.append(f"size {size} bytes, manifest says {entry.get('bytes')}")
    if sha256_file(path) != entry.get("sha256"):
        problems.append("sha256 differs from the manifest")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("fingerprint_hash") != fingerprint_hash:
                problems.append("belongs to another fingerprint")
            rows = int(f.attrs.get("rows", -1))
            if rows != entry.get("rows"):
                problems.append(f"{rows} rows, manifest says {entry.get('rows')}")
            for name in COLUMNS:
                if name not in f:
                    problems.append(f"no '{name}' dataset")
                    continue
                if f[name].shape[0] != entry.get("rows"):
                    problems.append(f"'{name}' holds {f[name].shape[0]} rows")
                f[name][:]  # read every byte HDF5 can check
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        problems.append(f"unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    return problems


def read_hashes(cache_dir: str, relpath: str) -> list[tuple[str, int, str]]:
    """(content sha256, label, path) of every row of a finished shard."""
    with ShardReader(os.path.join(cache_dir, relpath)) as shard:
        return list(zip(shard.hashes(), shard.labels().tolist(), shard.paths()))


class ShardReader:
    """Read access to one finished shard file; use as a context manager.

    Raises:
        CacheError: the file cannot be opened as a shard.
    """

    def __init__(self, path: str):
        self.path = path
        try:
            self._file = h5py.File(path, "r")
        except OSError as exc:
            raise CacheError(f"{path}: cannot open shard ({exc}). Run featcache verify.") from exc

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def attrs(self) -> dict:
        return dict(self._file.attrs)

    @property
    def rows(self) -> int:
        return int(self._file.attrs.get("rows", -1))

    @property
    def fingerprint_hash(self) -> str | None:
        return self._file.attrs.get("fingerprint_hash")

    def labels(self) -> np.ndarray:
        return self._file["labels"][:]

    def paths(self) -> list[str]:
        return [_decode_path(p) for p in self._file["paths"][:]]

    def hashes(self) -> list[str]:
        return [h.decode("ascii") for h in self._file["hashes"][:]]

    def views(self) -> np.ndarray:
        """Which view of its image each row is (all 0 without augmented views)."""
        if "views" in self._file:
            return self._file["views"][:]
        return np.zeros(self.rows, dtype=np.int16)

    @property
    def has_views(self) -> bool:
        return "views" in self._file

    def features(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Feature rows [start, stop) in the stored dtype."""
        return self._file["features"][start:stop]

    def read_features_into(self, out: np.ndarray, at: int) -> None:
        """Copy every feature row into out[at:at + rows] (converting dtype if needed)."""
        n = self.rows
        if not n:
            return
        ds = self._file["features"]
        if out.dtype == ds.dtype:
            ds.read_direct(out, dest_sel=np.s_[at:at + n])
        else:
            out[at:at + n] = ds[:]


