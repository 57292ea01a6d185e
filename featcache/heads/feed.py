"""Feed training rows to a head: a cache split in memory or streamed from HDF5, or arrays.

Training order is the same either way. Each epoch, rows are grouped into
blocks of consecutive rows, the blocks are shuffled, consecutive shuffled
blocks form windows, and rows are shuffled within each window. The schedule
depends only on the row count, the seed, the epoch and the window size, so a
head trained from a streamed cache under a small memory budget equals the one
trained in memory with the same seed. Streaming holds at most two windows.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..cache import FeatureCache, SplitReader

WINDOW_BYTES = 64 << 20
BLOCK_BYTES = 256 << 10
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str | int | None, flag: str = "{param:max_memory}") -> int | None:
    """'512MB', '2G', '1.5GiB' or a byte count -> bytes."""
    if text is None or isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise UsageError(f"{flag} {text}: expected a size such as 512MB or 2GB.")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit])


def default_memory_budget() -> int:
    """Half of this machine's physical memory (4 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@dataclass(frozen=True)
class Window:
    """Rows of one shuffle window: `rows` sorted (how they are read), `order` shuffled."""

    rows: np.ndarray
    order: np.ndarray


def epoch_windows(n_rows: int, block_rows: int, window_rows: int, seed: int, epoch: int) -> list[Window]:
    """The training order of one epoch as a list of windows (pure function)."""
    rng = np.random.default_rng([int(seed), int(epoch)])
    n_blocks = max(1, math.ceil(n_rows / block_rows))
    block_order = rng.permutation(n_blocks)
    per_window = max(1, window_rows // block_rows)
    windows = []
    for start in range(0, n_blocks, per_window):
        blocks = np.sort(block_order[start:start + per_window])
        rows = np.concatenate([np.arange(b * block_rows, min(n_rows, (b + 1) * block_rows))
                               for b in blocks])
        windows.append(Window(rows, rng.permutation(rows)))
    return windows


class _Rows:
    """What both kinds of split share: sizes in the float32 heads train in."""

    feature_shape: tuple[int, ...]
    n_rows: int

    @property
    def row_bytes(self) -> int:
        """Bytes of one row as float32, the dtype heads train in."""
        return 4 * int(np.prod(self.feature_shape))

    @property
    def nbytes(self) -> int:
        return self.row_bytes * self.n_rows


class FeatureSplit(_Rows):
    """One split of a cache as a head sees it.

    Labels are always in memory. Features are loaded whole when `in_memory`,
    otherwise read block by block from the HDF5 shards.

    Args:
        cache: the cache.
        split: split name.
        in_memory: load the features now (True) or stream them (False).
    """

    def __init__(self, cache: FeatureCache, split: str, in_memory: bool):
        self.cache = cache
        self.split = split
        self.feature_shape = cache.feature_shape
        self.class_names = cache.class_names
        self.label_names = cache.label_names
        # multi-label caches: row label -> its 0/1 label vector (featcache.multilabel)
        self.label_indicator = cache.label_indicator() if cache.multi_label else None
        self.in_memory = in_memory
        self._reader = SplitReader(cache, split)
        self.n_rows = self._reader.n_rows
        if in_memory:
            data = cache.read(split, dtype="float32")
            self._features = data.features
            self.labels = data.labels
        else:
            self._features = None
            self.labels = self._reader.labels()

    def close(self) -> None:
        self._reader.close()

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Features of row indices (sorted when streaming), as float32."""
        if self._features is not None:
            return self._features[rows]
        return self._reader.read_rows(rows, np.float32)

    def all_features(self) -> np.ndarray:
        """Every row, in order (loads them if streaming)."""
        if self._features is not None:
            return self._features
        return self.read_rows(np.arange(self.n_rows))


class ArraySplit(_Rows):
    """Arrays in memory with the interface of `FeatureSplit`, so `fit(X, y)` and
    `fit_cache` share one training loop.

    Args:
        features: rows (N, *feature_shape), float32.
        labels: label indices (N,), in 0..len(class_names) - 1.
        class_names: the classes, in label order.
        split: a name for messages.
        label_indicator: multi-label: (sets, L) 0/1 matrix that `labels` index.
    """

    cache = None
    in_memory = True

    def __init__(self, features: np.ndarray, labels: np.ndarray, class_names: list, split: str = "X",
                 label_indicator: np.ndarray | None = None):
        self._features = np.asarray(features, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.label_names = self.class_names
        self.label_indicator = label_indicator
        self.feature_shape = tuple(self._features.shape[1:])
        self.split = split
        self.n_rows = len(self._features)

    def close(self) -> None:
        pass

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        return self._features[rows]

    def all_features(self) -> np.ndarray:
        return self._features


def block_rows_for(row_bytes: int) -> int:
    return max(1, BLOCK_BYTES // max(1, row_bytes))


def window_rows_for(row_bytes: int, batch_size: int, requested: int | None = None) -> int:
    """Rows per shuffle window: `requested`, else about 64 MiB of rows."""
    rows = requested if requested else WINDOW_BYTES // max(1, row_bytes)
    return max(int(rows), int(batch_size), 1)


class Schedule:
    """Batches of one split in the training order of each epoch.

    `batch(i)` returns (features, labels, row indices) of batch i of the
    current epoch; `next_epoch()` moves on. With `shuffle=False` rows come
    in stored order (evaluation).
    """

    def __init__(self, data: FeatureSplit, batch_size: int, seed: int = 0, shuffle: bool = True,
                 window_rows: int | None = None):
        self.data = data
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.block_rows = block_rows_for(data.row_bytes)
        self.window_rows = window_rows_for(data.row_bytes, batch_size, window_rows)
        self.epoch = 0
        self._windows: list[Window] = []
        self._bounds = np.zeros(1, dtype=np.int64)
        self._loaded: dict[int, np.ndarray] = {}
        self._plan()

    def __len__(self) -> int:
        return math.ceil(self.data.n_rows / self.batch_size)

    @property
    def window_bytes(self) -> int:
        return self.window_rows * self.data.row_bytes

    def _plan(self) -> None:
        n = self.data.n_rows
        if self.shuffle:
            self._windows = epoch_windows(n, self.block_rows, self.window_rows, self.seed, self.epoch)
        else:
            self._windows = [Window(rows, rows) for rows in np.array_split(
                np.arange(n), max(1, math.ceil(n / self.window_rows)))]
        self._bounds = np.cumsum([0] + [len(w.order) for w in self._windows])
        self._loaded = {}

    def next_epoch(self) -> None:
        self.epoch += 1
        self._plan()

    def order(self) -> np.ndarray:
        """All row indices of this epoch in training order."""
        return np.concatenate([w.order for w in self._windows])

    def _window(self, index: int) -> np.ndarray:
        if index not in self._loaded:
            for old in [k for k in self._loaded if k < index - 1]:
                del self._loaded[old]  # keep at most the previous and this window
            self._loaded[index] = self.data.read_rows(self._windows[index].rows)
        return self._loaded[index]

    def batch(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        start, stop = i * self.batch_size, min((i + 1) * self.batch_size, self.data.n_rows)
        parts, rows = [], []
        first = int(np.searchsorted(self._bounds, start, side="right") - 1)
        w = first
        while start < stop:
            lo, hi = int(self._bounds[w]), int(self._bounds[w + 1])
            take = self._windows[w].order[start - lo:min(stop, hi) - lo]
            if self.data.in_memory:
                parts.append(self.data.read_rows(take))
            else:  # the window was read in sorted row order
                parts.append(self._window(w)[np.searchsorted(self._windows[w].rows, take)])
            rows.append(take)
            start = min(stop, hi)
            w += 1
        taken = np.concatenate(rows)
        return np.concatenate(parts), self.data.labels[taken], taken
