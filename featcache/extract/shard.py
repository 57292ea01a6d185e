"""Turn planned shard tasks into finished shard files: decode, run the backbone, write.

`run_shards` streams the images of several tasks through one decoding
pipeline (so decoding never stalls at a shard boundary) and yields each shard
as it is committed; `run_shard` does the same for one task. Both are what
every engine runs, in this process or on a cluster worker. A shard is written
under a temporary name and renamed when complete, so running a task again is
always safe.
"""

from __future__ import annotations

import os
import time
from typing import Iterator


from ..augment_views import views_for
from ..cache import ShardInfo, ShardWriter
from ..decode import DEFAULT_MAX_PIXELS
from ..errors import DataError, param
from ..pipeline import Item, decoded_batches, default_workers
from .plan import ShardJob, ShardTask

TIMING_KEYS = ("wait_for_decode", "decode_cpu", "inference", "write")


def new_timing() -> dict[str, float]:
    """Seconds spent per stage, summed over the shards a run extracts."""
    return dict.fromkeys(TIMING_KEYS, 0.0)


def run_shards(extractor, tasks: list[ShardTask], job: ShardJob, timing: dict | None = None,
               progress=None) -> Iterator[ShardInfo]:
    """Extract `tasks` in order, yielding each finished shard's manifest entry.

    Args:
        extractor: a built `FeatureExtractor` matching `job.build`.
        tasks: planned shard tasks.
        job: where and how to write (see `ShardJob`).
        timing: a dict from `new_timing()` to add this run's seconds to.
        progress: a tqdm-like bar to `update(images)`, or None.

    Raises:
        DataError: `job.strict` and an image did not decode.
        CacheError: a shard could not be written (its temporary file is removed).
    """
    timing = timing if timing is not None else new_timing()
    augment = job.build.augment
    label_of = {name: i for i, name in enumerate(job.class_names)}
    # with augmented views each training image gives 1 + K consecutive rows (view 0 is the image)
    items = [Item(g, os.path.join(job.root, r.path), r.path, label_of[r.label], view)
             for g, task in enumerate(tasks) for r in task.records
             for view in range(views_for(task.split, augment))]
    writer: ShardWriter | None = None
    try:
        for batch in decoded_batches(items, job.build.resize, job.batch_size,
                                     default_workers(job.workers),
                                     max_pixels=job.max_pixels or DEFAULT_MAX_PIXELS,
                                     augment=augment):
            timing["wait_for_decode"] += batch.wait_seconds
            timing["decode_cpu"] += batch.decode_seconds
            if writer is None:
                task = tasks[batch.group]
                writer = ShardWriter(job.out, task.split, task.index, task.plan_hash,
                                     len(task.records) * views_for(task.split, augment),
                                     extractor.feature_shape, job.build.dtype,
                                     job.fingerprint_hash, views=augment is not None)
            for item, reason in batch.failures:
                if job.strict:
                    raise DataError(
                        f"{item.display}: {reason}. {param('strict')} stops at the first "
                        "unreadable image; fix or remove the file, or turn it off to skip and "
                        "record such files.")
                if item.view == 0:  # a file's views fail with it: record the file once
                    writer.skip(item.display, reason)
            if batch.items:
                start = time.perf_counter()
                features = extractor.features(batch.pixels, job.batch_size)
                timing["inference"] += time.perf_counter() - start
                start = time.perf_counter()
                writer.append(features, [it.label for it in batch.items],
                              [it.display for it in batch.items], batch.hashes,
                              [it.view for it in batch.items])
                timing["write"] += time.perf_counter() - start
                if job.after_batch is not None:
                    job.after_batch(writer)
            if batch.last_in_group:
                start = time.perf_counter()
                info = writer.commit()
                timing["write"] += time.perf_counter() - start
                writer = None
                yield info
            if progress is not None:
                progress.update(batch.attempted)
    finally:
        if writer is not None:
            writer.abort()


def run_shard(extractor, task: ShardTask, job: ShardJob, timing: dict | None = None,
              progress=None) -> ShardInfo:
    """Turn one planned shard task into one finished shard file; returns its entry."""
    return next(iter(run_shards(extractor, [task], job, timing, progress)))


