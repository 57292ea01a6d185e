#!/usr/bin/env python3
"""The no-transfer baseline: a small CNN trained from random weights on the same images.

The seeds' "from scratch" model (Chollet's cats-vs-dogs blog: three 3x3
convolution + max-pool blocks of 32, 32 and 64 filters, Dense 64, dropout
0.5), here with a fourth block of 128 filters and global average pooling so
that it takes 128-224 px inputs, the same augmentation layers as `featcache
finetune`, Adam 1e-3 and early stopping on validation loss with the best
epoch kept. Images stream through featcache's own decoding pipeline at the
same size and resize as the transfer runs, so only the model differs.
Prints one JSON object: validation accuracy, seconds, seconds per epoch.

    python benchmarks/scratch_cnn.py --data ../shared/data/flowers5 --image-size 128 --epochs 30
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", required=True, help="folder with train/ and val/ class folders")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="(always on; for symmetry)")
    args = parser.parse_args()

    from featcache._keras import import_keras
    from featcache.dataset import load_dataset
    from featcache.decode import ResizeSpec
    from featcache.finetuning import DEFAULT_AUGMENT, augmentation_layers, parse_augment
    from featcache.image_feed import image_batches
    from featcache.pipeline import Item

    keras = import_keras()
    keras.utils.set_random_seed(args.seed)
    dataset = load_dataset(args.data, 0.0, 0.0)
    index = {name: i for i, name in enumerate(dataset.class_names)}
    items = {split: [Item(0, dataset.abspath(r), r.path, index[r.label])
                     for r in dataset.records if r.split == split] for split in ("train", "val")}
    resize = ResizeSpec((args.image_size, args.image_size))
    n = len(dataset.class_names)
    train = image_batches(keras, items["train"], resize, n, args.batch_size, True, args.seed)
    val = image_batches(keras, items["val"], resize, n, args.batch_size, False, args.seed)

    inputs = keras.Input((args.image_size, args.image_size, 3))
    x = inputs
    for layer in augmentation_layers(keras, parse_augment(DEFAULT_AUGMENT), args.seed):
        x = layer(x)
    x = keras.layers.Rescaling(1 / 255.0)(x)
    for filters in (32, 32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, activation="relu", padding="same")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(n, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience,
                                         restore_best_weights=True)
    started = time.perf_counter()
    history = model.fit(train, validation_data=val, epochs=args.epochs, callbacks=[stop], verbose=0)
    seconds = time.perf_counter() - started
    epochs = len(history.history["loss"])
    scores = model.evaluate(val, verbose=0, return_dict=True)
    print(json.dumps({"val_accuracy": float(scores["accuracy"]), "seconds": round(seconds, 2),
                      "epochs_run": epochs, "seconds_per_epoch": round(seconds / epochs, 2),
                      "best_epoch": int(stop.best_epoch) + 1 if epochs else None,
                      "parameters": int(model.count_params())}))


if __name__ == "__main__":
    main()
