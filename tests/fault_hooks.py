"""Test-only faults passed into the product as ordinary arguments (`extract(after_batch=...)`).

Picklable by reference (this module is importable on the Dask worker processes,
which inherit the test process's sys.path).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class KillOnceAfterBatch:
    """The first process to get here while `marker`'s folder exists SIGKILLs itself.

    It first writes "PID SHARD" into `marker`, so the test can tell which
    worker died in which shard; later calls (the retried task) do nothing.
    """

    marker: str

    def __call__(self, writer) -> None:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except (FileExistsError, FileNotFoundError):
            return
        os.write(fd, f"{os.getpid()} {writer.relpath}\n".encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
