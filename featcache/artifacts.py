"""A trained head's folder: the model, what made it, and loading it back safely.

Layout of a head folder::

    model.keras | model.joblib   the head (Keras heads | scikit-learn heads)
    config.json                  head name, resolved options, classes, feature
                                 shape, the model file's sha256, the cache it
                                 was trained on and how to rebuild its backbone
    fingerprint.json             the cache fingerprint (what shaped the features)
    metrics.json, history.json   scores on the validation split, training curves
    history.png, confusion_matrix.png

Keras models load with `safe_mode=True`. scikit-learn models are pickles,
which can run code when loaded, so featcache loads one only if its sha256
matches config.json and is in this user's trust store (featcache records
every model it writes there), unless the caller passes `trust=True`.
"""

from __future__ import annotations

import os
import time

from ._version import __version__
from .errors import CacheError, UsageError
from .fileio import read_json, sha256_file, write_json_atomic
from .heads import Head, HeadOptions, create_head, get_head_spec

CONFIG_FILE = "config.json"
FINGERPRINT_FILE = "fingerprint.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
ENV_TRUST_STORE = "FEATCACHE_TRUST_STORE"
HEAD_FORMAT = 1


def trust_store_path() -> str:
    """File listing the sha256 of every pickled model featcache wrote for this user."""
    if os.environ.get(ENV_TRUST_STORE):
        return os.environ[ENV_TRUST_STORE]
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "featcache", "trusted-models.txt")


def _remember(digest: str) -> None:
    path = trust_store_path()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a", encoding="ascii") as fh:
        fh.write(digest + "\n")


def _is_trusted(digest: str) -> bool:
    try:
        with open(trust_store_path(), encoding="ascii") as fh:
            return any(line.strip() == digest for line in fh)
    except OSError:
        return False


def prepare_out_folder(out: str) -> str:
    """Create --out, or reuse it if it holds a previous head; refuse anything else."""
    out = os.path.abspath(out)
    if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, CONFIG_FILE)):
        raise UsageError(f"--out {out}: folder is not empty and holds no featcache head. "
                         "Choose a new or empty folder.")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out}: is a file, not a folder.")
    os.makedirs(out, exist_ok=True)
    return out


def write_head(folder: str, head: Head, cache, training: dict) -> dict:
    """Save the model, config.json and fingerprint.json; returns the config."""
    model_file = head.save(folder)
    digest = sha256_file(os.path.join(folder, model_file))
    if head.spec.kind == "sklearn":
        _remember(digest)
    manifest = cache.manifest
    config = {
        "featcache_head": HEAD_FORMAT,
        "featcache_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "head": head.spec.name,
        "kind": head.spec.kind,
        "options": head.options.to_json(),
        "spatial": head.spatial,
        "class_names": head.class_names,
        "feature_shape": list(head.feature_shape),
        "model_file": model_file,
        "model_sha256": digest,
        "cache": {"path": cache.path, "fingerprint_hash": cache.fingerprint_hash},
        "backbone": {"weights": manifest.get("weights", {}),
                     "tap": manifest.get("extraction", {}).get("tap")},
        "training": training,
    }
    write_json_atomic(os.path.join(folder, CONFIG_FILE), config)
    write_json_atomic(os.path.join(folder, FINGERPRINT_FILE),
                      {"fingerprint_hash": cache.fingerprint_hash, "fingerprint": cache.fingerprint})
    return config


def read_head_files(folder: str) -> tuple[dict, dict]:
    """config.json and fingerprint.json of a head folder.

    Raises:
        UsageError: not a head folder.
    """
    config_path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise UsageError(f"--model {folder}: not a featcache head folder (no {CONFIG_FILE}); "
                         "pass the --out folder of featcache train-head.")
    try:
        config = read_json(config_path)
        fingerprint = read_json(os.path.join(folder, FINGERPRINT_FILE))
    except (OSError, ValueError) as exc:
        raise CacheError(f"--model {folder}: unreadable head files ({exc}).") from exc
    return config, fingerprint


def load_head(folder: str, trust: bool = False) -> tuple[Head, dict, dict]:
    """Load a trained head with its config and fingerprint.

    Raises:
        UsageError: not a head folder, or a model file featcache cannot vouch for.
    """
    folder = os.path.abspath(folder)
    config, fingerprint = read_head_files(folder)
    if is_end_to_end(config):
        raise UsageError(f"--model {folder} is a fine-tuned model (backbone and head together); "
                         "this command needs a head folder from featcache train-head.")
    spec = get_head_spec(config["head"])
    options = HeadOptions.from_json(config["options"])
    head = create_head(spec.name, options, config["class_names"], tuple(config["feature_shape"]))
    model_path = os.path.join(folder, config["model_file"])
    if not os.path.isfile(model_path):
        raise UsageError(f"--model {folder}: {config['model_file']} is missing.")
    digest = sha256_file(model_path)
    if not trust:
        if digest != config.get("model_sha256"):
            raise UsageError(
                f"{model_path} changed since featcache wrote it (sha256 differs from "
                f"{CONFIG_FILE}). Retrain the head, or pass --trust if you know where it came from.")
        if spec.kind == "sklearn" and not _is_trusted(digest):
            raise UsageError(
                f"{model_path} is a pickle that featcache did not write for this user; loading a "
                "pickle can run arbitrary code. If you trust its source, pass --trust.")
    head.load(folder, config["model_file"])
    return head, config, fingerprint


def is_end_to_end(config: dict) -> bool:
    """Whether a model folder holds a fine-tuned pixels-to-probabilities model."""
    return config.get("kind") == "finetuned"


def load_end_to_end(folder: str, config: dict, trust: bool = False):
    """Load a fine-tuned folder's Keras model (safe mode), checking its sha256.

    Raises:
        UsageError: the model file is missing or changed since featcache wrote it.
    """
    from ._keras import load_model_safely

    path = os.path.join(os.path.abspath(folder), config["model_file"])
    if not os.path.isfile(path):
        raise UsageError(f"--model {folder}: {config['model_file']} is missing.")
    if not trust and sha256_file(path) != config.get("model_sha256"):
        raise UsageError(f"{path} changed since featcache wrote it (sha256 differs from "
                         f"{CONFIG_FILE}). Pass --trust if you know where it came from.")
    return load_model_safely(path)
