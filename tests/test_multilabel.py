"""Multi-label data: a list whose label cells name several labels, heads with one output per
label, thresholds tuned on validation, and label sets out of predict."""

import json

import numpy as np
import pytest
from conftest import make_folder

from featcache.cli import main
from featcache.dataset import load_dataset
from featcache.errors import DataError, ParameterError, UsageError
from featcache.heads import create_head
from featcache.multilabel import indicator, label_set, tune_thresholds, vocabulary

COLOUR = {"daisy": "white", "dandelion": "yellow", "rose": "red", "sunflower": "yellow",
          "tulip": "red"}


def flower_colour_list(data_root, tmp_path) -> tuple[str, str]:
    """tiny_flowers5 as a multi-label list: each image's flower and its colour."""
    root = data_root / "tiny_flowers5"
    lines = ["path,labels,split"]
    for split in ("train", "val"):
        for image in sorted((root / split).glob("*/*.jpg")):
            flower = image.parent.name
            lines.append(f"{image.relative_to(root)},{COLOUR[flower]};{flower},{split}")
    path = tmp_path / "flowers.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path), str(root)


def test_a_list_with_label_sets_is_multi_label(tmp_path):
    make_folder(tmp_path, {"": {"a": 3}})
    (tmp_path / "l.csv").write_text("a/a_000.jpg, red ; round;red\na/a_001.jpg,round\n"
                                    "a/a_002.jpg,green;round,val\n")
    ds = load_dataset(str(tmp_path / "l.csv"))
    assert ds.multi_label
    assert ds.class_names == ["green;round", "red;round", "round"]  # sets, canonical form
    assert ds.label_names == ["green", "red", "round"]
    assert [r.label for r in ds.records] == ["red;round", "round", "green;round"]
    # the split warning speaks of labels, not of the sets
    assert any("split val has no images of label red" in w for w in ds.warnings)


def test_a_labels_header_makes_a_list_multi_label_and_single_label_lists_are_unchanged(tmp_path):
    make_folder(tmp_path, {"": {"a": 2}})
    (tmp_path / "m.csv").write_text("path,labels\na/a_000.jpg,x\na/a_001.jpg,y\n")
    (tmp_path / "s.csv").write_text("path,label\na/a_000.jpg,x\na/a_001.jpg,y\n")
    multi, single = load_dataset(str(tmp_path / "m.csv")), load_dataset(str(tmp_path / "s.csv"))
    assert multi.multi_label and not single.multi_label
    assert multi.class_names == single.class_names == single.label_names == ["x", "y"]


def test_a_label_cell_without_labels_names_the_line(tmp_path):
    make_folder(tmp_path, {"": {"a": 1}})
    (tmp_path / "l.csv").write_text("a/a_000.jpg, ; \n")
    with pytest.raises(DataError, match=r"l\.csv:1: the label cell .* names no label"):
        load_dataset(str(tmp_path / "l.csv"))


def test_label_sets_and_their_indicator():
    sets = [label_set("b;a"), label_set("a"), label_set("c;a;c")]
    assert sets == ["a;b", "a", "a;c"]
    assert vocabulary(sets) == ["a", "b", "c"]
    assert indicator(sets, ["a", "b", "c"]).tolist() == [[1, 1, 0], [1, 0, 0], [1, 0, 1]]


def test_thresholds_maximise_each_labels_f1():
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 0], [0, 1]])
    scores = np.array([[0.30, 0.9], [0.25, 0.1], [0.20, 0.8], [0.05, 0.7], [0.10, 0.6]])
    t = tune_thresholds(targets, scores)
    # label 0: 0.25 and 0.30 are positive, 0.20 is not: the cut lies between them
    assert 0.20 < t[0] <= 0.25
    # label 1: the best F1 keeps 0.8 and 0.6 and the false 0.9 and 0.7 (F1 2/3 > 1/2 at 0.8)
    assert 0.1 < t[1] <= 0.6
    assert tune_thresholds(np.zeros((3, 1)), np.ones((3, 1)))[0] == 0.5  # no positive: default


@pytest.mark.parametrize("name", ["logreg", "linear", "knn"])
def test_heads_fit_an_indicator_matrix(name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 1] > 1], axis=1).astype(int)
    head = create_head(name, **({"epochs": 100, "learning_rate": 0.05} if name == "linear" else {})
                       ).fit(X, Y)
    scores = head.predict_proba(X)
    assert head.multi_label and scores.shape == (120, 3)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert not np.allclose(scores.sum(axis=1), 1.0)  # labels are scored independently
    decided = head.predict(X)
    assert set(np.unique(decided)) <= {0, 1} and decided.shape == (120, 3)
    assert (decided == Y).mean() > 0.8
    head.tune_thresholds(X, Y)
    assert head.thresholds_.shape == (3,)


def test_logreg_scores_are_its_one_vs_rest_probabilities():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 4))
    Y = np.stack([X[:, 0] > 0, X[:, 2] > 0.5], axis=1).astype(int)
    head = create_head("logreg").fit(X, Y)
    np.testing.assert_allclose(head.predict_proba(X), head.model_.predict_proba(X.astype(np.float32)),
                               atol=1e-7)


def test_heads_that_cannot_take_label_sets_say_so():
    X = np.zeros((6, 3), dtype=np.float32)
    Y = np.array([[1, 0], [0, 1], [1, 1]] * 2)
    with pytest.raises(ParameterError, match="one sigmoid per label"):
        create_head("sigmoid").fit(X, Y)
    with pytest.raises(ParameterError, match="incremental"):
        create_head("sgd").fit(X, Y)


def test_flowers_and_colours_train_predict_evaluate_and_export(data_root, weights_dir, tmp_path,
                                                               capsys):
    """The issue's check: tiny_flowers5 with a colour label per flower, dense256 and logreg."""
    from featcache import api

    listing, root = flower_colour_list(data_root, tmp_path)
    cache = str(tmp_path / "cache")
    api.extract(listing, cache, backbone="mobilenet", root=root, weights_dir=str(weights_dir),
                progress=False)
    for name in ("dense256", "logreg"):
        assert main(["train-head", "--cache", cache, "--model", name,
                     "--out", str(tmp_path / name), "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["multi_label"] and 0.5 < summary["micro_f1"] <= 1
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["label_names"] == ["daisy", "dandelion", "red", "rose", "sunflower",
                                          "tulip", "white", "yellow"]
        assert set(metrics["per_label"]["red"]) >= {"precision", "recall", "threshold",
                                                    "average_precision"}
        assert 0 < metrics["mean_average_precision"] <= 1
        assert (tmp_path / name / "per_label.png").stat().st_size > 0

    # thresholds travel with the head: evaluate on the cache gives the training metrics again
    again = api.evaluate(str(tmp_path / "logreg"), cache)
    trained = json.loads((tmp_path / "logreg" / "metrics.json").read_text())
    assert again["micro_f1"] == pytest.approx(trained["micro_f1"])

    assert main(["predict", "--model", str(tmp_path / "dense256"),
                 str(data_root / "tiny_flowers5" / "val" / "rose"), "--json",
                 "--weights-dir", str(weights_dir)]) == 0
    rows = json.loads(capsys.readouterr().out)
    config = json.loads((tmp_path / "dense256" / "config.json").read_text())
    thresholds = dict(zip(config["class_names"], config["multi_label"]["thresholds"]))
    for row in rows:
        assert isinstance(row["labels"], list) and "label" not in row
        assert row["labels"] == sorted((n for n, s in row["scores"].items() if s >= thresholds[n]),
                                       key=lambda n: -row["scores"][n])
    predicted = sum("red" in row["labels"] for row in rows)
    assert predicted >= len(rows) // 2  # roses are red: most of them get the colour

    from featcache.export import export_model

    info = export_model(str(tmp_path / "dense256"), str(tmp_path / "m.keras"),
                        weights_dir=str(weights_dir))
    sidecar = json.loads((tmp_path / "m.json").read_text())
    assert sidecar["multi_label"]["thresholds"] == config["multi_label"]["thresholds"]
    assert info["class_names"] == config["class_names"]

    with pytest.raises(UsageError, match="single-label"):
        api.train_head(cache, "logreg", calibrate=True)
    with pytest.raises(UsageError, match="single-label"):
        api.compare(cache, out=str(tmp_path / "refused"), calibrate=True)

    # compare ranks multi-label heads by out-of-fold mAP on train, thresholds from those folds
    assert main(["compare", "--cache", cache, "--heads", "logreg,dense256",
                 "--out", str(tmp_path / "cmp"), "--json"]) == 0
    board = json.loads(capsys.readouterr().out)
    assert board["multi_label"] and board["winner"] in {"logreg", "dense256"}
    ranked = sorted((r for r in board["leaderboard"] if r["status"] == "ok"), key=lambda r: r["rank"])
    assert [r["head"] for r in ranked][0] == board["winner"] and len(ranked) == 2
    assert ranked[0]["cv_map"] >= ranked[1]["cv_map"]
    for r in ranked:
        assert 0.3 < r["val_micro_f1"] <= 1 and 0 < r["cv_map"] <= 1 and "val_accuracy" not in r
    with open(tmp_path / "cmp" / "leaderboard.csv") as fh:
        assert fh.readline().strip().split(",")[4:8] == ["cv_map", "cv_log_loss", "cv_micro_f1",
                                                         "val_micro_f1"]
    winner = tmp_path / "cmp" / "winner"
    config = json.loads((winner / "config.json").read_text())
    assert config["training"]["selection"]["by"] == "out-of-fold mean average precision on train"
    assert len(config["multi_label"]["thresholds"]) == 8
    assert main(["predict", "--model", str(winner), str(data_root / "tiny_flowers5" / "val" / "tulip"),
                 "--json", "--weights-dir", str(weights_dir)]) == 0
    assert all(isinstance(row["labels"], list) for row in json.loads(capsys.readouterr().out))
    assert main(["compare", "--cache", cache, "--heads", "logreg", "--out", str(tmp_path / "text")]) == 0
    text = capsys.readouterr().out
    assert "cv mAP" in text and "micro F1" in text and "best out-of-fold mean average precision" in text
    from featcache.selection import default_heads
    assert {"sgd", "sigmoid"}.isdisjoint(default_heads(8, True, (1024,)))
    assert "logreg" in default_heads(8, True, (1024,))


def test_a_keras_head_early_stops_on_multi_label_validation_data():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(90, 5)).astype(np.float32)
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0], axis=1).astype(int)
    head = create_head("dense256", epochs=5, patience=2).fit(X[:60], Y[:60],
                                                             validation_data=(X[60:], Y[60:]))
    assert "val_loss" in head.history_ and head.predict_proba(X).shape == (90, 2)
