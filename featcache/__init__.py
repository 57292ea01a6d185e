"""featcache: run a frozen pretrained CNN once, cache its features, train heads in seconds.

Python API::

    import featcache
    summary = featcache.extract(featcache.ExtractOptions(data="photos/", out="cache/",
                                                         backbone="mobilenet"))
    train = featcache.load_features("cache/", "train")   # .features, .labels, .paths, .class_names

Importing featcache is cheap: Keras (and its backend) load only when a model is built.
"""

from ._version import __version__
from .backbones import BACKBONES, BackboneSpec, get_backbone, list_backbones
from .cache import FeatureCache, Features, load_features
from .errors import FeatcacheError
from .extract import ExtractOptions, ExtractSummary, extract


__all__ = [
    "BACKBONES", "BackboneSpec", "ExtractOptions", "ExtractSummary", "FeatcacheError", "FeatureCache", "Features",
    "extract", "get_backbone", "list_backbones", "load_features", "__version__",
]
