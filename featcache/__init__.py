"""featcache: run a frozen pretrained CNN once, cache its features, train heads in seconds.

Python API (the command line's verbs; keyword arguments are its flags in snake case)::

    import featcache
    cache = featcache.extract("photos/", "cache/", backbone="mobilenet")
    head = featcache.train_head(cache, "logreg")              # out="head/" also writes it
    featcache.predict(head, ["new/cat.jpg"])                  # rows: label, score, top_k

    featcache.compare(cache, out="compare/")                  # every head, chosen on train
    featcache.audit(cache, out="audit/")                      # leaks, duplicates, label errors
    featcache.load_features("cache/", "train")                # .features, .labels, .paths

Importing featcache is cheap: Keras (and its backend) load only when a model is built.
"""

from ._version import __version__
from .backbones import BACKBONES, BackboneSpec, get_backbone, list_backbones
from .cache import FeatureCache, Features, load_features
from .errors import FeatcacheError
from .extract import ExtractOptions, ExtractSummary

# the verbs last: `featcache.extract` is the function, not the subpackage of the same name
from .api import (  # noqa: E402
    audit, compare, evaluate, export, export_features, extract, finetune, predict, train_head)

__all__ = [
    "BACKBONES", "BackboneSpec", "ExtractOptions", "ExtractSummary", "FeatcacheError", "FeatureCache",
    "Features", "audit", "compare", "evaluate", "export", "export_features", "extract", "finetune", "get_backbone", "list_backbones",
    "load_features", "predict", "train_head", "__version__",
]
