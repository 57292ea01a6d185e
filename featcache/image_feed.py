"""Feed decoded images to Keras training, through the extraction engine's pipeline.

`image_batches` wraps `featcache.pipeline.decoded_batches` (parallel decode
and resize, prefetched ahead of the model) in a `keras.utils.PyDataset`. Each
epoch visits the images in a new order drawn from (seed, epoch), so an
interrupted run resumed at epoch k sees exactly the batches it would have.
Images that fail to decode are left out of their batch.
"""

from __future__ import annotations

import math

import numpy as np

from .decode import ResizeSpec
from .pipeline import Item, decoded_batches, default_workers


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch), 7]).permutation(n)


def image_batches(keras, items: list[Item], resize: ResizeSpec, n_classes: int, batch_size: int,
                  shuffle: bool, seed: int = 0, first_epoch: int = 0, workers: int | None = None,
                  class_weights: np.ndarray | None = None):
    """A PyDataset of (pixels, one-hot labels[, sample weights]) batches.

    Args:
        items: the images with their class indices (`Item.label`).
        first_epoch: epoch number of the first pass (resuming continues the order).
    """
    workers = default_workers(workers)

    class ImageBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = first_epoch
            self._stream = None
            self._next = 0
            self._order: list[Item] = []
            self._plan()

        def _plan(self):
            if shuffle:
                self._order = [items[i] for i in epoch_order(len(items), seed, self.epoch)]
            else:
                self._order = list(items)
            self._stream = None

        def __len__(self):
            return math.ceil(len(items) / batch_size)

        def __getitem__(self, index):
            if self._stream is None or index != self._next:
                # (re)start the prefetching stream at this batch
                self._stream = decoded_batches(self._order[index * batch_size:], resize, batch_size,
                                               workers)
                self._next = index
            batch = next(self._stream)
            self._next += 1
            labels = np.array([it.label for it in batch.items], dtype=np.int64)
            pixels = batch.pixels.astype(np.float32)
            targets = np.eye(n_classes, dtype=np.float32)[labels]
            if class_weights is None:
                return pixels, targets
            return pixels, targets, class_weights[labels]

        def on_epoch_end(self):
            self.epoch += 1
            self._plan()

    return ImageBatches()
