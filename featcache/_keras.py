"""Import Keras once, quietly, and describe the backend it runs on.

Keras is imported lazily so that `featcache info`, `--help` and the store
never pay for it, and so that the extraction path never imports TensorFlow
itself: with KERAS_BACKEND=jax or torch, TensorFlow is never loaded.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

from .errors import BackendError

_BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
_INSTALL_HINT = {
    "tensorflow": "pip install tensorflow",
    "jax": "pip install 'featcache[jax]'",
    "torch": "pip install 'featcache[torch]'",
}


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the duration of the block.

    TensorFlow's C++ runtime prints start-up banners straight to fd 2, before
    any Python logging setting applies. Set FEATCACHE_DEBUG=1 to keep them.
    """
    if os.environ.get("FEATCACHE_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (some notebook front-ends)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras():
    """Return the `keras` module, importing it (and its backend) on first use.

    Raises:
        BackendError: Keras or the selected backend is not installed.
    """
    if "keras" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    try:
        with _native_stderr_silenced():
            import keras  # noqa: PLC0415 (deliberately lazy)

            if keras.backend.backend() == "tensorflow":
                # look for GPUs now, silenced: the standard TensorFlow wheel reports a failed
                # cuInit on fd 2 on machines without one, the first time devices are listed
                import tensorflow as tf

                tf.config.list_physical_devices("GPU")
    except ModuleNotFoundError as exc:
        missing = exc.name or "keras"
        hint = _INSTALL_HINT.get(backend, "pip install keras")
        raise BackendError(
            f"Keras backend '{backend}' cannot be imported: module '{missing}' is not "
            f"installed. Install it ({hint}) or pick another backend with "
            "KERAS_BACKEND=tensorflow|jax|torch."
        ) from exc
    return keras


def backend_info() -> dict:
    """Name and version of Keras and of the backend it runs on."""
    keras = import_keras()
    name = keras.backend.backend()
    package = _BACKEND_PACKAGES.get(name, name)
    module = sys.modules.get(package) or importlib.import_module(package)
    return {
        "keras": keras.__version__,
        "backend": name,
        "backend_version": getattr(module, "__version__", "unknown"),
    }


def load_model_safely(path: str, compile: bool = True):
    """`keras.models.load_model` with safe mode on, its refusals as one-line errors.

    Safe mode refuses models that carry Python code (Lambda layers, pickled
    functions): loading them could run anything.

    Raises:
        UsageError: the file holds code safe mode refuses, or is not a Keras model.
    """
    from .errors import UsageError

    keras = import_keras()
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except ValueError as exc:
        text = str(exc)
        if "safe_mode" in text or "unsafe" in text.lower() or "lambda" in text.lower():
            raise UsageError(
                f"{path} contains Python code (e.g. a Lambda layer) that Keras' safe mode refuses "
                "to load, since loading it could run anything. featcache never writes such "
                "models; use a model featcache wrote.") from None
        raise UsageError(f"{path}: not a Keras model featcache can load ({text.splitlines()[0]}).") \
            from None
    except (OSError, KeyError) as exc:
        raise UsageError(f"{path}: cannot load the Keras model ({exc}).") from None
