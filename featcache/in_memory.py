"""Images held in memory as extraction and prediction input.

Accepted: a NumPy array (N, H, W, 3) or (N, H, W) of uint8 with `labels=`; a
list of PIL images with `labels=`; an iterable of (image, label) pairs, such
as a `tf.data.Dataset` from `tfds.load(..., as_supervised=True)` (integer
labels are named through `class_names=`); and a Hugging Face
`datasets.Dataset` with an image column (class names from its `ClassLabel`).
The kind is told from the object's type, without importing TensorFlow or
`datasets`.

The images are read once, in their own order, and written as PNG files (the
decoded pixels, losslessly) under the cache, in `inputs/<class>/<index>.png`;
extraction then runs on that folder exactly as on any other, so the features
equal those of the same images saved as PNG files, and `verify --repair` can
re-extract them. Each image is identified by the sha256 of its pixels and
shape, recorded in `inputs/.sequence.json`: a rerun (resume) must yield the
same images in the same order, and is refused at the first image that differs
(a shuffled pipeline, another split). The PNG copies cost disk space: about
the images' own size, compressed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator

import numpy as np

from .cache import INPUTS_DIR  # noqa: F401 (where api.extract writes them)
from .errors import UsageError
from .fileio import read_json, write_json_atomic
SEQUENCE_FILE = ".sequence.json"  # hidden: the folder scan passes over it


def is_in_memory(data) -> bool:
    """Whether `data` is images in memory rather than a folder or list file's path."""
    return data is not None and not isinstance(data, (str, bytes, os.PathLike))


def _module(obj) -> str:
    return type(obj).__module__ or ""


def _pixels(image) -> np.ndarray:
    """An image (array, PIL image, tensor) as a (H, W, 3) uint8 array."""
    if hasattr(image, "numpy") and not isinstance(image, np.ndarray):  # a TensorFlow/PyTorch tensor
        image = image.numpy()
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise UsageError(f"An image of shape {array.shape}: images must be (H, W, 3), (H, W, 4) or "
                         "(H, W) arrays or PIL images.")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
            raise UsageError("Images are floats in [0, 1]: pass uint8 pixels (0-255), as decoded, "
                             "so featcache applies the backbone's own preprocessing.")
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array[..., :3])


def pixel_hash(pixels: np.ndarray) -> str:
    """The identity of an image: sha256 of its shape and its pixels."""
    digest = hashlib.sha256(repr(tuple(pixels.shape)).encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


def _label_name(label, class_names) -> str:
    if hasattr(label, "numpy") and not isinstance(label, np.ndarray):
        label = label.numpy()
    label = label.item() if isinstance(label, np.generic) or (isinstance(label, np.ndarray)
                                                              and label.ndim == 0) else label
    if isinstance(label, bytes):
        label = label.decode()
    if isinstance(label, (int, np.integer)) and class_names is not None:
        if not 0 <= int(label) < len(class_names):
            raise UsageError(f"Label {label} is outside class_names ({len(class_names)} names).")
        return str(class_names[int(label)])
    return str(label)


def _hf_columns(dataset, image_column, label_column):
    features = dataset.features
    kinds = {name: type(feature).__name__ for name, feature in features.items()}
    image_column = image_column or next((n for n, k in kinds.items() if k == "Image"), None)
    if image_column is None:
        raise UsageError(f"The dataset has no image column (columns: {', '.join(kinds)}): pass "
                         "image_column=NAME.")
    label_column = label_column or next((n for n, k in kinds.items() if k == "ClassLabel"), None)
    names = getattr(features[label_column], "names", None) if label_column else None
    return image_column, label_column, names


def image_label_pairs(data, labels=None, class_names=None, image_column=None,
                      label_column=None) -> Iterator[tuple[np.ndarray, str | None]]:
    """(pixels, class name or None) for every image of an in-memory source, in its order."""
    if _module(data).startswith("datasets") and hasattr(data, "features"):  # Hugging Face
        image_column, label_column, names = _hf_columns(data, image_column, label_column)
        class_names = class_names or names
        for row in data:
            label = row[label_column] if label_column else None
            yield _pixels(row[image_column]), (_label_name(label, class_names)
                                               if label is not None else None)
        return
    if _module(data).startswith("tensorflow") and hasattr(data, "as_numpy_iterator"):
        data = data.as_numpy_iterator()  # tf.data: (image, label) pairs
    if isinstance(data, np.ndarray) or (isinstance(data, list) and labels is not None):
        if labels is not None and len(labels) != len(data):
            raise UsageError(f"labels has {len(labels)} entries for {len(data)} images.")
        for i, image in enumerate(data):
            yield _pixels(image), (_label_name(labels[i], class_names) if labels is not None else None)
        return
    if not isinstance(data, Iterable):
        raise UsageError(f"Cannot read images from a {type(data).__name__}: pass a folder, an array "
                         "(N, H, W, 3), a list of PIL images, an iterable of (image, label) pairs, "
                         "a tf.data.Dataset or a Hugging Face dataset.")
    for item in data:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            image, label = item
            yield _pixels(image), _label_name(label, class_names)
        else:
            yield _pixels(item), None


def write_inputs(data, folder: str, labels=None, class_names=None, image_column=None,
                 label_column=None, need_labels: bool = True) -> str:
    """Write an in-memory source as PNG files under `folder`; returns the folder.

    An existing folder must hold the same sequence (resume); the first image
    that differs is refused.

    Raises:
        UsageError: no labels where they are needed, a different sequence, bad images.
    """
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    sequence_path = os.path.join(folder, SEQUENCE_FILE)
    before = read_json(sequence_path).get("images", []) if os.path.isfile(sequence_path) else None
    seen: list[dict] = []
    for index, (pixels, label) in enumerate(image_label_pairs(data, labels, class_names,
                                                              image_column, label_column)):
        if label is None:
            if need_labels:
                raise UsageError("In-memory images need their classes: pass labels= (one per image), "
                                 "or (image, label) pairs.")
            label = "unlabelled"
        if not label or label.startswith(".") or "/" in label or "\\" in label:
            raise UsageError(f"Class name {label!r} cannot name a folder; rename it.")
        digest = pixel_hash(pixels)
        if before is not None and (index >= len(before) or before[index]["sha256"] != digest
                                   or before[index]["label"] != label):
            raise UsageError(
                f"Image {index} differs from the one this cache was started with: resuming needs "
                "the same images in the same order (no shuffling). Pass the same sequence, or a "
                "new out folder.")
        name = os.path.join(label, f"{index:08d}.png")
        path = os.path.join(folder, name)
        if before is None or not os.path.isfile(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp"
            Image.fromarray(pixels).save(tmp, "PNG")
            os.replace(tmp, path)
        seen.append({"file": name, "sha256": digest, "label": label})
    if before is not None and len(seen) != len(before):
        raise UsageError(f"The images number {len(seen)}; this cache was started with "
                         f"{len(before)}: resuming needs the same sequence.")
    if not seen:
        raise UsageError("No images in the in-memory input.")
    write_json_atomic(sequence_path, {"images": seen})
    return folder
