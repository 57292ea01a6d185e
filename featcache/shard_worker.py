"""What a Dask worker runs: build the feature model once per process, write whole shards.

Each worker process keeps the models it has built in `_MODELS`, keyed by the
`BuildSpec`, so the backbone loads once per worker however many shards it
runs. Before writing anything a worker checks that its own fingerprint (its
weights' sha256 and its Keras, backend and Pillow versions) equals the one the
client planned with, so a worker set up differently cannot mix other features
into the cache. A shard task is idempotent: it writes under a temporary name
and renames when complete, and a retried task whose shard is already on disk
returns it as is.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass

from .dataset import Dataset
from .errors import CacheError
from .extract import BuildSpec, ExtractOptions, ExtractorInfo, ShardTask, _run_pending, describe_extractor
from .fingerprint import differences
from .store import ShardInfo, read_shard_info

_MODELS: dict[BuildSpec, tuple[object, ExtractorInfo]] = {}

# Test-only fault injection: when this names a file in an existing folder, the first
# shard task that creates the file kills its own worker process mid-shard (after its
# first batch is written). While the folder does not exist nothing happens.
KILL_MARKER_ENV = "FEATCACHE_TEST_KILL_WORKER_MARKER"


def worker_model(build: BuildSpec) -> tuple[object, ExtractorInfo]:
    """This process's feature model for `build`, built on first use."""
    if build not in _MODELS:
        extractor = build.build()
        _MODELS[build] = (extractor, describe_extractor(extractor, build))
    return _MODELS[build]


def describe(build: BuildSpec) -> ExtractorInfo:
    """The fingerprint and model facts, as a worker computes them (the client plans with these)."""
    return worker_model(build)[1]


@dataclass(frozen=True)
class ShardJob:
    """One shard task as sent to a worker."""

    task: ShardTask
    root: str
    class_names: tuple[str, ...]
    build: BuildSpec
    fingerprint: dict
    fingerprint_hash: str
    out: str
    batch_size: int
    strict: bool
    max_pixels: int


def _kill_hook():
    marker = os.environ.get(KILL_MARKER_ENV)
    if not marker:
        return None

    def after_batch(writer):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except (FileExistsError, FileNotFoundError):
            return
        os.write(fd, f"{os.getpid()} {writer.relpath}\n".encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    return after_batch


def run_shard(job: ShardJob) -> tuple[ShardInfo, dict]:
    """Extract one shard into `job.out`; returns its manifest entry and timings."""
    extractor, info = worker_model(job.build)
    if info.fingerprint_hash != job.fingerprint_hash:
        diff = "; ".join(differences(job.fingerprint, info.fingerprint)[:3])
        raise CacheError(
            f"worker {socket.gethostname()} (pid {os.getpid()}) would make different features than "
            f"the cache was planned with ({diff or 'fingerprint hash differs'}). Install the same "
            "featcache, Keras, backend and Pillow versions and the same weights on every worker.")
    done = read_shard_info(job.out, job.task.relpath, job.fingerprint_hash)
    if done is not None:  # a retry of a task that finished but whose result was lost
        return done, {}
    options = ExtractOptions(data=job.root, out=job.out, batch_size=job.batch_size,
                             dtype=job.build.dtype, strict=job.strict, max_pixels=job.max_pixels,
                             progress=False)
    dataset = Dataset(job.root, "shard", list(job.task.records), list(job.class_names))
    timing = dict.fromkeys(("wait_for_decode", "decode_cpu", "inference", "write"), 0.0)
    written = _run_pending(extractor, [job.task], dataset, job.build.resize, options,
                           job.fingerprint_hash, timing, augment=job.build.augment,
                           after_batch=_kill_hook())
    return written[0], timing
