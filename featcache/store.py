"""The on-disk feature cache. The only module that touches h5py.

Layout of a cache folder::

    cache.json                  identity: the fingerprint, fixed at creation
    manifest.json               the last complete state (atomically replaced)
    lock                        held by the one process writing the cache
    shards/<split>-<index:05d>-<plan>.h5

A shard holds, per row, `features` (float16/float32, chunked for batched
reads), `labels` (int32 index into the manifest's class names), `paths`
(relative to the data root) and `hashes` (sha256 of the image file), plus
attributes naming its split, index, plan hash, fingerprint hash and the files
it skipped. Shards are written under a temporary name, flushed, fsynced and
renamed into place, so a shard file that exists is complete; its name carries
a hash of the files planned for it, so a changed file list never reuses it.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field

import h5py
import numpy as np

from .errors import CacheError, CacheLockedError
from .fingerprint import FORMAT_VERSION, check_same
from .fileio import TMP_MARKER, fsync_dir, read_json, sha256_file, write_json_atomic

IDENTITY_FILE = "cache.json"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = "lock"
SHARDS_DIR = "shards"
PARTS_DIR = "parts"  # slices of a sliced extraction, before `featcache merge`
CHUNK_BYTES = 1 << 20


def shard_relpath(split: str, index: int, plan_hash: str) -> str:
    return f"{SHARDS_DIR}/{split}-{index:05d}-{plan_hash[:12]}.h5"


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
            if any(f[name].shape[0] != rows for name in ("features", "labels", "paths", "hashes")):
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
            for name in ("features", "labels", "paths", "hashes"):
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
    with h5py.File(os.path.join(cache_dir, relpath), "r") as f:
        return [(h.decode("ascii"), int(label), _decode_path(p))
                for h, label, p in zip(f["hashes"][:], f["labels"][:], f["paths"][:])]


class CacheLock:
    """An exclusive advisory lock on a cache folder, held while writing.

    Raises:
        CacheLockedError: another process holds it.
    """

    def __init__(self, cache_dir: str):
        self.path = os.path.join(cache_dir, LOCK_FILE)
        self._fd: int | None = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks, proceed unlocked
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise CacheLockedError(
                f"{os.path.dirname(self.path)} is being written by another featcache process "
                f"(pid {holder}). Wait for it to finish, or write to another --out."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def remove_stale_temporaries(cache_dir: str) -> int:
    """Delete temporary files left by killed writers (call with the lock held)."""
    removed = 0
    for sub in ("", SHARDS_DIR):
        folder = os.path.join(cache_dir, sub)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if TMP_MARKER in name:
                os.remove(os.path.join(folder, name))
                removed += 1
    return removed


def has_rows(cache_dir: str) -> bool:
    """Whether a manifest or any finished shard exists in the cache folder."""
    shards = os.path.join(cache_dir, SHARDS_DIR)
    return os.path.exists(os.path.join(cache_dir, MANIFEST_FILE)) or (
        os.path.isdir(shards) and any(n.endswith(".h5") for n in os.listdir(shards)))


def remove_if_unused(cache_dir: str) -> None:
    """Remove a cache folder this run created if it holds nothing but its lock."""
    shards = os.path.join(cache_dir, SHARDS_DIR)
    if os.path.isdir(shards) and not os.listdir(shards):
        os.rmdir(shards)
    leftover = set(os.listdir(cache_dir)) - {LOCK_FILE, IDENTITY_FILE}
    if not leftover and not has_rows(cache_dir):
        for name in (LOCK_FILE, IDENTITY_FILE):
            if os.path.exists(os.path.join(cache_dir, name)):
                os.remove(os.path.join(cache_dir, name))
        os.rmdir(cache_dir)


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
                       "Use another --out for these settings, or delete the cache to rebuild it.")
            return False
        os.remove(path)  # an earlier run stopped before writing any features: nothing to mix
    others = [n for n in os.listdir(cache_dir) if n not in (LOCK_FILE, SHARDS_DIR, PARTS_DIR)]
    if others:
        raise CacheError(
            f"--out {cache_dir}: folder is not empty and is not a featcache cache "
            f"(found {', '.join(sorted(others)[:3])}). Choose an empty or new folder."
        )
    write_json_atomic(path, {
        "featcache_cache": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fingerprint_hash": fingerprint_hash,
        "fingerprint": fingerprint,
    })
    return True


@dataclass
class Features:
    """The rows of one split, in memory, in stable order.

    Attributes:
        features: (n, *feature_shape) array in the stored dtype (or the one asked for).
        labels: (n,) int32 indices into `class_names`.
        paths: file paths relative to the data root.
        hashes: sha256 of each image file.
        class_names: class names of the cache.
        split: split name.
        fingerprint: the cache's fingerprint.
        views: per row, which augmented view of its image it is (0: the image
            itself); all zeros for caches made without --augment-views.
    """

    features: np.ndarray
    labels: np.ndarray
    paths: list[str]
    hashes: list[str]
    class_names: list[str]
    split: str
    fingerprint: dict
    views: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


class FeatureCache:
    """Read access to a finished cache (its last complete manifest).

    Raises:
        CacheError: no cache, or an unfinished one, at `path`.
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        manifest = os.path.join(self.path, MANIFEST_FILE)
        if not os.path.isfile(manifest):
            if os.path.isfile(os.path.join(self.path, IDENTITY_FILE)):
                raise CacheError(
                    f"{path}: extraction has not finished (no {MANIFEST_FILE}). Rerun the same "
                    "featcache extract command to resume it.")
            if os.path.isdir(os.path.join(self.path, PARTS_DIR)):
                raise CacheError(f"{path}: holds slices of a sliced extraction but no {MANIFEST_FILE} "
                                 f"yet. Join them with: featcache merge {path}")
            raise CacheError(f"{path}: not a featcache cache (no {MANIFEST_FILE}).")
        self.manifest = self._read_manifest()

    def _read_manifest(self) -> dict:
        manifest = os.path.join(self.path, MANIFEST_FILE)
        try:
            return read_json(manifest)
        except (OSError, ValueError) as exc:
            raise CacheError(f"{manifest}: unreadable manifest ({exc}).") from exc

    def _consistent(self, read):
        """Run `read`; if a writer replaced the manifest meanwhile (and removed
        shards the old one named), start again from the new complete state."""
        for attempt in range(3):
            try:
                return read()
            except CacheError:
                if attempt == 2:
                    raise
                latest = self._read_manifest()
                if latest == self.manifest:
                    raise
                self.manifest = latest

    @property
    def fingerprint(self) -> dict:
        return self.manifest["fingerprint"]

    @property
    def fingerprint_hash(self) -> str:
        return self.manifest["fingerprint_hash"]

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["fingerprint"]["feature_shape"])

    @property
    def splits(self) -> dict[str, int]:
        return {s: v["rows"] for s, v in self.manifest["splits"].items()}

    def shards(self, split: str) -> list[dict]:
        if split not in self.manifest["splits"]:
            raise CacheError(
                f"{self.path}: no split '{split}'. Available: {', '.join(self.manifest['splits'])}.")
        return sorted((s for s in self.manifest["shards"] if s["split"] == split),
                      key=lambda s: s["index"])

    def open_shard(self, shard: dict) -> h5py.File:
        path = os.path.join(self.path, shard["file"])
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise CacheError(f"{path}: cannot open shard ({exc}). Run featcache verify.") from exc
        if f.attrs.get("fingerprint_hash") != self.fingerprint_hash or int(f.attrs.get("rows", -1)) != shard["rows"]:
            f.close()
            raise CacheError(f"{path}: shard does not match the manifest. Run featcache verify.")
        return f

    def index(self, split: str) -> tuple[list[str], np.ndarray]:
        """Paths (relative to the data root) and labels of a split, without its features."""
        return self._consistent(lambda: self._index(split))

    def _index(self, split: str) -> tuple[list[str], np.ndarray]:
        paths: list[str] = []
        labels = []
        for shard in self.shards(split):
            with self.open_shard(shard) as f:
                paths.extend(_decode_path(p) for p in f["paths"][:])
                labels.append(f["labels"][:])
        return paths, (np.concatenate(labels) if labels else np.zeros(0, dtype=np.int32))

    def read(self, split: str, dtype: str | None = None) -> Features:
        """Load every row of a split into memory (the last complete state, even
        while another process rewrites the cache)."""
        return self._consistent(lambda: self._read(split, dtype))

    def _read(self, split: str, dtype: str | None = None) -> Features:
        shards = self.shards(split)
        total = sum(s["rows"] for s in shards)
        stored = np.dtype(self.fingerprint["dtype"])
        out = np.empty((total, *self.feature_shape), dtype=np.dtype(dtype) if dtype else stored)
        labels = np.empty(total, dtype=np.int32)
        views = np.zeros(total, dtype=np.int16)
        paths: list[str] = []
        hashes: list[str] = []
        at = 0
        for shard in shards:
            with self.open_shard(shard) as f:
                n = shard["rows"]
                if n:
                    if out.dtype == stored:
                        f["features"].read_direct(out, dest_sel=np.s_[at:at + n])
                    else:
                        out[at:at + n] = f["features"][:]
                    labels[at:at + n] = f["labels"][:]
                    if "views" in f:
                        views[at:at + n] = f["views"][:]
                    paths.extend(_decode_path(p) for p in f["paths"][:])
                    hashes.extend(h.decode("ascii") for h in f["hashes"][:])
                at += n
        return Features(out, labels, paths, hashes, self.class_names, split, self.fingerprint, views)


class SplitReader:
    """Row-range reads from one split's shards, which stay open until `close`.

    Rows are numbered across the split's shards in their stable order.
    """

    def __init__(self, cache: FeatureCache, split: str):
        self.cache = cache
        self.shards = cache.shards(split)
        self.starts = np.cumsum([0] + [s["rows"] for s in self.shards])
        self.n_rows = int(self.starts[-1])
        self._files: list[h5py.File] = []

    def _file(self, index: int) -> h5py.File:
        if not self._files:
            self._files = [self.cache.open_shard(s) for s in self.shards]
        return self._files[index]

    def labels(self) -> np.ndarray:
        if not self.shards:
            return np.zeros(0, dtype=np.int32)
        return np.concatenate([self._file(i)["labels"][:] for i in range(len(self.shards))])

    def read_range(self, start: int, stop: int, out: np.ndarray) -> None:
        """Copy rows [start, stop) into `out` (converting dtype as needed)."""
        at = 0
        while start < stop:
            shard = int(np.searchsorted(self.starts, start, side="right") - 1)
            end = min(stop, int(self.starts[shard + 1]))
            local = start - int(self.starts[shard])
            out[at:at + end - start] = self._file(shard)["features"][local:local + end - start]
            at += end - start
            start = end

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []


def load_features(cache: str, split: str = "train", dtype: str | None = None) -> Features:
    """Load one split of a cache into memory.

    Rows come in a stable order: shards by index, and within the split by the
    files' sorted relative paths. Labels index into `class_names`.

    Args:
        cache: cache folder written by `featcache extract`.
        split: "train", "val" or "test".
        dtype: convert features to this dtype (default: as stored).

    Raises:
        CacheError: missing, unfinished or damaged cache, or unknown split.
    """
    return FeatureCache(cache).read(split, dtype)
