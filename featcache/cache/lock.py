"""One writer per cache folder: an exclusive advisory lock held while writing.

The lock is a `flock`; a child forked without exec closes its copy as it starts
(forksafe.py), so it never keeps the folder locked after this process let go.
"""

from __future__ import annotations

import os
import time

from ..errors import CacheLockedError
from . import forksafe
from .layout import LOCK_FILE


_HELD: set[str] = set()  # lock files this process holds
_INHERITED_WAIT = 30.0  # seconds to wait out a forked child's copy of our own lock


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
        deadline = time.monotonic() + _INHERITED_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                os.lseek(fd, 0, os.SEEK_SET)
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                # this process wrote the pid but holds no lock here: a child forked from it
                # (with a descriptor registered too late to close) still has a copy; such
                # children are short-lived, so wait for it rather than refuse
                if (holder == str(os.getpid()) and self.path not in _HELD
                        and time.monotonic() < deadline):
                    time.sleep(0.2)
                    continue
                os.close(fd)
                raise CacheLockedError(
                    f"{os.path.dirname(self.path)} is being written by another featcache process "
                    f"(pid {holder}). Wait for it to finish, or write to another {{param:out}}."
                ) from None
        forksafe.register(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        _HELD.add(self.path)
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            _HELD.discard(self.path)
            forksafe.unregister(self._fd)
            os.close(self._fd)  # closing releases the flock
            self._fd = None
