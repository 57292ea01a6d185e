"""Write a pixels-to-probabilities Keras model as .keras, ONNX or TFLite, and run what was written.

The converters are the ones Keras and TensorFlow provide: `model.save` for
.keras, Keras 3's `model.export(format="onnx")` (tf2onnx underneath on the
TensorFlow backend), and TensorFlow's TFLite converter on the model's
SavedModel export, optionally quantized (float16 weights, or dynamic-range
int8). `runner` loads the written file with the runtime a deployment would use
(Keras in safe mode, onnxruntime, the TFLite interpreter) and returns a
function from pixel batches to scores, for the parity check.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import warnings
from typing import Callable

import numpy as np

from .errors import ExportError, UsageError, param

FORMATS = {".keras": "keras", ".onnx": "onnx", ".tflite": "tflite"}
QUANTIZE = ("none", "float16", "dynamic-int8")
_NEEDS = {"onnx": (("tf2onnx", "onnx", "onnxruntime"), 'pip install "featcache[onnx]"'),
          "tflite": (("tensorflow",), "pip install tensorflow")}


def format_for(out_file: str, fmt: str | None) -> str:
    """The export format: `fmt`, else the file's extension; checks they agree.

    Raises:
        UsageError: unknown format, or an extension that names another one.
    """
    ext = os.path.splitext(out_file)[1].lower()
    if fmt is None:
        if ext not in FORMATS:
            raise UsageError(f"{param('out')} {out_file}: name the file .keras, .onnx or .tflite, "
                             f"or pass {param('format')}.")
        return FORMATS[ext]
    if fmt not in FORMATS.values():
        raise UsageError(f"{param('format')} {fmt}: use keras, onnx or tflite.")
    if FORMATS.get(ext) != fmt:
        raise UsageError(f"{param('out')} {out_file}: a {fmt} export is a .{fmt} file.")
    return fmt


def check_tools(fmt: str, quantize: str) -> None:
    """Refuse, before any work, a format whose converter or runtime is not installed.

    Raises:
        UsageError: one line with the install command.
    """
    if quantize not in QUANTIZE:
        raise UsageError(f"{param('quantize')} {quantize}: use {', '.join(QUANTIZE)}.")
    if quantize != "none" and fmt != "tflite":
        raise UsageError(f"{param('quantize')} {quantize} applies to {param('format')} tflite.")
    modules, hint = _NEEDS.get(fmt, ((), ""))
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"{param('format')} {fmt} needs {', '.join(missing)}: {hint}")


def write(model, out_file: str, fmt: str, quantize: str, sample: np.ndarray) -> None:
    """Write `model` (pixels -> scores) to `out_file` in `fmt`.

    Args:
        sample: a batch of pixels; the ONNX exporter traces the model on it.

    Raises:
        ExportError: the converter failed (its message, in one line).
    """
    os.makedirs(os.path.dirname(os.path.abspath(out_file)) or ".", exist_ok=True)
    try:
        if fmt == "keras":
            model.save(out_file)
        elif fmt == "onnx":
            model(sample[:1], training=False)  # Keras exports only a model that has been called
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.export(out_file, format="onnx", verbose=False)
        else:
            _write_tflite(model, out_file, quantize)
    except (ExportError, UsageError):
        raise
    except Exception as exc:  # noqa: BLE001 - a converter's failure, reported in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"The {fmt} converter failed on this model: {first}") from exc


def _write_tflite(model, out_file: str, quantize: str) -> None:
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="featcache-tflite-") as tmp:
        saved = os.path.join(tmp, "saved_model")
        model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # alone: dynamic-range int8
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        flatbuffer = converter.convert()
    partial = out_file + ".partial"
    with open(partial, "wb") as fh:
        fh.write(flatbuffer)
    os.replace(partial, out_file)


def runner(out_file: str, fmt: str, batch_size: int = 16) -> Callable[[np.ndarray], np.ndarray]:
    """A function running the written file on a pixel batch (N, H, W, 3) float32 -> scores."""
    if fmt == "keras":
        from ._keras import import_keras, load_model_safely

        keras = import_keras()
        model = load_model_safely(out_file)
        return lambda pixels: np.asarray(keras.ops.convert_to_numpy(
            model(pixels.astype(np.float32), training=False)), dtype=np.float64)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(out_file, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda pixels: np.concatenate([
            np.asarray(session.run(None, {name: pixels[i:i + batch_size].astype(np.float32)})[0],
                       dtype=np.float64) for i in range(0, len(pixels), batch_size)])
    return _tflite_runner(out_file)


def _tflite_runner(out_file: str):
    from ._keras import _native_stderr_silenced

    # tf.lite.Interpreter warns that LiteRT replaces it, and its delegate announces itself on fd 2
    with warnings.catch_warnings(), _native_stderr_silenced():
        warnings.simplefilter("ignore")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        interpreter = Interpreter(model_path=out_file)
        interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]
    shape = [tuple(source["shape"])]

    def run(pixels: np.ndarray) -> np.ndarray:
        rows = []
        for row in pixels.astype(np.float32):  # one image per call, as on a device
            if shape[0] != (1, *row.shape):
                interpreter.resize_tensor_input(source["index"], (1, *row.shape))
                interpreter.allocate_tensors()
                shape[0] = (1, *row.shape)
            interpreter.set_tensor(source["index"], row[None])
            with _native_stderr_silenced():
                interpreter.invoke()
            rows.append(np.asarray(interpreter.get_tensor(target["index"])[0], dtype=np.float64))
        return np.stack(rows)

    return run


def remove(out_file: str) -> None:
    """Delete an export that failed its check."""
    if os.path.isdir(out_file):
        shutil.rmtree(out_file, ignore_errors=True)
    elif os.path.exists(out_file):
        os.remove(out_file)
