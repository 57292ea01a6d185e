"""The Dask engine: shard tasks on a dask.distributed cluster (`engine="dask"`).

The client (the extracting process) lists the images, plans the shards and
holds the cache lock, exactly as with the local engine. It asks one worker
for the fingerprint (that worker builds the model it keeps), sends every
pending shard as one task, and the caller writes the manifest once all shards
are back. Workers write whole shards straight into the cache folder, so the
data and the cache must be on a filesystem every worker sees under the same
paths. A task that fails, or whose worker dies, is retried (`retries`); a
shard that keeps killing workers stops the run with a message, and running
the same extraction again resumes from the shards already written.

On a worker, each process keeps the models it has built in `_MODELS`, keyed
by the `BuildSpec`, so the backbone loads once per worker process. Before
writing, a worker checks that its own fingerprint (weights sha256, Keras,
backend and Pillow versions) equals the one the client planned with.

dask stays optional: without it, asking for this engine says how to install it.
"""

from __future__ import annotations

import logging
import os
import socket

from ..augment_views import views_for
from ..cache import ShardInfo, read_shard_info
from ..errors import CacheError, UsageError, param
from ..fingerprint import differences
from .plan import BuildSpec, ExtractorInfo, ShardJob, ShardTask, describe_extractor
from .shard import new_timing, run_shard

INSTALL_HINT = 'pip install "featcache[dask]"'

_MODELS: dict[BuildSpec, tuple[object, ExtractorInfo]] = {}


def import_distributed():
    """The dask.distributed module, or a one-line UsageError saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise UsageError(f"{param('engine')}=dask needs dask.distributed, which is not "
                         f"installed: {INSTALL_HINT}") from None
    return distributed


def default_local_workers() -> int:
    """Worker processes of a local cluster when `workers` is not given."""
    return max(1, (os.cpu_count() or 2) // 2)


# ---------------------------------------------------------------- on a worker
def worker_model(build: BuildSpec) -> tuple[object, ExtractorInfo]:
    """This process's feature model for `build`, built on first use."""
    if build not in _MODELS:
        extractor = build.build()
        _MODELS[build] = (extractor, describe_extractor(extractor, build))
    return _MODELS[build]


def describe(build: BuildSpec) -> ExtractorInfo:
    """The fingerprint and model facts, as a worker computes them (the client plans with these)."""
    return worker_model(build)[1]


def worker_run_shard(task: ShardTask, job: ShardJob, planned: dict) -> tuple[ShardInfo, dict]:
    """Extract one shard on a worker; returns its manifest entry and timings."""
    extractor, info = worker_model(job.build)
    if info.fingerprint_hash != job.fingerprint_hash:
        diff = "; ".join(differences(planned, info.fingerprint)[:3])
        raise CacheError(
            f"worker {socket.gethostname()} (pid {os.getpid()}) would make different features than "
            f"the cache was planned with ({diff or 'fingerprint hash differs'}). Install the same "
            "featcache, Keras, backend and Pillow versions and the same weights on every worker.")
    done = read_shard_info(job.out, task.relpath, job.fingerprint_hash)
    if done is not None:  # a retry of a task that finished but whose result was lost
        return done, {}
    timing = new_timing()
    return run_shard(extractor, task, job, timing), timing


# ---------------------------------------------------------------- on the client
class DaskEngine:
    """Runs shard tasks on a Dask cluster: at `scheduler`, or a local one of `workers` processes."""

    name = "dask"

    def __init__(self, scheduler: str | None = None, workers: int | None = None, retries: int = 3):
        self.scheduler = scheduler
        self.workers = workers
        self.retries = retries
        self.client = None
        self.cluster = None
        self._distributed = None
        self._fingerprint = None

    def __enter__(self):
        distributed = self._distributed = import_distributed()
        if self.scheduler:
            try:
                self.client = distributed.Client(self.scheduler, timeout="30s")
            except (OSError, TimeoutError) as exc:
                raise UsageError(
                    f"{param('scheduler')} {self.scheduler}: cannot connect ({exc}). Start a "
                    "scheduler (`dask scheduler`) and workers (`dask worker ADDRESS`), or set "
                    f"{param('workers')} for a cluster on this machine.") from None
        else:
            self.cluster = distributed.LocalCluster(
                n_workers=self.workers or default_local_workers(), threads_per_worker=1,
                processes=True, dashboard_address=None, silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster)
        return self

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        return False

    def prepare(self, build: BuildSpec) -> ExtractorInfo:
        future = self.client.submit(describe, build, pure=False, retries=self.retries)
        info = self._result(future, "building the feature model")
        self._fingerprint = info.fingerprint
        return info

    def _result(self, future, what: str):
        try:
            return future.result()
        except self._distributed.KilledWorker as exc:
            raise CacheError(
                f"Dask workers kept dying while {what} ({exc}); finished shards are kept: "
                "check the workers' memory and logs, then run the same extraction again.") from None

    def run(self, tasks, job, timing, progress) -> list[ShardInfo]:
        if not tasks:
            return []
        futures = [self.client.submit(worker_run_shard, task, job, self._fingerprint, pure=False,
                                      retries=self.retries) for task in tasks]
        images_of = {f.key: len(task.records) * views_for(task.split, job.build.augment)
                     for f, task in zip(futures, tasks)}
        done = {}
        try:
            for future in self._distributed.as_completed(futures):
                info, worker_timing = self._result(future, "extracting a shard")
                for key, seconds in worker_timing.items():
                    timing[key] = timing.get(key, 0.0) + seconds  # summed over workers
                done[info.file] = info
                if progress is not None:
                    progress.update(images_of[future.key])
        except BaseException:
            self.client.cancel(futures)
            raise
        return [done[task.relpath] for task in tasks]
