"""int8 feature models: NNCF post-training quantization on the user's own training images.

int8 is an opt-in (`precision="int8"`, OpenVINO runtime only), never a default:
how far it moves the features depends on the backbone (VGG16 about 4 % relative
L2 from float32, MobileNet about 46 % on an AVX2 CPU, issue 18's table). So
every quantization is measured as it is made: the features of a held-out
sample of training images, int8 against float32, median relative L2 per
image; it is printed, stored in the manifest, and warned about above
`FIDELITY_WARN`.

The calibration sample is drawn with the seed from the training split; its
identity (size, seed, sha256 of the sorted image hashes) is part of the
fingerprint, and the quantized model is saved in the cache (`int8/`) so
resuming and `predict` run the very same int8 model instead of quantizing
again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass

import numpy as np

from .errors import UsageError, param

CALIBRATION_IMAGES = 300  # NNCF's default subset size; issue 18 measured with 300
HELD_OUT_IMAGES = 64
# MobileNet's 46 % warns, VGG16's 4.3 % does not (issue 18); measured here: see RESULTS.md
FIDELITY_WARN = 0.10
MODEL_FILE = "model.xml"
INFO_FILE = "quantization.json"
NNCF_HINT = 'pip install "featcache[openvino]"'


@dataclass
class Quantized:
    """A quantized feature model on disk and what it was made from.

    Attributes:
        folder: the folder holding model.xml/.bin and quantization.json.
        calibration: identity of the calibration sample (goes into the fingerprint).
        fidelity: {"relative_l2": median over the held-out images, "held_out": n,
            "worst": the largest, "warn_above": FIDELITY_WARN}.
    """

    folder: str
    calibration: dict
    fidelity: dict

    @property
    def model_path(self) -> str:
        return os.path.join(self.folder, MODEL_FILE)

    @property
    def warning(self) -> str | None:
        l2 = self.fidelity["relative_l2"]
        if l2 <= FIDELITY_WARN:
            return None
        return (f"{param('precision')} int8 moves this backbone's features {l2:.1%} from "
                f"float32 (median relative L2 on {self.fidelity['held_out']} held-out training "
                f"images; above {FIDELITY_WARN:.0%}): check the head's accuracy against a float32 "
                f"cache before relying on it.")


def import_nncf():
    try:
        import nncf
    except ImportError:
        raise UsageError(f"{param('precision')} int8 needs NNCF, which is not installed: "
                         f"{NNCF_HINT}") from None
    return nncf


def calibration_identity(calibration: list[tuple[str, str]], seed: int) -> dict:
    digest = hashlib.sha256("\n".join(sorted(h for _, h in calibration)).encode()).hexdigest()
    return {"images": len(calibration), "seed": int(seed), "sha256": digest}


def quantize(extractor, calibration_pixels: np.ndarray, check_pixels: np.ndarray,
             folder: str, identity: dict) -> Quantized:
    """Quantize `extractor`'s model (an OpenVINO float32 extractor) and save it in `folder`.

    Args:
        calibration_pixels: (N, S, S, 3) float pixels NNCF collects statistics on.
        check_pixels: held-out pixels the fidelity figure is measured on.
    """
    from .runtimes import convert, import_openvino, openvino_compile

    nncf = import_nncf()
    ov = import_openvino()
    converted = convert(extractor.model)
    dataset = nncf.Dataset([calibration_pixels[i:i + 1] for i in range(len(calibration_pixels))])
    # NNCF draws progress bars on stdout, which belongs to --json output: send them to stderr
    with contextlib.redirect_stdout(sys.stderr):
        quantized = nncf.quantize(converted, dataset, subset_size=len(calibration_pixels))
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    ov.save_model(quantized, os.path.join(tmp, MODEL_FILE))

    int8_call = openvino_compile(ov.Core().read_model(os.path.join(tmp, MODEL_FILE)), "float32")
    exact = extractor.features(check_pixels, 1)
    approx = np.concatenate([int8_call(check_pixels[i:i + 1]) for i in range(len(check_pixels))])
    per_image = (np.linalg.norm((approx - exact).reshape(len(exact), -1), axis=1)
                 / np.maximum(np.linalg.norm(exact.reshape(len(exact), -1), axis=1), 1e-12))
    fidelity = {"relative_l2": float(np.median(per_image)), "worst": float(per_image.max()),
                "held_out": len(check_pixels), "warn_above": FIDELITY_WARN}
    with open(os.path.join(tmp, INFO_FILE), "w") as fh:
        json.dump({"calibration": identity, "fidelity": fidelity,
                   "nncf": nncf.__version__}, fh, indent=2)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return Quantized(folder, identity, fidelity)


def load(folder: str) -> Quantized | None:
    """The quantized model saved in `folder`, or None when there is none (or it is incomplete)."""
    try:
        with open(os.path.join(folder, INFO_FILE)) as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return None
    if not os.path.exists(os.path.join(folder, MODEL_FILE)):
        return None
    return Quantized(folder, info["calibration"], info["fidelity"])
