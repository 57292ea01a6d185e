"""The cache key: everything that shapes the features, and how two keys differ.

A fingerprint is plain JSON data: the resolved feature extractor (backbone,
weights sha256, input size, layer, pooling, preprocessing coefficients, feature
shape), the resize and colour handling, the storage dtype, the library versions
and featcache's store format version. Its hash is the sha256 of its canonical
JSON. Every reader and writer compares fingerprints and refuses to mix features
whose fingerprints differ, naming the fields that differ.
"""

from __future__ import annotations

import hashlib
import json

from .errors import FingerprintMismatchError

FORMAT_VERSION = 1


def make_fingerprint(extractor: dict, resize: dict, dtype: str, versions: dict) -> dict:
    """Assemble a fingerprint from the described parts.

    Args:
        extractor: `FeatureExtractor.describe()`.
        resize: `ResizeSpec.describe()`.
        dtype: storage dtype of the features, "float16" or "float32".
        versions: library versions (Keras, backend, Pillow).
    """
    return {
        "format_version": FORMAT_VERSION,
        **extractor,
        "resize": resize,
        "dtype": dtype,
        "versions": versions,
    }


def library_versions() -> dict:
    """Library versions that can change features: Keras, its backend, Pillow."""
    import PIL

    from ._keras import backend_info

    return {**backend_info(), "pillow": PIL.__version__}


def canonical_json(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def fingerprint_hash(fingerprint: dict) -> str:
    """Hex sha256 of the canonical JSON of a fingerprint."""
    return hashlib.sha256(canonical_json(fingerprint).encode("utf-8")).hexdigest()


def _flatten(data, prefix: str = "") -> dict:
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 70 else text[:67] + "..."


def differences(expected: dict, actual: dict) -> list[str]:
    """One line per field that differs, "field: cache has X, this run has Y".

    Fields nested in dicts are named with dots (e.g. "weights.sha256").
    """
    a, b = _flatten(expected), _flatten(actual)
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            lines.append(f"{key}: cache has {_short(a.get(key, '<absent>'))}, "
                         f"this run has {_short(b.get(key, '<absent>'))}")
    return lines


def check_same(expected: dict, actual: dict, what: str, remedy: str) -> None:
    """Raise FingerprintMismatchError naming what differs, if anything does.

    Args:
        expected: fingerprint stored with the cache.
        actual: fingerprint of what is being mixed in.
        what: the thing refused, e.g. "cache ./feats".
        remedy: what the user can do, appended to the message.
    """
    diff = differences(expected, actual)
    if not diff:
        return
    shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
    raise FingerprintMismatchError(
        f"{what} was made with different settings ({shown}). {remedy}", diff
    )
