"""The Dask engine: shard tasks on a dask.distributed cluster (`extract --engine dask`).

The client (the `featcache extract` process) lists the images, plans the
shards and holds the cache lock, exactly as the local engine does. It asks one
worker for the fingerprint (the worker builds the model it will keep), sends
every pending shard as one task, and writes the manifest once, when all shards
are back. Workers write whole shards straight into the cache folder, so the
data and the cache must be on a filesystem every worker sees under the same
paths. A task that fails, or whose worker dies, is retried (`--retries`); a
shard that keeps killing workers stops the run with a message, and rerunning
the command resumes from the shards already written.

dask stays optional: without it, `--engine dask` says how to install it.
"""

from __future__ import annotations

import logging
import os

from .errors import CacheError, UsageError
from .extract import BuildSpec, ExtractorInfo

INSTALL_HINT = 'pip install "featcache[dask]"'


def import_distributed():
    """The dask.distributed module, or a one-line UsageError saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise UsageError(f"--engine dask needs dask.distributed, which is not installed: "
                         f"{INSTALL_HINT}") from None
    return distributed


def default_local_workers() -> int:
    """Worker processes of a local cluster when --workers is not given."""
    return max(1, (os.cpu_count() or 2) // 2)


class DaskEngine:
    """Runs shard tasks on a Dask cluster: `--scheduler ADDRESS`, or a local one of `--workers N`."""

    def __init__(self, options):
        self.options = options
        self.client = None
        self.cluster = None
        self._distributed = None

    def __enter__(self):
        distributed = self._distributed = import_distributed()
        o = self.options
        if o.scheduler:
            try:
                self.client = distributed.Client(o.scheduler, timeout="30s")
            except (OSError, TimeoutError) as exc:
                raise UsageError(
                    f"--scheduler {o.scheduler}: cannot connect ({exc}). Start a scheduler "
                    "(`dask scheduler`) and workers (`dask worker ADDRESS`), or use --workers N "
                    "for a cluster on this machine.") from None
        else:
            self.cluster = distributed.LocalCluster(
                n_workers=o.workers or default_local_workers(), threads_per_worker=1,
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
        from .shard_worker import describe

        self._fingerprint = None
        future = self.client.submit(describe, build, pure=False, retries=self.options.retries)
        info = self._result(future, "building the feature model")
        self._fingerprint = info.fingerprint
        return info

    def _result(self, future, what: str):
        try:
            return future.result()
        except self._distributed.KilledWorker as exc:
            raise CacheError(
                f"Dask workers kept dying while {what} ({exc}); finished shards are kept: "
                "check the workers' memory and logs, then run the same command again.") from None

    def run(self, pending, dataset, build: BuildSpec, options, fph: str, timing: dict):
        from tqdm.auto import tqdm

        from .shard_worker import ShardJob, run_shard

        if not pending:
            return []
        jobs = [ShardJob(task, dataset.root, tuple(dataset.class_names), build, self._fingerprint,
                         fph, os.path.abspath(options.out), options.batch_size, options.strict,
                         options.max_pixels) for task in pending]
        futures = self.client.map(run_shard, jobs, pure=False, retries=options.retries)
        images_of = {f.key: len(job.task.records) for f, job in zip(futures, jobs)}
        bar = tqdm(total=sum(images_of.values()), unit="img", desc=f"extract {build.backbone} (dask)",
                   disable=(None if options.progress is None else not options.progress),
                   dynamic_ncols=True, smoothing=0.1)
        done = {}
        try:
            for future in self._distributed.as_completed(futures):
                info, worker_timing = self._result(future, "extracting a shard")
                for key, seconds in worker_timing.items():
                    timing[key] = timing.get(key, 0.0) + seconds  # summed over workers
                done[info.file] = info
                bar.update(images_of[future.key])
        except BaseException:
            self.client.cancel(futures)
            raise
        finally:
            bar.close()
        return [done[task.relpath] for task in pending]
