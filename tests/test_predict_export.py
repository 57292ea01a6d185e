"""predict, export and evaluate: the backbone rebuilt for a head, checked by fingerprint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from featcache.cli import main
from featcache.decode import ResizeSpec, read_image
from featcache.errors import ExportError
from featcache.export import export_model
from featcache.prediction import predict_images
from featcache.train import train_head

LOAD_WITHOUT_FEATCACHE = """
import sys
import numpy as np
import keras
model = keras.models.load_model(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
assert not any(name.startswith("featcache") for name in sys.modules), "featcache was imported"
"""


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", ["dense256", "logreg"])
def test_exported_model_equals_backbone_then_head(name, mobilenet_cache, data_root, weights_dir, tmp_path):
    cache = mobilenet_cache("tiny_hymenoptera")
    head = train_head(cache, name, str(tmp_path / "head"),
                      {"epochs": 3} if name == "dense256" else None, progress=False).out
    images = data_root / "tiny_hymenoptera" / "val"
    two_stage = predict_images(head, [str(images)], top_k=2, weights_dir=str(weights_dir))
    assert len(two_stage) == 8 and all("error" not in row for row in two_stage)

    info = export_model(head, str(tmp_path / "model.keras"), weights_dir=str(weights_dir))
    classes = info["class_names"]
    spec = ResizeSpec.from_fingerprint(info["input"]["resize"])  # the decode mode included
    pixels = np.stack([read_image(row["path"], spec)[0] for row in two_stage]).astype("float32")
    np.save(tmp_path / "pixels.npy", pixels)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_FEATCACHE, info["model"],
                           str(tmp_path / "pixels.npy"), str(tmp_path / "probs.npy")],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    exported = np.load(tmp_path / "probs.npy")
    expected = np.array([[next(c["score"] for c in row["top_k"] if c["label"] == name_)
                          for name_ in classes] for row in two_stage])
    np.testing.assert_allclose(exported, expected, rtol=1e-4, atol=1e-5)


def test_heads_without_a_keras_form_refuse_export(mobilenet_cache, tmp_path, capsys):
    head = train_head(mobilenet_cache("tiny_hymenoptera"), "knn", str(tmp_path / "knn"),
                      progress=False).out
    with pytest.raises(ExportError, match="A knn head cannot be written as Keras layers"):
        export_model(head, str(tmp_path / "x.keras"))
    code, _, err = cli(capsys, "export", "--model", head, "--out", str(tmp_path / "x.keras"))
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "x.keras").exists()


def test_evaluate_refuses_a_cache_made_differently(mobilenet_cache, tmp_path, capsys):
    head = train_head(mobilenet_cache("tiny_hymenoptera"), "logreg", str(tmp_path / "h"),
                      progress=False).out
    code, out, _ = cli(capsys, "evaluate", "--model", head, "--cache",
                       mobilenet_cache("tiny_hymenoptera"), "--json")
    assert code == 0 and json.loads(out)["rows"] == 8
    other = mobilenet_cache("tiny_hymenoptera", pooling="max")
    code, out, err = cli(capsys, "evaluate", "--model", head, "--cache", other)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert 'pooling: cache has "avg", this run has "max"' in err


def test_predict_refuses_when_the_backbone_would_differ(mobilenet_cache, weights_dir, data_root,
                                                        tmp_path, capsys):
    head = train_head(mobilenet_cache("tiny_hymenoptera"), "logreg", str(tmp_path / "h"),
                      progress=False).out
    path = os.path.join(head, "fingerprint.json")
    stored = json.load(open(path))
    stored["fingerprint"]["versions"]["keras"] = "2.15.0"  # as if trained on an older Keras
    json.dump(stored, open(path, "w"))
    code, _, err = cli(capsys, "predict", "--model", head, "--weights-dir", str(weights_dir),
                       str(data_root / "tiny_hymenoptera" / "val"))
    assert code == 2 and err.count("\n") == 1
    assert 'versions.keras: cache has "2.15.0"' in err


def test_predict_json_names_labels_and_reports_unreadable_files(mobilenet_cache, weights_dir,
                                                                data_root, tmp_path, capsys):
    head = train_head(mobilenet_cache("tiny_hymenoptera"), "logreg", str(tmp_path / "h"),
                      progress=False).out
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    ant = data_root / "tiny_hymenoptera" / "val" / "ants"
    code, out, err = cli(capsys, "predict", "--model", head, "--weights-dir", str(weights_dir),
                         "--json", "--top-k", "1", str(ant), str(broken))
    rows = json.loads(out)
    assert code == 1 and "1 of 5 file(s) could not be read" in err
    good = [r for r in rows if "error" not in r]
    assert len(good) == 4 and {"path", "label", "score", "top_k"} <= set(good[0])
    assert all(r["label"] in ("ants", "bees") and 0 <= r["score"] <= 1 for r in good)
    assert sum(r["label"] == "ants" for r in good) >= 3
    assert rows[-1]["path"] == str(broken) and "error" in rows[-1]


def test_train_head_json_reports_accuracy_and_seconds(mobilenet_cache, tmp_path, capsys):
    code, out, _ = cli(capsys, "train-head", "--cache", mobilenet_cache("tiny_hymenoptera"),
                       "--model", "dense256", "--epochs", "2", "--out", str(tmp_path / "h"), "--json")
    summary = json.loads(out)
    assert code == 0 and 0 <= summary["val_accuracy"] <= 1 and summary["seconds"] > 0
    assert "history.png" in summary["files"]
