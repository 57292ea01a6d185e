"""Runtimes that run the frozen feature model: Keras itself, or OpenVINO.

The Keras model is always built and its weights loaded as usual; with the
`openvino` runtime it is then converted (`openvino.convert_model`, straight
from the Keras model) and compiled for the CPU, with the precision as
OpenVINO's inference-precision hint. At float32 OpenVINO's features equal
Keras' to about 1e-7 (relative L2; the tests hold every registry backbone to
1e-4). OpenVINO is an optional extra: asking for it without it installed says
how to install it.
"""

from __future__ import annotations

import os

from .errors import UsageError, param

RUNTIMES = ("keras", "openvino")
INSTALL_HINT = 'pip install "featcache[openvino]"'
_OV_PRECISION = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        from .errors import ParameterError

        raise ParameterError("runtime", runtime, f"allowed values are {', '.join(RUNTIMES)}.")
    return runtime


def import_openvino():
    """The openvino module, or a one-line UsageError saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise UsageError(f"{param('runtime')} openvino needs the OpenVINO runtime, which is not "
                         f"installed: {INSTALL_HINT}") from None
    return openvino


def installed_runtimes() -> list[str]:
    """The runtimes that can run here (Keras always; OpenVINO when installed)."""
    import importlib.util

    return ["keras"] + (["openvino"] if importlib.util.find_spec("openvino") else [])


def runtime_version(runtime: str) -> str:
    if runtime == "openvino":
        return import_openvino().__version__
    from ._keras import backend_info

    return backend_info().get("keras", "")


def describe_runtime(runtime: str) -> dict:
    """What goes into the fingerprint for a runtime other than Keras."""
    return {"name": runtime, "version": runtime_version(runtime)}


def openvino_compile(ov_model, precision: str = "float32", threads: int | None = None):
    """Compile an OpenVINO model for the CPU; returns f(batch) -> numpy features.

    Args:
        precision: "float32", "bfloat16" or "float16", as OpenVINO's inference
            precision hint (bfloat16 runs natively on CPUs with AVX512_BF16/AMX).
            An int8 model (quantize.py) compiles with "float32": its int8 parts
            stay int8 and the rest runs exact.
        threads: inference threads (default: every core).
    """
    ov = import_openvino()
    config = {"INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
              # one request at a time: the latency hint (THROUGHPUT only pays with many in flight)
              "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": int(threads or os.cpu_count() or 1)}
    compiled = ov.Core().compile_model(ov_model, "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.outputs[0]

    def call(batch):
        return request.infer([batch])[output].copy()

    return call


def openvino_call(keras_model, precision: str = "float32", threads: int | None = None,
                  model_file: str | None = None):
    """Convert a Keras model with OpenVINO (or read `model_file`, a saved int8 model) and compile it."""
    ov = import_openvino()
    if model_file is not None:
        return openvino_compile(ov.Core().read_model(model_file), "float32", threads)
    return openvino_compile(ov.convert_model(keras_model), precision, threads)
