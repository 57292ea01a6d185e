"""The head registry: every classifier featcache can train on cached features, as data.

`HEADS` maps a name to a `HeadSpec`: the estimator class that builds it (a
dotted path, resolved only when a head is created, so importing this module
loads neither Keras nor scikit-learn), its default parameters, and what it can
do. Adding a head is one entry. `create_head(name, **params)` returns an
unfitted scikit-learn-style estimator (`KerasHead` or `SklearnHead`).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field

from ..errors import ParameterError, UsageError, param

KERAS_HEAD = "featcache.heads.keras_heads.KerasHead"
SKLEARN_HEAD = "featcache.heads.sklearn_heads.SklearnHead"


@dataclass(frozen=True)
class HeadSpec:
    """A registered head.

    Attributes:
        builder: dotted path of the estimator class.
        kind: "keras" or "sklearn".
        description: one line for listings.
        params: the head's default parameters (constructor keywords of `builder`).
        streamable: can train from a cache streamed from disk (with its defaults).
        exportable: can become Keras layers for `featcache export`.
    """

    builder: str
    kind: str
    description: str
    params: dict = field(default_factory=dict)
    streamable: bool = False
    exportable: bool = False

    def resolve(self) -> type:
        """The estimator class (imports it)."""
        module, _, name = self.builder.rpartition(".")
        return getattr(importlib.import_module(module), name)


def _keras(description: str, **params) -> HeadSpec:
    return HeadSpec(KERAS_HEAD, "keras", description, params, streamable=True, exportable=True)


def _sklearn(description: str, estimator: str, *, streamable: bool = False, exportable: bool = False,
             **params) -> HeadSpec:
    return HeadSpec(SKLEARN_HEAD, "sklearn", description, {"estimator": estimator, **params},
                    streamable=streamable, exportable=exportable)


HEADS: dict[str, HeadSpec] = {
    "linear": _keras("softmax regression (one Dense layer)", units=(), spatial="flatten"),
    "dense256": _keras("Dense 256 relu, Dropout 0.5, softmax (VGG16 tutorial)",
                       units=(256,), spatial="flatten"),
    "dense512": _keras("global average pooling, Dense 512 relu, Dropout 0.5, softmax",
                       units=(512,), spatial="avg"),
    "sigmoid": _keras("one sigmoid unit, for two classes (cats-vs-dogs tutorial)",
                      units=(), output="sigmoid", spatial="flatten"),
    "mlp": _keras("configurable Dense stack (units, dropout, l2)", units=(512, 128), spatial="avg"),
    "logreg": _sklearn("multinomial logistic regression", "sklearn.linear_model.LogisticRegression",
                       exportable=True, C=1.0, estimator_params={"max_iter": 3000},
                       search_grid=("C", (0.01, 0.1, 1.0, 10.0))),
    "linear-svm": _sklearn("linear support vector machine (LinearSVC)", "sklearn.svm.LinearSVC",
                           exportable=True, C=0.01, estimator_params={"max_iter": 5000},
                           search_grid=("C", (0.001, 0.01, 0.1, 1.0))),
    "sgd": _sklearn("logistic regression by SGD (partial_fit: trains out of core)",
                    "sklearn.linear_model.SGDClassifier", streamable=True, exportable=True,
                    alpha=1e-3, scale=True, epochs=20, incremental=True,
                    estimator_params={"loss": "log_loss"},
                    search_grid=("alpha", (1e-5, 1e-4, 1e-3, 1e-2))),
    "ridge": _sklearn("ridge classifier", "sklearn.linear_model.RidgeClassifier", exportable=True,
                      alpha=1.0, search_grid=("alpha", (0.1, 1.0, 10.0, 100.0))),
    "knn": _sklearn("k nearest neighbours, cosine distance", "sklearn.neighbors.KNeighborsClassifier",
                    neighbors=5, estimator_params={"metric": "cosine"},
                    search_grid=("n_neighbors", (1, 3, 5, 9, 15))),
    "random-forest": _sklearn("random forest of 200 trees", "sklearn.ensemble.RandomForestClassifier",
                              trees=200, estimator_params={"n_jobs": -1},
                              search_grid=("max_depth", (None, 8, 16))),
}


def list_heads() -> list[str]:
    """Head names, Keras heads first."""
    return [n for n, s in HEADS.items() if s.kind == "keras"] + \
        [n for n, s in HEADS.items() if s.kind != "keras"]


def canonical_name(name: str) -> str:
    """The registry key for `name` ("Random_Forest" -> "random-forest").

    Raises:
        UsageError: unknown name, with the closest ones and the available ones.
    """
    key = str(name).lower().replace("_", "-")
    if key in HEADS:
        return key
    close = difflib.get_close_matches(key, HEADS, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UsageError(f"Unknown head '{name}' ({param('model')}).{hint} "
                     f"Available: {', '.join(list_heads())}.")


def get_head_spec(name: str) -> HeadSpec:
    """Look up a head by name.

    Raises:
        UsageError: unknown name, with the closest ones.
    """
    return HEADS[canonical_name(name)]


def head_params(name: str, params: dict | None = None) -> list[str]:
    """The parameters head `name` takes (with `params` set on top of its defaults)."""
    spec = get_head_spec(name)
    return spec.resolve().head_params({**spec.params, **(params or {})})


def create_head(name: str, **params):
    """An unfitted head: the entry's estimator with its defaults, then `params` on top.

    Parameters set to None are left out, so they keep the head's default (as
    timm's create_model does), which lets a caller pass every option it has.

    Args:
        name: a registry name (see `list_heads`).
        **params: e.g. epochs=10, C=0.1, seed=1.

    Raises:
        UsageError: unknown head name.
        ParameterError: a parameter that does not apply to this head.
    """
    key = canonical_name(name)
    spec = HEADS[key]
    cls = spec.resolve()
    given = {k: v for k, v in params.items() if v is not None}
    merged = {**spec.params, **given}
    applies = cls.head_params(merged)
    for k, v in given.items():
        if k not in applies and k not in cls.STRUCTURAL:
            raise ParameterError(k, v, f"does not apply to head '{key}'; its parameters: "
                                       f"{', '.join(applies)}.")
    return cls(name=key, **merged)


__all__ = ["HEADS", "HeadSpec", "canonical_name", "create_head", "get_head_spec", "head_params",
           "list_heads"]
