"""Heads on real cached features: every head trains, saves, reloads and scores alike."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import REPO

import featcache
from featcache.artifacts import load_head
from featcache.errors import ParameterError, UsageError
from featcache.extract import ExtractOptions, extract
from featcache.heads import HEADS, head_params, list_heads
from featcache.heads.feed import epoch_windows, parse_size
from featcache.train import train_head


def fast(name: str, **params) -> dict:
    """Few epochs for the heads that train in epochs."""
    return {"epochs": 4, **params} if "epochs" in head_params(name) else dict(params)


@pytest.mark.parametrize("name", list_heads())
def test_every_head_trains_saves_and_reloads(name, mobilenet_cache, tmp_path):
    dataset = "tiny_hymenoptera" if name == "sigmoid" else "tiny_flowers5"
    cache = mobilenet_cache(dataset)
    summary = train_head(cache, name, str(tmp_path / name), fast(name), progress=False)
    assert 0.0 <= summary.val_accuracy <= 1.0 and summary.seconds > 0
    files = set(os.listdir(tmp_path / name))
    assert {"config.json", "fingerprint.json", "metrics.json", "history.json",
            "confusion_matrix.png"} <= files
    assert ("model.keras" if HEADS[name].kind == "keras" else "model.joblib") in files
    if HEADS[name].kind == "keras":
        assert "history.png" in files and len(summary.metrics) and summary.notes["epochs_run"] <= 4
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    assert metrics["split"] == "val" and np.sum(metrics["confusion_matrix"]) == metrics["rows"]
    assert set(metrics["per_class"]) == set(metrics["class_names"])

    head, config, fingerprint = load_head(str(tmp_path / name))
    val = featcache.load_features(cache, "val")
    scores = head.predict_proba(val.features)
    assert scores.shape == (len(val), len(val.class_names))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float(np.mean(scores.argmax(axis=1) == val.labels))
    assert accuracy == pytest.approx(summary.val_accuracy)
    assert fingerprint["fingerprint_hash"] == featcache.FeatureCache(cache).fingerprint_hash


def test_defaults_learn_real_features(mobilenet_cache, tmp_path):
    """Not a benchmark: 10 ImageNet classes, 6 training images each; chance is 0.1."""
    cache = mobilenet_cache("tiny_imagenette")
    for name in ("logreg", "dense256"):
        summary = train_head(cache, name, str(tmp_path / name), progress=False)
        assert summary.val_accuracy >= 0.8 and summary.metrics["top5_accuracy"] >= 0.9


def test_same_seed_same_keras_head_and_other_seed_differs(mobilenet_cache, tmp_path):
    cache = mobilenet_cache("tiny_flowers5")
    runs = [train_head(cache, "dense256", str(tmp_path / f"r{i}"), {"epochs": 3, "seed": seed},
                       progress=False) for i, seed in enumerate((7, 7, 8))]
    weights = [load_head(r.out)[0].model_.get_weights() for r in runs]
    assert all(np.array_equal(a, b) for a, b in zip(weights[0], weights[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(weights[0], weights[2]))


@pytest.mark.parametrize("name", ["dense256", "sgd"])
def test_streamed_under_a_small_budget_equals_in_memory(name, mobilenet_cache, tmp_path):
    cache = mobilenet_cache("tiny_flowers5")  # 70 rows of 4 KiB: 280 KiB as float32
    options = {"epochs": 3, "seed": 3, "shuffle_window": 8, "batch_size": 8}
    memory = train_head(cache, name, str(tmp_path / "memory"), options, progress=False)
    streamed = train_head(cache, name, str(tmp_path / "streamed"), options, max_memory="270KB",
                          progress=False)
    assert memory.in_memory and not streamed.in_memory
    val = featcache.load_features(cache, "val")
    a = load_head(memory.out)[0].predict_proba(val.features)
    b = load_head(streamed.out)[0].predict_proba(val.features)
    np.testing.assert_array_equal(a, b)


def test_in_memory_only_heads_say_so_under_a_small_budget(mobilenet_cache, tmp_path):
    with pytest.raises(UsageError, match=r"model=logreg needs the features in memory .*model=sgd"):
        train_head(mobilenet_cache("tiny_flowers5"), "logreg", str(tmp_path / "h"),
                   max_memory="100KB", progress=False)
    with pytest.raises(UsageError, match="cannot hold 4 shuffle windows"):
        train_head(mobilenet_cache("tiny_flowers5"), "dense256", str(tmp_path / "h"),
                   {"shuffle_window": 64}, max_memory="100KB", progress=False)


def test_schedule_is_a_permutation_mixing_blocks():
    windows = epoch_windows(1000, block_rows=10, window_rows=200, seed=1, epoch=0)
    order = np.concatenate([w.order for w in windows])
    assert sorted(order.tolist()) == list(range(1000)) and len(windows) == 5
    assert not np.array_equal(order, np.arange(1000))
    again = np.concatenate([w.order for w in epoch_windows(1000, 10, 200, 1, 0)])
    other = np.concatenate([w.order for w in epoch_windows(1000, 10, 200, 1, 1)])
    assert np.array_equal(order, again) and not np.array_equal(order, other)


def test_sizes_parse():
    assert parse_size("512MB") == 512 << 20 and parse_size("1.5GiB") == int(1.5 * (1 << 30))
    with pytest.raises(UsageError, match="max_memory lots"):
        parse_size("lots")


def test_spatial_features_flatten_or_pool_and_the_artifact_says_which(tiny_folder, tmp_path):
    cache = extract(ExtractOptions(data=str(tiny_folder), out=str(tmp_path / "c"), backbone="vgg16",
                                   image_size=64, weights="none", pooling="none", progress=False))
    assert cache.feature_shape == (2, 2, 512)
    for name, spatial in (("dense256", "flatten"), ("dense512", "avg"), ("logreg", "avg"),
                          ("linear", "max")):
        opts = {"epochs": 2} if HEADS[name].kind == "keras" else {}
        opts["spatial"] = "max" if name == "linear" else None
        summary = train_head(cache.cache, name, str(tmp_path / name), opts, progress=False)
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["spatial"] == spatial and summary.val_accuracy is not None


def test_search_and_class_weights(mobilenet_cache, tmp_path):
    cache = mobilenet_cache("tiny_flowers5")
    summary = train_head(cache, "logreg", str(tmp_path / "s"),
                         {"search": True, "cv": 3, "class_weight": "balanced"}, progress=False)
    assert summary.notes["search"]["best"] in (0.01, 0.1, 1.0, 10.0)
    assert len(summary.notes["search"]["mean_cv_accuracy"]) == 4
    train_head(cache, "dense256", str(tmp_path / "w"), {"epochs": 2, "class_weight": "balanced"},
               progress=False)


def test_head_option_errors_are_clear(mobilenet_cache, tmp_path):
    with pytest.raises(ParameterError, match="Head 'sigmoid' has one sigmoid unit, for two classes; "
                                             "this data has 5"):
        train_head(mobilenet_cache("tiny_flowers5"), "sigmoid", str(tmp_path / "h"), progress=False)
    with pytest.raises(UsageError, match=r"Unknown head 'dense265' \(model\)\. Did you mean dense256"):
        train_head(mobilenet_cache("tiny_flowers5"), "dense265", str(tmp_path / "h"), progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="holds no featcache head"):
        train_head(mobilenet_cache("tiny_flowers5"), "logreg", str(tmp_path / "busy"), progress=False)
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "precious"


def test_pickled_heads_load_only_when_featcache_wrote_them(mobilenet_cache, tmp_path, monkeypatch):
    cache = mobilenet_cache("tiny_flowers5")
    out = train_head(cache, "logreg", str(tmp_path / "h"), progress=False).out
    load_head(out)
    monkeypatch.setenv("FEATCACHE_TRUST_STORE", str(tmp_path / "someone-else.txt"))
    with pytest.raises(UsageError, match="pickle that featcache did not write for this user"):
        load_head(out)
    assert load_head(out, trust=True)[0].model_ is not None
    with open(os.path.join(out, "model.joblib"), "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(UsageError, match="changed since featcache wrote it"):
        load_head(out)


# ---------------------------------------------------------------- the estimator contract
def _problem(n_classes: int, rows: int = 60, features: int = 8):
    rng = np.random.default_rng(0)
    y = np.arange(rows) % n_classes
    X = rng.normal(size=(rows, features)).astype("float32")
    X[np.arange(rows), y] += 3.0
    return X, y


def _quick(name: str) -> dict:
    """Parameters that keep a head's fit on a toy problem short."""
    return {"epochs": 3} if HEADS[name].kind == "keras" else ({"trees": 10} if name == "random-forest" else {})


@pytest.mark.parametrize("name", list_heads())
def test_every_head_is_a_scikit_learn_estimator(name):
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    from featcache.heads import create_head

    head = clone(create_head(name, **_quick(name)))
    assert head.get_params()["seed"] == 0 and head.set_params(seed=1) is head
    X, y = _problem(2 if name == "sigmoid" else 3)
    labels = np.array(["ant", "bee", "cat"])[y]  # any sortable labels
    with pytest.raises(NotFittedError):
        head.predict(X)
    assert head.fit(X, labels) is head
    assert list(head.classes_) == sorted(set(labels)) and head.n_features_in_ == 8
    assert head.feature_shape_ == (8,) and isinstance(head.notes_, dict)
    assert set(head.predict(X)) <= set(labels)
    np.testing.assert_allclose(head.predict_proba(X).sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="X has 4 features, but .* is expecting 8 features"):
        head.predict(X[:, :4])
    if name == "sigmoid":
        with pytest.raises(ParameterError, match="for two classes; this data has 3"):
            clone(head).fit(*_problem(3))


def test_keras_and_sklearn_heads_take_spatial_rows_and_validation_data():
    from featcache.heads import create_head

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 2, 2, 4)).astype("float32"), np.arange(40) % 2
    head = create_head("dense256", epochs=2, spatial="max").fit(X, y, validation_data=(X[:8], y[:8]))
    assert head.n_features_in_ == 16 and head.feature_shape_ == (2, 2, 4) and head.spatial_ == "max"
    assert len(head.history_["val_loss"]) == 2 and head.best_epoch_ in (0, 1)
    assert create_head("logreg").fit(X, y).spatial_ == "avg"


def test_fit_on_arrays_equals_fit_cache_on_the_same_split(mobilenet_cache):
    from featcache.heads import create_head
    from featcache.heads.feed import FeatureSplit

    cache = featcache.FeatureCache(mobilenet_cache("tiny_flowers5"))
    train = FeatureSplit(cache, "train", in_memory=True)
    val = featcache.load_features(cache.path, "val")
    for name, params in (("dense256", {"epochs": 2, "seed": 4}), ("sgd", {"epochs": 2})):
        from_cache = create_head(name, **params).fit_cache(train)
        names = np.array(cache.class_names)
        from_arrays = create_head(name, **params).fit(train.all_features(), names[train.labels])
        assert list(from_cache.classes_) == list(from_arrays.classes_) == cache.class_names
        np.testing.assert_array_equal(from_cache.predict_proba(val.features),
                                      from_arrays.predict_proba(val.features))
    train.close()


def test_parameters_that_do_not_apply_are_named():
    from featcache.heads import create_head

    with pytest.raises(ParameterError, match=r"^C=1\.0: does not apply to head 'dense256'; its "
                                             r"parameters: .*epochs") as err:
        create_head("dense256", C=1.0)
    assert err.value.param == "C" and "--C=1.0" in err.value.cli_message()
    with pytest.raises(ParameterError, match="epochs=3: does not apply to head 'logreg'"):
        create_head("logreg", epochs=3)
    with pytest.raises(ParameterError, match="class_weight=balanced: does not apply to head 'knn'"):
        create_head("knn", class_weight="balanced")
    with pytest.raises(ParameterError, match="optimizer=adagrad: allowed values are adam"):
        create_head("linear", optimizer="adagrad").fit(*_problem(3))
    assert create_head("sgd", epochs=2, batch_size=8).epochs == 2  # sgd trains in epochs
    assert create_head("logreg", C=None).C == 1.0  # None: the head's default
    with pytest.raises(UsageError, match=r"Unknown head 'dense265' \(model\)\. Did you mean dense256"):
        create_head("dense265")


def test_importing_the_registry_loads_neither_keras_nor_scikit_learn():
    import subprocess
    import sys

    code = ("import sys, featcache.heads as h; h.list_heads(); h.get_head_spec('logreg'); "
            "print([m for m in ('keras', 'tensorflow', 'sklearn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(REPO))
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["dense256", "logreg"])
def test_head_folders_written_before_params_still_load(name, mobilenet_cache, tmp_path):
    """Folders from the old code record every HeadOptions field under "options"."""
    cache = mobilenet_cache("tiny_flowers5")
    out = train_head(cache, name, str(tmp_path / name), fast(name), progress=False).out
    config = json.loads((tmp_path / name / "config.json").read_text())
    old = {"epochs": 4 if name == "dense256" else None, "batch_size": 32, "optimizer": "adam",
           "learning_rate": None, "early_stopping": True, "patience": 5, "class_weight": None,
           "label_smoothing": 0.0, "units": [512, 128], "dropout": 0.5, "l2": 0.0,
           "C": 1.0 if name == "logreg" else None, "alpha": None, "neighbors": None, "trees": None,
           "scale": False if name == "logreg" else None, "pca": None, "search": False, "cv": 5,
           "spatial": None, "shuffle_window": None, "seed": 0}
    del config["params"]
    (tmp_path / name / "config.json").write_text(json.dumps({**config, "options": old}))
    head = load_head(out)[0]
    assert head.name == name and head.get_params()["epochs" if name == "dense256" else "C"] in (4, 1.0)
    if name == "dense256":
        assert head.units == (256,)  # the old code used --units only for mlp
    val = featcache.load_features(cache, "val")
    assert head.predict_proba(val.features).shape == (len(val), 5)


# scikit-learn's own estimator checks, on every registered head
def _check_name(check) -> str:
    return getattr(check, "func", check).__name__


_NO_DICT_CLASS_WEIGHT = "class_weight takes only 'balanced' (featcache's one mode), not a dict"
_SHORT_TRAINING = ("trained for a few epochs to keep the test short, a Keras head does not reach "
                   "the check's training accuracy; featcache's own tests check learning")
_KERAS_FAST_CHECKS = {
    "check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_parameters_default_constructible", "check_get_params_invariance", "check_set_params",
    "check_estimators_unfitted", "check_fit_check_is_fitted", "check_estimators_fit_returns_self",
    "check_n_features_in_after_fitting", "check_dict_unchanged", "check_dont_overwrite_parameters",
}


def _estimator_check_params(select):
    from sklearn.utils.estimator_checks import parametrize_with_checks

    from featcache.heads import create_head

    estimators = [create_head(n, **_quick(n)) for n in list_heads()]

    def expected(estimator) -> dict:
        failures = {"check_class_weight_classifiers": _NO_DICT_CLASS_WEIGHT}
        if HEADS[estimator.name].kind == "keras":
            failures["check_classifiers_train"] = _SHORT_TRAINING
            failures["check_methods_sample_order_invariance"] = (
                "float32 Keras arithmetic: scores of reordered rows can differ in the last bits, "
                "beyond the check's rtol=1e-7")
        return failures

    mark = parametrize_with_checks(estimators, expected_failed_checks=expected)
    names, cases = mark.args
    chosen = []
    for case in cases:
        estimator, check = case.values if hasattr(case, "values") else case
        if select(estimator, _check_name(check)):
            chosen.append(case)
    return pytest.mark.parametrize(names, chosen, **mark.kwargs)


# the default run checks these Keras heads (one multi-class, the binary one); CI's slow run all
_KERAS_DEFAULT_RUN = ("dense256", "sigmoid")


def _fast(estimator, check: str) -> bool:
    return HEADS[estimator.name].kind != "keras" or (
        check in _KERAS_FAST_CHECKS and estimator.name in _KERAS_DEFAULT_RUN)


@_estimator_check_params(_fast)
def test_heads_pass_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.slow
@_estimator_check_params(lambda estimator, check: not _fast(estimator, check))
def test_keras_heads_pass_the_full_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_in_memory_only_heads_refuse_a_streamed_split(mobilenet_cache):
    from featcache.heads import create_head
    from featcache.heads.feed import FeatureSplit

    train = FeatureSplit(featcache.FeatureCache(mobilenet_cache("tiny_flowers5")), "train", False)
    try:
        with pytest.raises(UsageError, match="Head 'logreg' needs the training features in memory"):
            create_head("logreg").fit_cache(train)
    finally:
        train.close()
