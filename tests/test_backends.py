"""Extraction on Keras' JAX and PyTorch backends, in processes that never import TensorFlow.

The GPU machines featcache is measured on have JAX and PyTorch but no
TensorFlow, so the extraction path must not need it. Each test runs a real
subprocess with KERAS_BACKEND set, checks TensorFlow was never imported, and
compares its features with the TensorFlow backend's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

import featcache
from featcache.errors import FingerprintMismatchError
from featcache.extract import ExtractOptions, extract

SCRIPT = """
import json, sys
from featcache.extract import ExtractOptions, extract
summary = extract(ExtractOptions(data=sys.argv[1], out=sys.argv[2], backbone="mobilenet",
                                 weights_dir=sys.argv[3], batch_size=8, progress=False))
import keras
print(json.dumps({"backend": keras.backend.backend(), "rows": summary.splits,
                  "tensorflow_imported": "tensorflow" in sys.modules}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_extraction_runs_without_tensorflow_and_matches_it(backend, data_root, weights_dir, tmp_path):
    if importlib.util.find_spec(backend) is None:
        if os.environ.get("FEATCACHE_REQUIRE_BACKENDS") == "1":
            pytest.fail(f"{backend} is not installed but FEATCACHE_REQUIRE_BACKENDS=1")
        pytest.skip(f"{backend} is not installed")
    data = data_root / "tiny_hymenoptera"
    env = {**os.environ, "KERAS_BACKEND": backend}
    env.pop("FEATCACHE_WEIGHTS_DIR", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(data), str(tmp_path / backend),
                           str(weights_dir)], capture_output=True, text=True, env=env,
                          cwd=str(REPO), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"backend": backend, "rows": {"train": 16, "val": 8},
                      "tensorflow_imported": False}

    reference = extract(ExtractOptions(data=str(data), out=str(tmp_path / "tf"), backbone="mobilenet",
                                       weights_dir=str(weights_dir), batch_size=8, progress=False))
    for split in ("train", "val"):
        other = featcache.load_features(str(tmp_path / backend), split)
        ours = featcache.load_features(reference.cache, split)
        assert other.paths == ours.paths
        np.testing.assert_allclose(other.features, ours.features, rtol=1e-3, atol=1e-3)
    # the backend is part of the fingerprint: caches from two backends never mix
    with pytest.raises(FingerprintMismatchError, match="versions.backend"):
        extract(ExtractOptions(data=str(data), out=str(tmp_path / backend), backbone="mobilenet",
                               weights_dir=str(weights_dir), batch_size=8, progress=False))
