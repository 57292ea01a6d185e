"""Decode images in parallel, ahead of the backbone, into ordered batches.

A thread pool decodes and resizes a sliding window of upcoming images while
the caller runs the backbone on the current batch, so decoding overlaps with
inference and the backbone stays the only bottleneck. Batches keep the input
order and never span two groups (shards); images that fail to decode come back
as failures next to the batch they belonged to.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from .decode import DEFAULT_MAX_PIXELS, ResizeSpec, read_image
from .errors import BadImageError


MAX_DEFAULT_WORKERS = 8


def default_workers(workers: int | None = None) -> int:
    """Decoding threads: `workers` if given, else one per CPU core (at most 8)."""
    return int(workers) if workers else min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1)


@dataclass(frozen=True)
class Item:
    """One image to decode.

    Attributes:
        group: index of the group (shard) it belongs to; groups are contiguous.
        path: absolute file path.
        display: path shown to the user and stored (relative to the data root).
        label: class index.
        view: 0 for the image itself, k >= 1 for its k-th augmented view.
    """

    group: int
    path: str
    display: str
    label: int
    view: int = 0


@dataclass
class Batch:
    """Up to `batch_size` consecutive items of one group, decoded.

    Attributes:
        group: the group of every item in the batch.
        items: the items that decoded, in input order.
        pixels: (len(items), H, W, 3) uint8.
        hashes: sha256 of each decoded item's file.
        failures: (item, reason) for items that did not decode.
        attempted: items the batch covered, decoded or not.
        last_in_group: no more items of this group follow.
        decode_seconds: CPU time the workers spent reading and decoding these items.
        wait_seconds: time the caller waited for this batch to be ready.
    """

    group: int
    items: list[Item] = field(default_factory=list)
    pixels: np.ndarray | None = None
    hashes: list[str] = field(default_factory=list)
    failures: list[tuple[Item, str]] = field(default_factory=list)
    attempted: int = 0
    last_in_group: bool = False
    decode_seconds: float = 0.0
    wait_seconds: float = 0.0


def _lower_priority(niceness: int) -> None:
    """Make the calling decode thread yield the CPU to the backbone's threads.

    On Linux a thread is a task with its own nice value. Decoding then fills
    the cores' idle moments instead of slowing inference; when decoding is
    the bottleneck the backbone threads sleep and the decoders get the CPU.
    The value is relative to the thread's own: in a process started at nice
    -15 the decoders run at -5, behind its backbone but not behind every
    other process on the machine (at an absolute 10 they starved whenever
    other work ran, and photo-size extraction went at a third of its speed).
    """
    if niceness and hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
        except OSError:
            pass


def _decode(item: Item, spec: ResizeSpec, max_pixels: int, augment=None):
    start = time.thread_time()  # CPU time of this thread: waiting for a core does not count
    try:
        pixels, digest = read_image(item.path, spec, item.display, max_pixels)
    except BadImageError as exc:
        return None, exc.reason, time.thread_time() - start
    if item.view and augment is not None:
        pixels = augment.apply(pixels, digest, item.view)
    return pixels, digest, time.thread_time() - start


def decoded_batches(
    items: Sequence[Item],
    spec: ResizeSpec,
    batch_size: int,
    workers: int,
    prefetch_batches: int = 4,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    augment=None,
) -> Iterator[Batch]:
    """Yield decoded batches in input order while later images decode.

    Args:
        items: images in order; items of one group must be contiguous.
        spec: output size and resampling.
        batch_size: most items per batch.
        workers: decoding threads.
        prefetch_batches: how many batches' worth of images to keep in flight.
        max_pixels: images larger than this are refused unread.
        augment: an `AugmentSpec` applied to items whose `view` is not 0.
    """
    height, width = spec.size
    window: deque[tuple[Item, Future]] = deque()
    source = iter(items)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="featcache-decode",
                              initializer=_lower_priority, initargs=(int(os.environ.get("FEATCACHE_DECODE_NICE", "10")),))

    def top_up():
        while len(window) < max(batch_size * prefetch_batches, workers * 2):
            item = next(source, None)
            if item is None:
                return
            window.append((item, pool.submit(_decode, item, spec, max_pixels, augment)))

    try:
        top_up()
        batch: Batch | None = None
        while window:
            item, future = window.popleft()
            if batch is None:
                batch = Batch(group=item.group)
                buffer = np.empty((batch_size, height, width, 3), dtype=np.uint8)
            waited = time.perf_counter()
            pixels, digest_or_reason, seconds = future.result()
            batch.wait_seconds += time.perf_counter() - waited
            top_up()
            batch.decode_seconds += seconds
            batch.attempted += 1
            if pixels is None:
                batch.failures.append((item, digest_or_reason))
            else:
                buffer[len(batch.items)] = pixels
                batch.items.append(item)
                batch.hashes.append(digest_or_reason)
            following = window[0][0] if window else None
            group_ends = following is None or following.group != item.group
            if group_ends or batch.attempted == batch_size:
                batch.last_in_group = group_ends
                batch.pixels = buffer[: len(batch.items)]
                yield batch
                batch = None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
