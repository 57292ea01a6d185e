"""Decide which pretrained weights a backbone loads, and identify them.

`--weights imagenet` (the default) first looks for Keras' own file name in an
offline folder (`--weights-dir` or FEATCACHE_WEIGHTS_DIR, flat or laid out as
`<dir>/models/<file>` like KERAS_HOME), then lets Keras use its cache or
download. `--weights PATH` loads a file; `--weights none` builds a randomly
initialised network, whose features are meaningless.

The identity recorded in the cache fingerprint is the sha256 of the bytes
actually loaded, so two runs agree exactly when their weights do.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .backbones import BACKBONES, BackboneSpec, list_backbones
from .errors import UsageError

ENV_WEIGHTS_DIR = "FEATCACHE_WEIGHTS_DIR"

RANDOM_WEIGHTS_WARNING = (
    "{param:weights} none: the backbone is randomly initialised. Its features are "
    "meaningless for transfer learning; use this only to test plumbing."
)


@dataclass(frozen=True)
class WeightsChoice:
    """What the builder should load.

    Attributes:
        source: "imagenet", "file" or "none".
        path: local file to load, or None when Keras should use its own cache
            or download (source "imagenet") or nothing is loaded ("none").
        file_name: Keras' file name for ImageNet weights, else the file's name.
        looked_in: offline folders searched for `file_name` (for error messages).
    """

    source: str
    path: str | None
    file_name: str | None
    looked_in: tuple[str, ...] = ()


def weights_dir(explicit: str | None = None) -> str | None:
    """The offline weights folder: the flag, else FEATCACHE_WEIGHTS_DIR, else None."""
    return explicit or os.environ.get(ENV_WEIGHTS_DIR) or None


def resolve_weights(
    spec: BackboneSpec,
    weights: str,
    image_size: int,
    include_top: bool = False,
    offline_dir: str | None = None,
) -> WeightsChoice:
    """Turn the --weights value into a concrete choice.

    Raises:
        UsageError: a path that does not exist, or a folder given as --weights.
    """
    if weights is None or weights.lower() in ("none", "random"):
        return WeightsChoice("none", None, None)
    if weights.lower() == "imagenet":
        file_name = spec.weights_file_for(image_size, include_top)
        folder = weights_dir(offline_dir)
        looked_in: tuple[str, ...] = ()
        if folder:
            candidates = [Path(folder) / file_name, Path(folder) / "models" / file_name]
            looked_in = tuple(str(c.parent) for c in candidates)
            for candidate in candidates:
                if candidate.is_file():
                    return WeightsChoice("imagenet", str(candidate.resolve()), file_name, looked_in)
        return WeightsChoice("imagenet", None, file_name, looked_in)
    path = Path(weights).expanduser()
    if path.is_dir():
        raise UsageError(
            f"{{param:weights}} {weights}: is a folder. Pass a weights file, or pass the folder "
            f"as {{param:weights_dir}} (or {ENV_WEIGHTS_DIR}) with {{param:weights}} imagenet."
        )
    if not path.is_file():
        raise UsageError(
            f"{{param:weights}} {weights}: no such file. Use 'imagenet', 'none', or the path of "
            "a Keras weights file (.h5 or .weights.h5)."
        )
    return WeightsChoice("file", str(path.resolve()), path.name)


def keras_cache_path(file_name: str) -> str | None:
    """Where Keras' `get_file` keeps `file_name` once downloaded, if it is there."""
    from ._keras import import_keras

    keras = import_keras()
    home = os.path.expanduser(keras.config.keras_home())
    bases = [home]
    if not os.access(home, os.W_OK):  # Keras falls back to a temporary folder
        bases.append(os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras"))
    for base in bases:
        candidate = os.path.join(base, "models", file_name)
        if os.path.isfile(candidate):
            return candidate
    return None


def offline_hint(choice: WeightsChoice) -> str:
    """One sentence telling the user how to supply ImageNet weights offline."""
    where = f" (looked in {', '.join(choice.looked_in)})" if choice.looked_in else ""
    return (
        f"Put {choice.file_name} in a folder and pass {{param:weights_dir}} DIR or set "
        f"{ENV_WEIGHTS_DIR}=DIR{where}, or pass {{param:weights}} PATH."
    )


@dataclass(frozen=True)
class BackboneListing:
    """Every registered backbone, with whether its ImageNet weights are offline.

    Attributes:
        weights_dir: the offline folder searched, or None when none is set.
        backbones: one dict per backbone, sorted by name: "name", "builder",
            "preprocess", "input_size", "min_size", "weights_file" (Keras' file
            name for the weights without the top), "offline_weights" (its path
            in `weights_dir`, or None) and "top_layers".
    """

    weights_dir: str | None
    backbones: list[dict]

    def to_json(self) -> list[dict]:
        return self.backbones


def list_backbone_weights(explicit_dir: str | None = None) -> BackboneListing:
    """List the registered backbones and look for their weights offline.

    Args:
        explicit_dir: offline weights folder; None for FEATCACHE_WEIGHTS_DIR
            (and no lookup when that is unset too).

    Returns:
        The registry as rows, with the offline weight files found.
    """
    offline = weights_dir(explicit_dir)
    rows = []
    for name in list_backbones():
        spec = BACKBONES[name]
        choice = resolve_weights(spec, "imagenet", spec.input_size, False, offline)
        rows.append({
            "name": name, "builder": f"keras.applications.{spec.builder}",
            "preprocess": spec.preprocess, "input_size": spec.input_size, "min_size": spec.min_size,
            "weights_file": choice.file_name, "offline_weights": choice.path,
            "top_layers": list(spec.top_layers),
            # what `featcache finetune` trains by default
            "top_block": spec.top_block or f"after {spec.top_block_after}",
        })
    return BackboneListing(offline, rows)
