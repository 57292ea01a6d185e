"""Write a trained head and its backbone as one Keras model (`featcache export`).

The exported model takes raw RGB pixels (0-255, float32, at the backbone's
input size) and returns class probabilities: preprocessing, backbone, pooling
and head in one graph of built-in Keras layers, so plain
`keras.models.load_model(path)` opens it without featcache. A JSON file
beside it names the classes and the resizing the model expects.

Features of float16 caches are not rounded to float16 inside the exported
graph, so its scores can differ from `featcache predict` by that rounding.
"""

from __future__ import annotations

import os

from ._keras import import_keras
from .artifacts import is_end_to_end, load_end_to_end, load_head, read_head_files
from .errors import UsageError
from .fileio import write_json_atomic
from .prediction import backbone_for_head


def export_model(model_dir: str, out_file: str, weights_dir: str | None = None,
                 weights: str | None = None, trust: bool = False,
                 precision: str | None = None) -> dict:
    """Export head + backbone to `out_file` (.keras); returns what was written.

    Raises:
        UsageError: bad output name; ExportError: the head has no Keras form;
        FingerprintMismatchError: the backbone cannot be rebuilt identically here.
    """
    if not out_file.endswith(".keras"):
        raise UsageError(f"{{param:out}} {out_file}: the exported model must be a .keras file.")
    config, fingerprint = read_head_files(model_dir)
    fp = fingerprint["fingerprint"]
    if is_end_to_end(config):  # fine-tuned: already one pixels-to-probabilities model
        model = load_end_to_end(model_dir, config, trust=trust)
        class_names, head_name = config["class_names"], f"{config['head']} (fine-tuned)"
        computes_in = config.get("finetune", {}).get("precision") or fp.get("precision", "float32")
    else:
        head, config, fingerprint = load_head(model_dir, trust=trust)
        head_model = head.to_keras()  # refuses non-linear scikit-learn heads before heavy work
        backbone = backbone_for_head(fingerprint, config, weights_dir, weights, precision,
                                     runtime="keras")  # the export is a Keras model
        keras = import_keras()
        feature_model = backbone.extractor.model
        model = keras.Model(feature_model.input, head_model(feature_model.output),
                            name=f"featcache_{backbone.extractor.spec.name}_{head.name}")
        class_names, head_name = head.class_names, head.name
        computes_in = backbone.extractor.precision
        if head.multi_label:  # one sigmoid per label: the sidecar says where each is decided
            config = {**config, "multi_label": {"thresholds": [float(t) for t in head.thresholds_]}}
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    model.save(out_file)
    info = {
        "model": os.path.abspath(out_file),
        "class_names": class_names,
        "input": {"shape": [None, *fp["input_size"], 3], "dtype": "float32",
                  "pixels": "RGB, 0-255, not preprocessed (the model does it)",
                  "resize": fp["resize"]},
        "backbone": fp["backbone"], "head": head_name,
        "precision": computes_in,
        "fingerprint_hash": fingerprint["fingerprint_hash"],
        **({"multi_label": {**config["multi_label"], "outputs": "one independent probability per "
                            "label; a label applies where it reaches its threshold"}}
           if config.get("multi_label") else {}),
    }
    sidecar = os.path.splitext(out_file)[0] + ".json"
    write_json_atomic(sidecar, info)
    info["sidecar"] = os.path.abspath(sidecar)
    return info
