"""Exceptions featcache raises for problems a user can fix.

Every error here carries a message meant to be printed as one line: what was
wrong, what was received, and what to do. The CLI turns any `FeatcacheError`
into that line and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re

# A message names a parameter as {param:NAME}. Raised from Python it reads as the
# parameter ("batch_size=0: must be at least 1."); the CLI shows the flag instead
# ("--batch-size=0: must be at least 1."), so library users are never told about flags.
# "{param:NAME}=True" names a switch: "trust=True" in Python, plain "--trust" on the CLI.
_PARAM = re.compile(r"\{param:([A-Za-z_][A-Za-z0-9_]*)\}(=True)?")
# parameters whose flag is not "--" + the name with dashes
_FLAG_SPELLING = {"C": "--C", "data": "--data", "out": "--out"}


def param(name: str) -> str:
    """The token for parameter `name` inside an error message."""
    return "{param:" + name + "}"


def flag_for(name: str) -> str:
    """The command-line spelling of a library parameter."""
    return _FLAG_SPELLING.get(name, "--" + name.replace("_", "-"))


def plain(text: str) -> str:
    """A message with its parameter tokens as Python names."""
    return _PARAM.sub(lambda m: m.group(1) + (m.group(2) or ""), text)


def with_flags(text: str) -> str:
    """A message with its parameter tokens as command-line flags."""
    return _PARAM.sub(lambda m: flag_for(m.group(1)), text)


class FeatcacheError(Exception):
    """Base class: a problem with the user's input, files or environment.

    `str(error)` names parameters as Python spells them; `cli_message()` as
    the command line does.
    """

    def __str__(self) -> str:
        return plain(super().__str__())

    def cli_message(self) -> str:
        return with_flags(super().__str__())


class UsageError(FeatcacheError, ValueError):
    """A flag or argument has a value featcache cannot use."""


class ParameterError(UsageError):
    """One parameter has a value featcache cannot use.

    Attributes:
        param: the parameter's name in the Python API (e.g. "batch_size").
        value: the value received.
    """

    def __init__(self, name: str, value, problem: str):
        self.param = name
        self.value = value
        self.problem = problem
        super().__init__(f"{param(name)}={value}: {problem}")

    def __reduce__(self):  # picklable across processes (Dask workers)
        return type(self), (self.param, self.value, self.problem)


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
        self.reason = plain(reason)  # recorded in manifests as plain text
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):
        return type(self), (self.path, self.reason)


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

    def __reduce__(self):
        return type(self), (Exception.__str__(self), self.differences)


class FeatcacheWarning(UserWarning):
    """Something the user should know that does not stop the command.

    Like errors, its text names parameters as {param:NAME}.
    """

    def __str__(self) -> str:
        return plain(super().__str__())

    def cli_message(self) -> str:
        return with_flags(super().__str__())


class ExportError(FeatcacheError):
    """A trained head cannot be turned into Keras layers."""
