"""A trained head's folder: the model, what made it, and loading it back safely.

Layout of a head folder::

    model.keras | model.joblib   the head (Keras heads | scikit-learn heads)
    config.json                  head name and parameters, classes, feature
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
from .heads import canonical_name, create_head, get_head_spec, head_params

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
        raise UsageError(f"{{param:out}} {out}: folder is not empty and holds no featcache head. "
                         "Choose a new or empty folder.")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"{{param:out}} {out}: is a file, not a folder.")
    os.makedirs(out, exist_ok=True)
    return out


def head_config_params(head) -> dict:
    """The parameters of a head that apply to it, as JSON (tuples become lists)."""
    def plain(value):
        return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value

    values = head.get_params(deep=False)
    keep = set(head_params(head.name, values)) | (set(type(head).STRUCTURAL) - {"name"})
    return {k: plain(v) for k, v in values.items() if k in keep}


def _from_json(value):
    """JSON lists back to tuples (units, search_grid), dicts kept."""
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value


def params_from_config(config: dict) -> dict:
    """create_head parameters from a config.json, this format's or the old one's.

    The old format recorded every field of the old HeadOptions under "options",
    unset ones as None and options the head ignored too; only those that apply
    to the head are kept (units only for mlp, which alone used it).
    """
    if "params" in config:
        return {k: _from_json(v) for k, v in config["params"].items()}
    name = canonical_name(config["head"])
    options = {k: _from_json(v) for k, v in (config.get("options") or {}).items() if v is not None}
    if name != "mlp":
        options.pop("units", None)
    applies = set(head_params(name, options))
    return {k: v for k, v in options.items() if k in applies}


def write_model_files(folder: str, *, kind: str, head: str, model_file: str, class_names: list[str],
                      feature_shape, spatial: str, params: dict, cache: dict, backbone: dict,
                      fingerprint: dict, **extra) -> dict:
    """Write config.json and fingerprint.json of a model folder (a head or a fine-tuned model).

    The model file must already be in `folder`; its sha256 goes into the config.
    `extra` holds the kind's own entries ("training" for heads, "finetune" ...).
    Returns the config.
    """
    config = {
        "featcache_head": HEAD_FORMAT,
        "featcache_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "head": head,
        "kind": kind,
        "params": params,
        "spatial": spatial,
        "class_names": list(class_names),
        "feature_shape": list(feature_shape),
        "model_file": model_file,
        "model_sha256": sha256_file(os.path.join(folder, model_file)),
        "cache": cache,
        "backbone": backbone,
        **extra,
    }
    write_json_atomic(os.path.join(folder, CONFIG_FILE), config)
    write_json_atomic(os.path.join(folder, FINGERPRINT_FILE), fingerprint)
    return config


INT8_MODEL_DIR = "int8_model"  # in a head folder trained on an int8 cache


def head_source(cache) -> dict:
    """What a head trained on `cache` needs to rebuild its backbone: the fingerprint.json
    contents and the backbone entry of config.json (see prediction.backbone_for_head)."""
    manifest = cache.manifest
    return {"fingerprint": {"fingerprint_hash": cache.fingerprint_hash, "fingerprint": cache.fingerprint},
            "config": {"backbone": {"weights": manifest.get("weights", {}),
                                    "tap": manifest.get("extraction", {}).get("tap")}}}


def write_head(folder: str, head, cache, training: dict) -> dict:
    """Save the model, config.json and fingerprint.json; returns the config."""
    model_file = head.save(folder)
    kind = get_head_spec(head.name).kind
    manifest = cache.manifest
    source = head_source(cache)
    config = write_model_files(
        folder, kind=kind, head=head.name, model_file=model_file, class_names=head.class_names,
        feature_shape=head.feature_shape_, spatial=head.spatial_, params=head_config_params(head),
        cache={"path": cache.path, "fingerprint_hash": cache.fingerprint_hash},
        backbone=source["config"]["backbone"], fingerprint=source["fingerprint"],
        training=training,
        # multi-label heads: class_names are the labels, each decided at its own threshold
        **({"multi_label": {"thresholds": [float(t) for t in head.thresholds_]}}
           if head.multi_label else {}))
    quantized = manifest.get("quantization")
    if quantized:  # precision int8: the head predicts with the very model its features came from
        import shutil

        shutil.rmtree(os.path.join(folder, INT8_MODEL_DIR), ignore_errors=True)
        shutil.copytree(os.path.join(cache.path, quantized["model"]),
                        os.path.join(folder, INT8_MODEL_DIR))
    if kind == "sklearn":
        _remember(config["model_sha256"])
    return config


def read_head_files(folder: str) -> tuple[dict, dict]:
    """config.json and fingerprint.json of a head folder.

    Raises:
        UsageError: not a head folder.
    """
    config_path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise UsageError(f"{{param:model}} {folder}: not a featcache head folder (no {CONFIG_FILE}); "
                         "pass the {param:out} folder of featcache train-head.")
    try:
        config = read_json(config_path)
        fingerprint = read_json(os.path.join(folder, FINGERPRINT_FILE))
    except (OSError, ValueError) as exc:
        raise CacheError(f"{{param:model}} {folder}: unreadable head files ({exc}).") from exc
    return config, fingerprint


def load_head(folder: str, trust: bool = False) -> tuple[object, dict, dict]:
    """Load a trained head with its config and fingerprint.

    The estimator is recreated with `create_head(name, **params)` and its
    fitted state restored (classes_, feature_shape_, spatial_, model_...).

    Raises:
        UsageError: not a head folder, or a model file featcache cannot vouch for.
    """
    folder = os.path.abspath(folder)
    config, fingerprint = read_head_files(folder)
    if is_end_to_end(config):
        raise UsageError(f"{{param:model}} {folder} is a fine-tuned model (backbone and head together); "
                         "this command needs a head folder from featcache train-head.")
    spec = get_head_spec(config["head"])
    head = create_head(config["head"], **params_from_config(config))
    model_path = os.path.join(folder, config["model_file"])
    if not os.path.isfile(model_path):
        raise UsageError(f"{{param:model}} {folder}: {config['model_file']} is missing.")
    digest = sha256_file(model_path)
    if not trust:
        if digest != config.get("model_sha256"):
            raise UsageError(
                f"{model_path} changed since featcache wrote it (sha256 differs from "
                f"{CONFIG_FILE}). Retrain the head, or pass {{param:trust}}=True if you know where it came from.")
        if spec.kind == "sklearn" and not _is_trusted(digest):
            raise UsageError(
                f"{model_path} is a pickle that featcache did not write for this user; loading a "
                "pickle can run arbitrary code. If you trust its source, pass {param:trust}=True.")
    history_path = os.path.join(folder, HISTORY_FILE)
    history = read_json(history_path) if os.path.isfile(history_path) else {}
    head.restore(model_path, config["class_names"], tuple(config["feature_shape"]),
                 config.get("spatial", "none"), history, config.get("training"),
                 config.get("multi_label"))
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
        raise UsageError(f"{{param:model}} {folder}: {config['model_file']} is missing.")
    if not trust and sha256_file(path) != config.get("model_sha256"):
        raise UsageError(f"{path} changed since featcache wrote it (sha256 differs from "
                         f"{CONFIG_FILE}). Pass {{param:trust}}=True if you know where it came from.")
    return load_model_safely(path)
