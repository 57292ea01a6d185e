"""Shared fixtures: real datasets and offline weights, and generated image folders.

The development machines and CI keep real data and ImageNet weights in a
`shared/` folder beside the checkout. Tests find it through environment
variables (FEATCACHE_TEST_DATA, FEATCACHE_WEIGHTS_DIR) or, failing that, at
`../shared`. Tests that need it skip when it is absent, unless
FEATCACHE_REQUIRE_SHARED=1 (set by .ci/run), where a skip would hide a broken
setup and they fail instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
# `--runtime auto` means Keras in tests on every CPU, module- and session-scoped fixtures
# included (the function-scoped _isolated_environment below sets it again for each test)
os.environ["FEATCACHE_RUNTIME"] = "keras"
SHARED = Path(os.environ.get("FEATCACHE_SHARED", REPO.parent / "shared"))


def _require(path: Path | None, what: str) -> Path:
    if path is not None and path.exists():
        return path
    message = f"{what} not found ({path}); set the environment variable or provide ../shared"
    if os.environ.get("FEATCACHE_REQUIRE_SHARED") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """Folder with Keras' ImageNet weight files for MobileNet and VGG16 (no top)."""
    env = os.environ.get("FEATCACHE_WEIGHTS_DIR")
    return _require(Path(env) if env else SHARED / "weights", "offline weights (FEATCACHE_WEIGHTS_DIR)")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder of the real test datasets (tiny_flowers5, tiny_imagenette, ...)."""
    env = os.environ.get("FEATCACHE_TEST_DATA")
    return _require(Path(env) if env else SHARED / "data", "test datasets (FEATCACHE_TEST_DATA)")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path_factory):
    """Tests pass weights folders explicitly, and keep their trust store to themselves.

    `--runtime auto` means Keras in tests on every CPU (FEATCACHE_RUNTIME), so the
    default run does the same work everywhere; the OpenVINO tests ask for it.
    """
    monkeypatch.delenv("FEATCACHE_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("FEATCACHE_RUNTIME", "keras")
    monkeypatch.setenv("FEATCACHE_TRUST_STORE",
                       str(tmp_path_factory.getbasetemp() / "trusted-models.txt"))


@pytest.fixture(scope="session")
def mobilenet_cache(tmp_path_factory, data_root, weights_dir):
    """Factory: a MobileNet (real weights, 224 px, avg pooling) cache of a real dataset, built once."""
    from featcache.extract import ExtractOptions, extract

    built: dict[str, str] = {}

    def get(dataset: str, **options) -> str:
        key = dataset + repr(sorted(options.items()))
        if key not in built:
            out = tmp_path_factory.mktemp(f"cache-{dataset}")
            extract(ExtractOptions(data=str(data_root / dataset), out=str(out), backbone="mobilenet",
                                   weights_dir=str(weights_dir), progress=False, **options))
            built[key] = str(out)
        return built[key]

    return get


def solid_image(color, size=(40, 30), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def make_folder(root: Path, layout: dict[str, dict[str, int]], size=(40, 30)) -> Path:
    """Write a class-folder tree of small JPEGs: {split_or_class: {class: count}}.

    With keys "train"/"val"/"test" the first level is splits; otherwise pass
    {"": {class: count}} for a tree without split folders.
    """
    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for class_name, count in classes.items():
            folder = root / split / class_name if split else root / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{class_name}_{i:03d}.jpg", quality=90)
    return root


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    """A generated two-class folder with train/ and val/ splits (12 images)."""
    return make_folder(tmp_path / "data", {"train": {"cats": 4, "dogs": 4},
                                           "val": {"cats": 2, "dogs": 2}})


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m featcache ARGS` in a real subprocess."""
    full_env = {k: v for k, v in os.environ.items() if k != "FEATCACHE_WEIGHTS_DIR"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "featcache", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=str(REPO))
