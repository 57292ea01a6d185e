"""One writer per cache folder: an exclusive advisory lock held while writing.

The lock is a `flock`, which belongs to the open file, so a child made by a
bare `fork` (no exec) would share it and keep the folder locked after this
process let go. Libraries do fork behind our back (OpenVINO's converter
forks to send usage statistics), so every child closes its copies of the
held locks' descriptors as it starts.
"""

from __future__ import annotations

import os

from ..errors import CacheLockedError
from .layout import LOCK_FILE

_HELD: set[int] = set()  # descriptors of the locks this process holds


def _close_in_child() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


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
                f"(pid {holder}). Wait for it to finish, or write to another {{param:out}}."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        _HELD.add(fd)
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            _HELD.discard(self._fd)
            os.close(self._fd)  # closing releases the flock
            self._fd = None
