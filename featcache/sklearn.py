"""A scikit-learn transformer: images in, frozen-backbone features out, each image computed once.

`ImageFeatures(backbone="mobilenet", cache="feature-store/")` takes image
paths, arrays (N, H, W, 3) of uint8 or PIL images and returns an
(n_images, n_features) float32 array. With `cache`, every image's features
are kept on disk under `<cache>/<fingerprint hash>/`, keyed by the image's
content (a file's sha256, or the sha256 of an array's shape and pixels):
inside `GridSearchCV` the backbone then runs once per image, not once per
fold and candidate, also across processes (`n_jobs=2`): one process computes
what is missing while holding the store's lock, the others wait and read. The
key includes the fingerprint (backbone, weights bytes, layer, pooling, input
size, resize, library versions), so changing any of them never returns stale
features. Without `cache` the features are computed on every call.

    from sklearn.pipeline import Pipeline
    from sklearn.linear_model import LogisticRegression
    from featcache.sklearn import ImageFeatures

    model = Pipeline([("features", ImageFeatures(backbone="mobilenet", cache="store/")),
                      ("clf", LogisticRegression(max_iter=1000))])
    model.fit(paths, labels)
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .errors import UsageError
from .fileio import write_json_atomic

COMPUTED_LOG = "computed.log"  # one line per image the backbone ran on, for the curious (and tests)


@contextmanager
def _store_lock(folder: str):
    """Exclusive lock on a feature store folder, waiting for another process to finish."""
    path = os.path.join(folder, ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # no fcntl (Windows): one process at a time is then the user's part
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


class ImageFeatures(TransformerMixin, BaseEstimator):
    """Frozen-backbone features of images, as a scikit-learn transformer.

    Args:
        backbone: see `featcache.list_backbones()`.
        cache: folder of the feature store (None: compute on every call).
        image_size, layer, pooling, weights, weights_dir, precision, runtime:
            as for `featcache.extract`.
        batch_size: images per backbone call.
    """

    def __init__(self, backbone="mobilenet", cache=None, image_size=None, layer=None, pooling=None,
                 weights="imagenet", weights_dir=None, batch_size=32, precision="float32",
                 runtime="auto"):
        self.backbone = backbone
        self.cache = cache
        self.image_size = image_size
        self.layer = layer
        self.pooling = pooling
        self.weights = weights
        self.weights_dir = weights_dir
        self.batch_size = batch_size
        self.precision = precision
        self.runtime = runtime

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # images (paths, arrays, PIL), not a feature matrix
        tags.input_tags.string = True
        tags.requires_fit = False
        return tags

    # ---------------------------------------------------------------- the model
    def _built(self):
        """(extractor, resize spec, fingerprint hash), built once per estimator and settings."""
        key = (self.backbone, self.image_size, self.layer, self.pooling, self.weights,
               self.weights_dir, self.precision, self.runtime)
        built = getattr(self, "_model", None)
        if built is not None and built[0] == key:
            return built[1]
        from .backbones import get_backbone
        from .decode import DEFAULT_DECODE, ResizeSpec
        from .feature_model import shared_feature_extractor
        from .fingerprint import fingerprint_hash, library_versions, make_fingerprint
        from .hardware import cpu_info, gpus
        from .runtimes import resolve_runtime

        runtime = self.runtime
        if runtime == "auto":
            runtime = resolve_runtime("auto", self.precision, cpu_info(), bool(gpus()))
        size = int(self.image_size or get_backbone(self.backbone).input_size)
        # clones (one per fold and candidate of a search) share the process's last extractor
        extractor = shared_feature_extractor(self.backbone, size, self.layer, self.pooling,
                                             self.weights, self.weights_dir, 0, self.precision,
                                             runtime, None)
        resize = ResizeSpec((size, size), "bilinear", "stretch", DEFAULT_DECODE)
        fingerprint = make_fingerprint(extractor.describe(), resize.describe(), "float32",
                                       library_versions())
        built = (extractor, resize, fingerprint_hash(fingerprint), fingerprint)
        self._model = (key, built)
        return built

    def __getstate__(self):  # GridSearchCV pickles estimators to its workers: not the model
        state = super().__getstate__()
        state.pop("_model", None)
        return state

    # ---------------------------------------------------------------- sklearn API
    def fit(self, X, y=None):
        """Nothing to learn (the backbone is frozen): builds the model; `X` is not read."""
        extractor, _, fph, _ = self._built()
        self.n_features_out_ = int(np.prod(extractor.feature_shape))
        self.fingerprint_hash_ = fph
        return self

    def transform(self, X) -> np.ndarray:
        """Features of every image of `X`, in order: (len(X), n_features) float32."""
        check_is_fitted(self, "n_features_out_")
        images = self._as_list(X)
        extractor, resize, fph, fingerprint = self._built()
        keys = [self._key(image) for image in images]
        if self.cache is None:
            return self._compute(images, resize, extractor)
        store = os.path.join(os.fspath(self.cache), fph)
        os.makedirs(store, exist_ok=True)
        out = np.zeros((len(images), self.n_features_out_), dtype=np.float32)
        missing = [i for i, k in enumerate(keys) if not os.path.isfile(os.path.join(store, f"{k}.npy"))]
        if missing:
            with _store_lock(store):  # another process may have computed them meanwhile
                missing = [i for i in missing if not os.path.isfile(os.path.join(store, f"{keys[i]}.npy"))]
                first: dict[str, int] = {}  # each distinct image once, at its first position
                for i in missing:
                    first.setdefault(keys[i], i)
                unique = list(first)
                if unique:
                    rows = self._compute([images[first[k]] for k in unique], resize, extractor)
                    for k, row in zip(unique, rows):
                        tmp = os.path.join(store, f".{k}.tmp.npy")
                        np.save(tmp, row)
                        os.replace(tmp, os.path.join(store, f"{k}.npy"))
                    with open(os.path.join(store, COMPUTED_LOG), "a") as fh:
                        fh.write("".join(f"{k}\n" for k in unique))
                    if not os.path.isfile(os.path.join(store, "fingerprint.json")):
                        write_json_atomic(os.path.join(store, "fingerprint.json"), fingerprint)
        for i, k in enumerate(keys):
            out[i] = np.load(os.path.join(store, f"{k}.npy"))
        return out

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"{self.backbone}{i}" for i in range(self.n_features_out_)], dtype=object)

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _as_list(X) -> list:
        if isinstance(X, (str, os.PathLike)):
            raise UsageError("ImageFeatures takes a list of images (paths, arrays or PIL images), "
                             "not a single path.")
        if isinstance(X, np.ndarray) and X.ndim == 4:
            return list(X)
        if isinstance(X, np.ndarray) and X.ndim == 1:  # an object array of paths (e.g. from a DataFrame)
            return list(X)
        if isinstance(X, np.ndarray):
            raise UsageError(f"ImageFeatures takes images: an array (N, H, W, 3), or a list of paths "
                             f"or PIL images; got an array of shape {X.shape}.")
        return list(X)

    @staticmethod
    def _key(image) -> str:
        from .fileio import sha256_file
        from .in_memory import _pixels, pixel_hash

        if isinstance(image, (str, os.PathLike)):
            return sha256_file(os.fspath(image))
        return pixel_hash(_pixels(image))

    def _compute(self, images: list, resize, extractor) -> np.ndarray:
        from .decode import read_image, resize_pixels
        from .in_memory import _pixels

        pixels = np.stack([
            read_image(os.fspath(im), resize)[0] if isinstance(im, (str, os.PathLike))
            else resize_pixels(_pixels(im), resize) for im in images])
        features = extractor.features(pixels, int(self.batch_size))
        return features.reshape(len(images), -1).astype(np.float32)
