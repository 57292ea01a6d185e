"""Feed decoded images to Keras training, through the extraction engine's pipeline.

`image_batches` wraps `featcache.pipeline.decoded_batches` (parallel decode
and resize, prefetched ahead of the model) in a `keras.utils.PyDataset`. Each
epoch visits the images in a new order drawn from (seed, epoch), so an
interrupted run resumed at epoch k sees exactly the batches it would have.
Images that fail to decode are left out of their batch.

The files are decoded once per run, not once per epoch: a `PixelStore` keeps
each image's uint8 pixels at the model's input size after its first decode
(in memory when they fit, else in a temporary file in a folder the caller
names, beside the run), and later epochs read the batches from it. A 12 MP
photo takes tens of milliseconds to decode even at a reduced scale; reading
its 150 KB of pixels back takes microseconds.
"""

from __future__ import annotations

import math
import os
import uuid

import numpy as np

from .decode import ResizeSpec
from .pipeline import Item, decoded_batches, default_workers


MEMORY_FRACTION = 0.25  # of the memory available when the run starts


def available_memory() -> int | None:
    """Bytes of memory available now (Linux and macOS), None where unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


class PixelStore:
    """The decoded pixels of a run's images, by item index, kept after their first decode.

    Args:
        n: number of images.
        size: (height, width) of the model's input.
        folder: where the temporary file goes when the pixels do not fit in memory.
        memory_limit: most bytes kept in memory (default: a quarter of what is available).

    Attributes:
        where: "memory" or "file"; path: the temporary file, if any; nbytes: its size.
    """

    def __init__(self, n: int, size: tuple[int, int], folder: str | None = None,
                 memory_limit: int | None = None):
        shape = (max(1, n), size[0], size[1], 3)
        self.nbytes = int(np.prod(shape))
        if memory_limit is None:
            free = available_memory()
            memory_limit = int(free * MEMORY_FRACTION) if free else 1 << 30
        self.path = None
        if self.nbytes <= memory_limit or folder is None:
            self.where, self.pixels = "memory", np.empty(shape, dtype=np.uint8)
        else:
            os.makedirs(folder, exist_ok=True)
            self.where = "file"
            self.path = os.path.join(folder, f"pixels-{uuid.uuid4().hex[:12]}.tmp")
            self.pixels = np.memmap(self.path, dtype=np.uint8, mode="w+", shape=shape)
        self.state = np.zeros(max(1, n), dtype=np.int8)  # 0: not yet, 1: decoded, -1: unreadable

    def has(self, indices) -> bool:
        return bool(np.all(self.state[indices] != 0))

    def put(self, index: int, pixels: np.ndarray | None) -> None:
        if pixels is None:
            self.state[index] = -1
        else:
            self.pixels[index] = pixels
            self.state[index] = 1

    def get(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(indices that decoded, their pixels), in the order given."""
        indices = np.asarray(indices)
        kept = indices[self.state[indices] == 1]
        return kept, np.asarray(self.pixels[kept])

    def describe(self) -> dict:
        return {"where": self.where, "bytes": self.nbytes, "path": self.path}

    def close(self) -> None:
        """Free the pixels and remove the temporary file."""
        if self.where == "file":
            del self.pixels
            try:
                os.remove(self.path)
            except OSError:
                pass
        self.pixels = None


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch), 7]).permutation(n)


def image_batches(keras, items: list[Item], resize: ResizeSpec, n_classes: int, batch_size: int,
                  shuffle: bool, seed: int = 0, first_epoch: int = 0, workers: int | None = None,
                  class_weights: np.ndarray | None = None, store: PixelStore | None = None):
    """A PyDataset of (pixels, one-hot labels[, sample weights]) batches.

    Args:
        items: the images with their class indices (`Item.label`).
        first_epoch: epoch number of the first pass (resuming continues the order).
        store: keeps the decoded pixels for later epochs (None: decode every epoch).

    The dataset's `decode_seconds` adds up the CPU seconds spent decoding
    files; `take_decode_seconds()` returns them and starts again from 0.
    """
    workers = default_workers(workers)
    position = {item: i for i, item in enumerate(items)}

    class ImageBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = first_epoch
            self._stream = None
            self._next = 0
            self._order: list[Item] = []
            self._indices = np.arange(len(items))
            self.decode_seconds = 0.0
            self._plan()

        def _plan(self):
            if shuffle:
                self._indices = epoch_order(len(items), seed, self.epoch)
            self._order = [items[i] for i in self._indices]
            self._stream = None

        def take_decode_seconds(self) -> float:
            seconds, self.decode_seconds = self.decode_seconds, 0.0
            return seconds

        def _decoded(self, index):
            """(labels, uint8 pixels) of batch `index`, from the store or decoded now."""
            wanted = self._indices[index * batch_size:(index + 1) * batch_size]
            if store is not None and store.has(wanted):
                kept, pixels = store.get(wanted)
                return np.array([items[i].label for i in kept], dtype=np.int64), pixels
            if self._stream is None or index != self._next:
                # (re)start the prefetching stream at this batch
                self._stream = decoded_batches(self._order[index * batch_size:], resize, batch_size,
                                               workers)
                self._next = index
            batch = next(self._stream)
            self._next += 1
            self.decode_seconds += batch.decode_seconds
            if store is not None:
                for k, item in enumerate(batch.items):
                    store.put(position[item], batch.pixels[k])
                for item, _ in batch.failures:
                    store.put(position[item], None)
            return np.array([it.label for it in batch.items], dtype=np.int64), batch.pixels

        def __len__(self):
            return math.ceil(len(items) / batch_size)

        def __getitem__(self, index):
            labels, pixels = self._decoded(index)
            pixels = pixels.astype(np.float32)
            targets = np.eye(n_classes, dtype=np.float32)[labels]
            if class_weights is None:
                return pixels, targets
            return pixels, targets, class_weights[labels]

        def on_epoch_end(self):
            self.epoch += 1
            self._plan()

    return ImageBatches()
