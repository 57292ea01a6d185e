"""Exceptions featcache raises for problems a user can fix.

Every error here carries a message meant to be printed as one line: what was
wrong, what was received, and what to do. The CLI turns any `FeatcacheError`
into that line and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class FeatcacheError(Exception):
    """Base class: a problem with the user's input, files or environment."""


class UsageError(FeatcacheError, ValueError):
    """A flag or argument has a value featcache cannot use."""


class DataError(FeatcacheError):
    """The image folder or list cannot be used (missing, empty, inconsistent)."""


class BadImageError(DataError):
    """One image file could not be read or decoded.

    Attributes:
        path: the file, as given to the decoder.
        reason: a short human explanation, e.g. "truncated JPEG".
    """

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class WeightsError(FeatcacheError):
    """Pretrained weights could not be found, downloaded or loaded."""


class BackendError(FeatcacheError):
    """The Keras backend needed for this command is not installed or usable."""


class CacheError(FeatcacheError):
    """A feature cache is missing, incomplete, damaged or busy."""


class CacheLockedError(CacheError):
    """Another process is writing to the same cache."""


class FingerprintMismatchError(CacheError):
    """Features made one way were about to be mixed with features made another way.

    Attributes:
        differences: one line per differing field, "field: cache has X, this run has Y".
    """

    def __init__(self, message: str, differences: list[str]):
        self.differences = list(differences)
        super().__init__(message)


class FeatcacheWarning(UserWarning):
    """Something the user should know that does not stop the command."""


class ExportError(FeatcacheError):
    """A trained head cannot be turned into Keras layers."""
