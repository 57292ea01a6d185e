"""Descriptors a child made by a bare `fork` (no exec) closes as it starts.

A `flock` (the cache lock, HDF5's own file lock) belongs to the open file, so a
forked child that inherited the descriptor keeps the lock after this process
lets go: the next writer is refused, and a finished shard cannot be opened.
Libraries fork behind our back, at moments we do not choose (OpenVINO's model
converter forks from a background thread to send usage statistics). Every
descriptor registered here is closed in such a child at once; the child never
uses them, and the parent's copies are untouched.
"""

from __future__ import annotations

import os

_OPEN: dict[int, tuple[int, int]] = {}  # fd -> (st_dev, st_ino) of the file it was registered for


def register(fd: int) -> None:
    try:
        st = os.fstat(fd)
    except OSError:
        return
    _OPEN[fd] = (st.st_dev, st.st_ino)


def unregister(fd: int) -> None:
    _OPEN.pop(fd, None)


def _close_in_child() -> None:
    for fd, identity in list(_OPEN.items()):
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == identity:
                os.close(fd)
        except OSError:
            pass
    _OPEN.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)
