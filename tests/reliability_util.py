"""Helpers shared by the reliability tests (tests/extract/, test_bad_inputs.py, test_verify.py, test_trust.py, test_fingerprints.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

import featcache
from conftest import REPO


def child_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "FEATCACHE_WEIGHTS_DIR"}


def spawn(*args: str, **kw) -> subprocess.Popen:
    """Start `python -m featcache ARGS` as a real child process."""
    return subprocess.Popen([sys.executable, "-m", "featcache", *args], cwd=str(REPO),
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def assert_one_line_error(stderr: str, *needles: str) -> str:
    """The user-error contract: no traceback, one `featcache: error:` line naming things."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.startswith("featcache: error:")]
    assert len(lines) == 1, stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_same_cache(a: str, b: str, splits=None) -> int:
    """Two caches hold the same rows (paths, hashes, labels) and equal features; returns rows."""
    rows = 0
    ca, cb = featcache.cache.FeatureCache(a), featcache.cache.FeatureCache(b)
    assert ca.class_names == cb.class_names and ca.splits == cb.splits
    for split in splits or ca.splits:
        x, y = ca.read(split), cb.read(split)
        assert x.paths == y.paths and x.hashes == y.hashes
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.features, y.features)
        rows += len(x)
    return rows
