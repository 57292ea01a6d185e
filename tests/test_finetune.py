"""Fine-tuning on the tiny sets: what trains, what stays frozen, resuming, and the result's use."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featcache.errors import FeatcacheWarning
from conftest import REPO, run_cli

from featcache.backbones import list_backbones
from featcache.errors import ParameterError, UsageError
from featcache.export import export_model
from featcache.finetuning import FinetuneOptions, finetune, parse_augment
from featcache.prediction import predict_images
from featcache.train import evaluate, train_head

SIZE = 96  # small input: MobileNet's 224 px ImageNet weights load at any size


@pytest.fixture(scope="module")
def small_head(mobilenet_cache, weights_dir, tmp_path_factory):
    """(cache, head folder) for a dataset: MobileNet at 96 px, dense256 trained 3 epochs."""
    made = {}

    def get(dataset: str, head: str = "dense256"):
        if (dataset, head) not in made:
            cache = mobilenet_cache(dataset, image_size=SIZE,
                                    weights=str(weights_dir / "mobilenet_1_0_224_tf_no_top.h5"))
            out = tmp_path_factory.mktemp(f"head-{dataset}-{head}")
            train_head(cache, head, str(out), {"epochs": 3}, progress=False)
            made[(dataset, head)] = (cache, str(out))
        return made[(dataset, head)]

    return get


def _nested(model, prefix: str):
    return next(layer for layer in model.layers if layer.name.startswith(prefix))


def test_only_the_unfrozen_layers_change_and_batchnorm_statistics_stay(small_head, data_root, tmp_path):
    import keras

    _, head = small_head("tiny_hymenoptera")
    data = data_root / "tiny_hymenoptera"
    summary = finetune(str(data), head, str(tmp_path / "ft"),
                       FinetuneOptions(unfreeze_top=2, epochs=1, augment="none", learning_rate=1e-3,
                                       early_stopping=False),  # keep the epoch, better or not
                       progress=False)
    assert summary.trainable_layers == ["conv_dw_13", "conv_pw_13"]
    tuned = keras.models.load_model(tmp_path / "ft" / "model.keras")
    before = keras.models.load_model(os.path.join(head, "model.keras"))
    fresh = keras.applications.MobileNet(include_top=False, input_shape=(SIZE, SIZE, 3),
                                         weights=str(data_root.parent / "weights" /
                                                     "mobilenet_1_0_224_tf_no_top.h5"))
    backbone = _nested(_nested(tuned, "featcache_"), "mobilenet")
    changed = set()
    for layer in fresh.layers:
        if not layer.weights:
            continue
        old = {w.path.split("/")[-1]: np.asarray(w) for w in layer.weights}
        new = {w.path.split("/")[-1]: np.asarray(w) for w in backbone.get_layer(layer.name).weights}
        for name, value in old.items():
            if not np.array_equal(value, new[name]):
                changed.add((layer.name, name))
    assert {layer for layer, _ in changed} == set(summary.trainable_layers)
    # every BatchNorm layer, inside the unfrozen block too, keeps its ImageNet statistics
    assert not [c for c in changed if c[0].endswith("_bn")]
    head_after = _nested(tuned, "head_")
    assert any(not np.array_equal(a, b) for a, b in zip(before.get_weights(), head_after.get_weights()))


@pytest.mark.slow  # ~50 s: a real process killed after an epoch, then resumed
def test_interrupted_run_resumes_from_its_checkpoint(small_head, data_root, weights_dir, tmp_path):
    _, head = small_head("tiny_flowers5")
    data, out = data_root / "tiny_flowers5", tmp_path / "ft"
    args = ["finetune", "--data", str(data), "--model", head, "--out", str(out), "--unfreeze-top", "2",
            "--epochs", "4", "--batch-size", "4", "--patience", "10"]
    env = {k: v for k, v in os.environ.items() if k != "FEATCACHE_WEIGHTS_DIR"}
    proc = subprocess.Popen([sys.executable, "-m", "featcache", *args, "--quiet"], cwd=str(REPO),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state_file = out / "checkpoint" / "state.json"
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline
        if state_file.exists() and json.loads(state_file.read_text())["epochs_done"] >= 1:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(state_file.read_text())["epochs_done"]
    assert 1 <= done < 4 and not (out / "model.keras").exists()

    refused = run_cli(*args)
    assert refused.returncode == 2 and "pass --resume" in refused.stderr

    resumed = run_cli(*args, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)
    assert summary["resumed_from"] == done and summary["epochs_run"] == 4
    history = json.loads((out / "history.json").read_text())
    head_epochs = history["finetune_start_epoch"]
    assert head_epochs == 3 and len(history["loss"]) == head_epochs + 4
    assert len(history["decode_seconds"]) == len(history["epoch_seconds"]) == 4  # fine-tuning's
    assert not (out / "checkpoint").exists() and (out / "history.png").exists()


def test_files_are_decoded_in_the_first_epoch_only(small_head, data_root, tmp_path):
    _, head = small_head("tiny_hymenoptera")
    summary = finetune(str(data_root / "tiny_hymenoptera"), head, str(tmp_path / "ft"),
                       FinetuneOptions(unfreeze_top=1, epochs=3, augment="none",
                                       early_stopping=False, batch_size=8), progress=False)
    history = json.loads((tmp_path / "ft" / "history.json").read_text())
    decode = history["decode_seconds"]
    assert len(decode) == len(history["epoch_seconds"]) == 3
    assert decode[0] > 0 and all(d < decode[0] / 10 for d in decode[1:]), decode
    assert summary.pixels["memory_bytes"] == (16 + 8) * SIZE * SIZE * 3
    assert summary.pixels["file_bytes"] == 0


def test_kept_pixels_spill_to_a_file_and_give_back_the_decoded_batches(data_root, tmp_path):
    import keras

    from featcache.dataset import load_dataset
    from featcache.decode import ResizeSpec
    from featcache.image_feed import PixelStore, image_batches
    from featcache.pipeline import Item

    dataset = load_dataset(str(data_root / "tiny_hymenoptera"))
    names = dataset.class_names
    items = [Item(0, dataset.abspath(r), r.path, names.index(r.label)) for r in dataset.records]
    resize = ResizeSpec((SIZE, SIZE), decode="fast")
    store = PixelStore(len(items), resize.size, str(tmp_path), memory_limit=0)  # nothing fits
    assert store.where == "file" and os.path.getsize(store.path) == len(items) * SIZE * SIZE * 3
    kept = image_batches(keras, items, resize, 2, 5, shuffle=True, seed=3, store=store)
    plain = image_batches(keras, items, resize, 2, 5, shuffle=True, seed=3)
    for epoch in range(2):
        for i in range(len(kept)):
            (a, ya), (b, yb) = kept[i], plain[i]
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(ya, yb)
        first = kept.take_decode_seconds()
        assert (first > 0) if epoch == 0 else (first == 0)  # the second epoch reads the file
        kept.on_epoch_end()
        plain.on_epoch_end()
    path = store.path
    store.close()
    assert not os.path.exists(path)


def test_finetuned_model_predicts_evaluates_and_exports(small_head, data_root, tmp_path):
    import keras

    from featcache.decode import ResizeSpec, read_image

    cache, head = small_head("tiny_hymenoptera")
    out = str(tmp_path / "ft")
    finetune(str(data_root / "tiny_hymenoptera"), head, out,
             FinetuneOptions(unfreeze_top=2, epochs=1), progress=False)
    rows = predict_images(out, [str(data_root / "tiny_hymenoptera" / "val")], top_k=2)
    assert len(rows) == 8 and all(r["label"] in ("ants", "bees") for r in rows)
    metrics = evaluate(out, cache, "val")
    assert metrics["rows"] == 8 and metrics["head"] == "dense256 (fine-tuned)"
    assert metrics["accuracy"] == pytest.approx(json.load(open(os.path.join(out, "metrics.json")))["accuracy"])
    info = export_model(out, str(tmp_path / "ft.keras"))
    exported = keras.models.load_model(info["model"])
    pixels = np.stack([read_image(r["path"], ResizeSpec.from_fingerprint(info["input"]["resize"]))[0] for r in rows]).astype("float32")
    scores = np.asarray(exported.predict(pixels, verbose=0))
    expected = [[next(c["score"] for c in r["top_k"] if c["label"] == n) for n in info["class_names"]]
                for r in rows]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
    # the fine-tuned graph (augmentation layers idle at inference) converts and passes its check
    lite = export_model(out, str(tmp_path / "ft.tflite"))
    assert lite["format"] == "tflite" and lite["parity"]["passed"]
    assert lite["parity"]["count"] == 8 and lite["parity"]["max_abs_difference"] < 1e-3


def test_finetune_refuses_what_it_cannot_do(small_head, data_root, tmp_path):
    _, head = small_head("tiny_hymenoptera")
    with pytest.raises(UsageError, match="unfreeze_from conv_dw_99: the backbone has no such layer"):
        finetune(str(data_root / "tiny_hymenoptera"), head, str(tmp_path / "a"),
                 FinetuneOptions(unfreeze_from="conv_dw_99", epochs=1), progress=False)
    with pytest.raises(UsageError, match="has classes .*daisy.*the head in .* was trained on"):
        finetune(str(data_root / "tiny_flowers5"), head, str(tmp_path / "b"),
                 FinetuneOptions(epochs=1), progress=False)
    with pytest.raises(UsageError, match="augment flip,blur: unknown 'blur'"):
        parse_augment("flip,blur")
    assert parse_augment("flip,zoom=0.2") == {"flip": 1.0, "zoom": 0.2} and parse_augment("none") == {}


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_backbone_trains_with_a_float32_head_and_loss(small_head, precision):
    """Build only: the backbone computes in `precision`, the features, head and loss in float32."""
    from featcache.artifacts import load_head
    from featcache.finetuning import build_model
    from featcache.prediction import backbone_for_head

    _, head_dir = small_head("tiny_hymenoptera")
    head, config, fingerprint = load_head(head_dir)
    with pytest.warns(FeatcacheWarning, match="trained on float32 features"):
        backbone = backbone_for_head(fingerprint, config, precision=precision)
    model, _ = build_model(backbone.extractor, head.to_keras(),
                           FinetuneOptions(unfreeze_top=2, precision=precision))
    conv = backbone.extractor.backbone.get_layer("conv_pw_13")
    assert conv.compute_dtype == precision and conv.variable_dtype == "float32"
    assert model.output.dtype == "float32"
    assert backbone.extractor.model.get_layer("featcache_preprocess").compute_dtype == "float32"
    assert ("LossScale" in type(model.optimizer).__name__) == (precision == "float16")


def test_mixed_precision_is_a_deprecated_spelling_of_float16():
    with pytest.warns(FeatcacheWarning, match="mixed_precision is deprecated"):
        options = FinetuneOptions(mixed_precision=True)
    assert options.precision == "float16"


def test_default_unfreezes_the_top_block_and_starts_where_the_head_ended(small_head, data_root, tmp_path):
    """No unfreeze flag: MobileNet's top block trains. Before the first update, the fused model
    scores what the head scored on its cache (same images, same features, inference mode)."""
    _, head = small_head("tiny_hymenoptera")
    out = tmp_path / "ft"
    summary = finetune(str(data_root / "tiny_hymenoptera"), head, str(out), FinetuneOptions(epochs=1),
                       progress=False)
    assert summary.trainable_layers == ["conv_dw_12", "conv_pw_12", "conv_dw_13", "conv_pw_13"]
    assert summary.to_json()["trainable_layers"] == summary.trainable_layers
    history = json.loads((out / "history.json").read_text())
    before = history["before_finetune"]
    head_metrics = json.loads(Path(head, "metrics.json").read_text())
    assert head_metrics["split"] == "val" and head_metrics["rows"] == 8
    assert abs(before["val_accuracy"] - head_metrics["accuracy"]) <= 1 / 8 + 1e-6  # one image
    assert before["val_loss"] > 0 and summary.before_finetune == before
    assert summary.seconds_per_epoch > 0 and summary.images_per_second > 0
    assert (out / "history.png").exists()


def test_head_only_when_asked_and_a_run_that_only_gets_worse_keeps_the_starting_weights(
        small_head, data_root, tmp_path):
    import keras

    _, head = small_head("tiny_hymenoptera")
    out = tmp_path / "ft"
    # a rate this high wrecks the model in one epoch: the starting weights must be what is kept
    summary = finetune(str(data_root / "tiny_hymenoptera"), head, str(out),
                       FinetuneOptions(unfreeze_top=0, epochs=1, warmup_epochs=0, learning_rate=3.0,
                                       augment="none"), progress=False)
    assert summary.trainable_layers == []
    history = json.loads((out / "history.json").read_text())
    assert history["val_loss"][-1] > history["before_finetune"]["val_loss"]
    assert summary.best_epoch == 0 and history["kept_epoch"] == 0
    assert summary.val_accuracy == pytest.approx(history["before_finetune"]["val_accuracy"])
    tuned = keras.models.load_model(out / "model.keras")  # loads without featcache's optimizer
    before = keras.models.load_model(os.path.join(head, "model.keras"))
    for a, b in zip(before.get_weights(), _nested(tuned, "head_").get_weights()):
        np.testing.assert_array_equal(a, b)


def test_backbone_layers_learn_at_a_fraction_of_the_head_rate():
    """Discriminative rates: one SGD step moves the scaled variables `factor` times as far."""
    import keras

    from featcache.finetuning import make_finetune_optimizer

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, name="top")(keras.layers.Dense(5, name="base")(inputs))
    model = keras.Model(inputs, outputs)
    x, y = np.random.default_rng(0).normal(size=(8, 4)), np.random.default_rng(1).normal(size=(8, 3))
    options = FinetuneOptions(optimizer="sgd", learning_rate=0.1, backbone_lr_factor=0.25,
                              warmup_epochs=0, schedule="constant")
    moves = []
    for scaled in ([], [0, 1]):  # model.trainable_variables[0:2]: the base layer's kernel and bias
        model.set_weights([np.full(w.shape, 0.5, "float32") for w in model.get_weights()])
        model.compile(optimizer=make_finetune_optimizer(keras, options, 1, scaled), loss="mse")
        start = model.get_weights()
        model.train_on_batch(x, y)
        moves.append([a - b for a, b in zip(model.get_weights(), start)])
    plain, discriminative = moves
    for i in (0, 1):
        np.testing.assert_allclose(discriminative[i], 0.25 * plain[i], rtol=1e-5, atol=1e-7)
    for i in (2, 3):
        np.testing.assert_allclose(discriminative[i], plain[i], rtol=1e-5, atol=1e-7)


def test_warm_up_then_cosine_decay():
    import keras

    from featcache.finetuning import learning_rate_schedule

    schedule = learning_rate_schedule(keras, FinetuneOptions(learning_rate=1e-3, epochs=5), 10)
    rates = [float(schedule(step)) for step in (0, 10, 30, 50)]
    assert rates[0] == pytest.approx(1e-4) and rates[1] == pytest.approx(1e-3)
    assert rates[1] > rates[2] > rates[3] and rates[3] == pytest.approx(0.0, abs=1e-9)
    short = learning_rate_schedule(keras, FinetuneOptions(learning_rate=1e-3, epochs=1), 10)
    assert float(short(5)) == pytest.approx(1e-3)  # a one-epoch run warms up for half of it
    with pytest.raises(ParameterError, match="warmup_epochs"):
        FinetuneOptions(warmup_epochs=-1).validate()
    with pytest.raises(ParameterError, match="backbone_lr_factor"):
        FinetuneOptions(backbone_lr_factor=0).validate()


@pytest.mark.slow  # builds every backbone in the registry (~1 min)
@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_names_a_top_block_that_fine_tuning_trains_by_default(name):
    from featcache.backbones import get_backbone
    from featcache.feature_model import build_feature_extractor
    from featcache.finetuning import set_trainable, top_block_start

    spec = get_backbone(name)
    with pytest.warns(FeatcacheWarning, match="random"):
        extractor = build_feature_extractor(name, max(96, spec.min_size), weights="none")
    backbone = extractor.backbone
    assert top_block_start(backbone, spec) is not None, f"{name}: top block not found"
    trainable = set_trainable(backbone, None, None, spec)
    import keras

    names = [layer.name for layer in backbone.layers]
    assert trainable and len(trainable) < sum(1 for layer in backbone.layers if layer.weights)
    # the top: every layer with weights from the first trained one up, except BatchNorm
    assert trainable == [layer.name for layer in backbone.layers[names.index(trainable[0]):]
                         if layer.weights
                         and not isinstance(layer, keras.layers.BatchNormalization)]
    assert set_trainable(backbone, 0, None, spec) == []


def test_the_kept_epoch_is_the_most_accurate_so_a_run_never_ends_below_its_start():
    """cats_dogs once kept an epoch with a lower validation loss but a lower accuracy than
    the starting weights: accuracy decides first now, the loss breaks ties."""
    from featcache.finetuning import _improves

    start = {"best_loss": 0.05, "best_accuracy": 0.986}
    assert not _improves(start, {"val_loss": 0.04, "val_accuracy": 0.982})  # lower loss, worse
    assert _improves(start, {"val_loss": 0.04, "val_accuracy": 0.986})      # same, lower loss
    assert _improves(start, {"val_loss": 0.09, "val_accuracy": 0.990})      # more accurate
    assert not _improves(start, {"val_loss": 0.06, "val_accuracy": 0.986})
    # without validation data the training loss decides, as before
    assert _improves({"best_loss": 0.5, "best_accuracy": None}, {"loss": 0.4})
