"""What this machine can compute fast: CPU model and flags, native bfloat16/float16, GPUs.

Reduced precision only pays where the hardware computes it natively: on CPUs
with AVX512_BF16 or AMX-BF16 (bfloat16), AVX512_FP16 or AMX-FP16 (float16),
or on a GPU. Elsewhere it is emulated and slower than float32, and
`precision_warning` says so. Reading the CPU flags imports nothing heavy;
`gpus()` asks the Keras backend and so imports it.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

PRECISIONS = ("float32", "bfloat16", "float16", "int8")  # what a backbone can compute in
KERAS_PRECISIONS = PRECISIONS[:3]  # int8 is OpenVINO's alone (quantize.py)


def check_precision(precision: str, runtime: str | None = "keras") -> str:
    """Raises ParameterError unless `precision` is one featcache computes in with `runtime`.

    runtime None checks the name only.
    """
    from .errors import ParameterError

    if precision not in PRECISIONS:
        raise ParameterError("precision", precision, f"allowed values are {', '.join(PRECISIONS)}.")
    if precision == "int8" and runtime not in (None, "openvino"):
        raise ParameterError("precision", precision, "int8 runs on the OpenVINO runtime only: add "
                             "{param:runtime} openvino.")
    return precision
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_FP16_FLAGS = ("avx512_fp16", "amx_fp16")
_SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
                "avx512_fp16", "amx_fp16", "amx_int8", "asimd", "sve", "bf16")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    cores: int
    flags: frozenset = field(default_factory=frozenset)

    @property
    def native_bfloat16(self) -> bool:
        return any(f in self.flags for f in _BF16_FLAGS)

    @property
    def native_float16(self) -> bool:
        return any(f in self.flags for f in _FP16_FLAGS)

    @property
    def shown_flags(self) -> list[str]:
        """The flags that matter for inference speed, in a fixed order."""
        return [f for f in _SHOWN_FLAGS if f in self.flags]

    def to_json(self) -> dict:
        return {"model": self.model, "cores": self.cores, "flags": self.shown_flags,
                "native_bfloat16": self.native_bfloat16, "native_float16": self.native_float16}


def cpu_info(cpuinfo_path: str = "/proc/cpuinfo") -> CpuInfo:
    """The CPU's model name and feature flags (Linux /proc/cpuinfo; less elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model") and model in ("", platform.processor(),
                                                                    platform.machine()):
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return CpuInfo(model or "unknown", os.cpu_count() or 1, frozenset(flags))


def gpus() -> list[str]:
    """Names of the GPUs the Keras backend sees (imports the backend)."""
    from ._keras import _native_stderr_silenced, import_keras

    keras = import_keras()
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            # the standard TensorFlow wheel reports a failed cuInit on fd 2 when no GPU is there
            with _native_stderr_silenced():
                return [d.name for d in tf.config.list_physical_devices("GPU")]
        if backend == "jax":
            import jax

            return [str(d) for d in jax.devices() if d.platform == "gpu"]
        if backend == "torch":
            import torch

            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken driver means "no usable GPU", not a crash
        return []
    return []


def warn_if_emulated(precision: str) -> None:
    """Warn (FeatcacheWarning) when `precision` is emulated here, so slower than float32."""
    if precision == "float32":
        return
    message = precision_warning(precision)
    if message and not gpus():
        import warnings

        from .errors import FeatcacheWarning

        warnings.warn(FeatcacheWarning(message), stacklevel=3)


def precision_warning(precision: str, cpu: CpuInfo | None = None, on_gpu: bool = False) -> str | None:
    """Why `precision` will be slower here than float32, or None when it is native."""
    if precision in ("float32", "int8") or on_gpu:  # int8 pays on AVX2 CPUs too (issue 18)
        return None
    cpu = cpu or cpu_info()
    native = cpu.native_bfloat16 if precision == "bfloat16" else cpu.native_float16
    if native:
        return None
    wanted = " or ".join(_BF16_FLAGS if precision == "bfloat16" else _FP16_FLAGS).upper()
    return (f"{{param:precision}} {precision}: this CPU ({cpu.model}) has no {wanted}, so "
            f"{precision} is emulated and usually slower than float32; it still gives "
            f"{precision} features.")


# Measured speed-ups of featcache extract in bfloat16 over float32, whole pipeline, on a CPU
# with native bfloat16 (2-core Xeon with AMX-BF16; benchmarks/vs_keras.py, RESULTS.md section 5).
# Convolution-heavy backbones gain; MobileNet's depthwise layers do not.
BFLOAT16_GAIN: dict[str, float] = {"vgg16": 3.57, "mobilenet": 0.90}


def describe(with_gpus: bool = True) -> dict:
    """What `featcache hardware` reports: CPU, GPUs, Keras backend, which precisions are native."""
    from .runtimes import installed_runtimes, resolve_runtime

    cpu = cpu_info()
    found = gpus() if with_gpus else []
    backend = None
    if with_gpus:
        from ._keras import import_keras

        backend = import_keras().backend.backend()
    on_gpu = bool(found)
    return {
        "cpu": cpu.to_json(),
        "gpus": found,
        "keras_backend": backend,
        "precisions": {
            p: {"native": on_gpu or p == "float32"
                or (cpu.native_bfloat16 if p == "bfloat16" else cpu.native_float16),
                "note": _as_cli_text(precision_warning(p, cpu, on_gpu))}
            for p in PRECISIONS},
        "bfloat16_gain": dict(BFLOAT16_GAIN),
        "runtimes": installed_runtimes(),
        # what `extract --runtime auto` (the default) uses here at float32
        "auto_runtime": resolve_runtime("auto", "float32", cpu, on_gpu),
    }


def _as_cli_text(message: str | None) -> str | None:
    """The note as `featcache hardware` prints it (flags, not parameter tokens)."""
    if message is None:
        return None
    from .errors import with_flags

    return with_flags(message)
