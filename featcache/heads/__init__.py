"""The head registry: every classifier featcache can train on cached features.

`HEADS` maps a name to its `HeadSpec`; `create_head` builds an untrained head
for a cache's classes and feature shape. Keras and scikit-learn heads share
the `Head` interface (fit, predict_proba, save, to_keras).
"""

from __future__ import annotations

import difflib

from ..errors import UsageError
from .base import FitResult, Head, HeadOptions, HeadSpec, reduce_spatial

_EPOCHS = ("epochs", 30)

HEADS: dict[str, HeadSpec] = {
    spec.name: spec
    for spec in [
        HeadSpec("linear", "keras", "softmax regression (one Dense layer)", spatial="flatten",
                 streamable=True, exportable=True, defaults=(_EPOCHS,)),
        HeadSpec("dense256", "keras", "Dense 256 relu, Dropout 0.5, softmax (VGG16 tutorial)",
                 spatial="flatten", streamable=True, exportable=True, defaults=(_EPOCHS,)),
        HeadSpec("dense512", "keras", "global average pooling, Dense 512 relu, Dropout 0.5, softmax",
                 spatial="avg", streamable=True, exportable=True, defaults=(_EPOCHS,)),
        HeadSpec("sigmoid", "keras", "one sigmoid unit, for two classes (cats-vs-dogs tutorial)",
                 spatial="flatten", streamable=True, exportable=True, defaults=(_EPOCHS,)),
        HeadSpec("mlp", "keras", "configurable Dense stack (--units, --dropout, --l2)",
                 spatial="avg", streamable=True, exportable=True, defaults=(_EPOCHS,)),
        HeadSpec("logreg", "sklearn", "multinomial logistic regression",
                 exportable=True, defaults=(("C", 1.0), ("scale", False))),
        HeadSpec("linear-svm", "sklearn", "linear support vector machine (LinearSVC)",
                 exportable=True, defaults=(("C", 0.01), ("scale", False))),
        HeadSpec("sgd", "sklearn", "logistic regression by SGD (partial_fit: trains out of core)",
                 streamable=True, exportable=True,
                 defaults=(("alpha", 1e-3), ("scale", True), ("epochs", 20))),
        HeadSpec("ridge", "sklearn", "ridge classifier",
                 exportable=True, defaults=(("alpha", 1.0), ("scale", False))),
        HeadSpec("knn", "sklearn", "k nearest neighbours, cosine distance",
                 defaults=(("neighbors", 5), ("scale", False))),
        HeadSpec("random-forest", "sklearn", "random forest of 200 trees",
                 defaults=(("trees", 200), ("scale", False))),
    ]
}


def list_heads() -> list[str]:
    """Head names, Keras heads first."""
    return [n for n, s in HEADS.items() if s.kind == "keras"] + \
        [n for n, s in HEADS.items() if s.kind == "sklearn"]


def get_head_spec(name: str) -> HeadSpec:
    """Look up a head by name.

    Raises:
        UsageError: unknown name, with the closest ones.
    """
    key = name.lower().replace("_", "-")
    if key in HEADS:
        return HEADS[key]
    close = difflib.get_close_matches(key, HEADS, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UsageError(f"Unknown head '{name}' (--model).{hint} Available: {', '.join(list_heads())}.")


def create_head(name: str, options: HeadOptions, class_names: list[str],
                feature_shape: tuple[int, ...]) -> Head:
    """An untrained head for these classes and feature shape."""
    spec = get_head_spec(name)
    resolved = options.resolved(spec)
    if spec.kind == "keras":
        from .keras_heads import KerasHead as cls
    else:
        from .sklearn_heads import SklearnHead as cls
    head = cls(spec, resolved, class_names, feature_shape)
    head.validate()
    return head


__all__ = ["FitResult", "HEADS", "Head", "HeadOptions", "HeadSpec", "create_head",
           "get_head_spec", "list_heads", "reduce_spatial"]
