"""Images in memory as input: NumPy arrays, PIL images, (image, label) iterables, tf.data and
Hugging Face datasets give the features of the same images saved as PNG files; resume needs
the same sequence; predict takes arrays too."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import featcache
from featcache.errors import UsageError

OPTIONS = {"backbone": "mobilenet", "image_size": 32, "weights": "none", "progress": False}
CLASSES = ["cat", "dog"]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (10, 36, 28, 3), dtype=np.uint8)
    return pixels, np.array([i % 2 for i in range(10)])


@pytest.fixture(scope="module")
def as_files(images, tmp_path_factory):
    """The same images written as PNG files in class folders, and their cache's features."""
    from PIL import Image

    pixels, labels = images
    root = tmp_path_factory.mktemp("png")
    for i, (p, y) in enumerate(zip(pixels, labels)):
        (root / "data" / CLASSES[y]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(p).save(root / "data" / CLASSES[y] / f"{i:08d}.png")
    featcache.extract(root / "data", root / "cache", **OPTIONS)
    return featcache.load_features(str(root / "cache"), "train")


def _same(cache, reference):
    got = featcache.load_features(str(cache), "train")
    assert got.paths == reference.paths and got.class_names == reference.class_names
    np.testing.assert_allclose(got.features, reference.features, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got.labels, reference.labels)


def test_numpy_array_with_labels(images, as_files, tmp_path):
    pixels, labels = images
    featcache.extract(pixels, tmp_path / "c", labels=labels, class_names=CLASSES, **OPTIONS)
    _same(tmp_path / "c", as_files)


def test_list_of_pil_images_with_label_names(images, as_files, tmp_path):
    from PIL import Image

    pixels, labels = images
    featcache.extract([Image.fromarray(p) for p in pixels], tmp_path / "c",
                      labels=[CLASSES[y] for y in labels], **OPTIONS)
    _same(tmp_path / "c", as_files)


def test_tf_data_dataset_of_pairs(images, as_files, tmp_path):
    tf = pytest.importorskip("tensorflow")
    pixels, labels = images
    dataset = tf.data.Dataset.from_tensor_slices((pixels, labels))  # as tfds as_supervised gives
    featcache.extract(dataset, tmp_path / "c", class_names=CLASSES, **OPTIONS)
    _same(tmp_path / "c", as_files)


def test_hugging_face_dataset(images, as_files, tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    pixels, labels = images
    features = datasets.Features({"img": datasets.Image(),
                                  "label": datasets.ClassLabel(names=CLASSES)})
    dataset = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(p) for p in pixels], "label": labels.tolist()}, features=features)
    featcache.extract(dataset, tmp_path / "c", **OPTIONS)
    _same(tmp_path / "c", as_files)


def test_resume_needs_the_same_sequence(images, tmp_path):
    pixels, labels = images
    pairs = list(zip(pixels, labels))
    first = featcache.extract(iter(pairs), tmp_path / "c", class_names=CLASSES, **OPTIONS)
    again = featcache.extract(iter(pairs), tmp_path / "c", class_names=CLASSES, **OPTIONS)
    assert first.images_extracted == 10 and again.images_extracted == 0
    with pytest.raises(UsageError, match="Image 0 differs.*same order"):
        featcache.extract(iter(pairs[::-1]), tmp_path / "c", class_names=CLASSES, **OPTIONS)
    with pytest.raises(UsageError, match="labels"):
        featcache.extract(pixels, tmp_path / "d", **OPTIONS)
    with pytest.raises(UsageError, match="floats in"):
        featcache.extract(pixels / 255.0, tmp_path / "e", labels=labels, **OPTIONS)


def test_predict_takes_arrays_as_it_takes_files(images, tmp_path):
    pixels, labels = images
    cache = featcache.extract(pixels, tmp_path / "c", labels=labels, class_names=CLASSES, **OPTIONS)
    head = featcache.train_head(cache, "logreg", val_split=None)
    from_memory = featcache.predict(head, pixels[:4])
    files = {int(p.stem): str(p) for p in (tmp_path / "c" / "inputs").rglob("*.png")}
    from_files = featcache.predict(head, [files[i] for i in range(4)])
    assert [r["index"] for r in from_memory] == [0, 1, 2, 3]
    assert [r["label"] for r in from_memory] == [r["label"] for r in from_files]
    np.testing.assert_allclose([r["score"] for r in from_memory], [r["score"] for r in from_files],
                               rtol=1e-5)


def test_kind_is_told_without_importing_tensorflow_or_datasets():
    code = ("import sys, numpy as np; from featcache.in_memory import image_label_pairs;"
            "list(image_label_pairs(np.zeros((2, 4, 4, 3), np.uint8), labels=[0, 1]));"
            "list(image_label_pairs([(np.zeros((4, 4, 3), np.uint8), 'a')]));"
            "assert 'tensorflow' not in sys.modules and 'datasets' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_verify_repair_re_extracts_from_the_written_inputs(images, tmp_path, capsys):
    from featcache.cli import main

    pixels, labels = images
    featcache.extract(pixels, tmp_path / "c", labels=labels, class_names=CLASSES, **OPTIONS)
    before = featcache.load_features(str(tmp_path / "c"), "train").features
    shard = sorted((tmp_path / "c" / "shards").glob("*.h5"))[0]
    with open(shard, "r+b") as fh:  # damage it in place
        fh.seek(2000)
        fh.write(b"damaged!" * 64)
    assert main(["verify", str(tmp_path / "c")]) != 0
    assert main(["verify", str(tmp_path / "c"), "--repair"]) == 0
    assert "ok after repair" in capsys.readouterr().out
    np.testing.assert_array_equal(featcache.load_features(str(tmp_path / "c"), "train").features, before)
