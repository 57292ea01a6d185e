#!/usr/bin/env python3
"""Seed 003 with featcache: VGG16 fc2 features + a sigmoid head against a small CNN from scratch.

The tutorial first trains its own Sequential CNN (three 3x3 Conv2D layers of
64 filters, Flatten, Dense 128, one sigmoid unit) at about 7 minutes an
epoch, then transfers VGG16. This runs both on the same two-class folder and
prints seconds per epoch and validation accuracy side by side: the transfer
side is one pass of the frozen VGG16 (to `fc2`) plus a sigmoid head on the
cached features; the scratch side decodes and trains the whole CNN every
epoch. `fc2` needs VGG16's full ImageNet weights (--weights FILE offline).

    python examples/vgg16_fc2_sigmoid_vs_scratch.py --data cats_dogs/ --out runs/scratch
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import featcache  # noqa: E402
from _common import parser  # noqa: E402


def scratch_cnn(data: str, image_size: int, epochs: int, seed: int = 0):
    """The tutorial's CNN, trained from random weights on the images; (val accuracy, s/epoch)."""
    import keras

    keras.utils.set_random_seed(seed)
    kwargs = {"image_size": (image_size, image_size), "batch_size": 16, "label_mode": "binary",
              "seed": seed}
    train = keras.utils.image_dataset_from_directory(os.path.join(data, "train"), **kwargs)
    val = keras.utils.image_dataset_from_directory(os.path.join(data, "val"), shuffle=False, **kwargs)
    model = keras.Sequential([
        keras.Input((image_size, image_size, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(2), keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(train, validation_data=val, epochs=epochs, verbose=0)
    return history.history["val_accuracy"][-1], (time.perf_counter() - start) / epochs


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--scratch-epochs", type=int, default=2, help="the tutorial trained two")
    p.add_argument("--scratch-size", type=int, default=224, help="the scratch CNN's input size")
    args = p.parse_args(argv)
    start = time.perf_counter()
    cache = featcache.extract(args.data, os.path.join(args.out, "cache"), backbone="vgg16",
                              layer="fc2", weights=args.weights)
    head = featcache.train_head(cache, "sigmoid", out=os.path.join(args.out, "head"),
                                epochs=args.epochs)
    transfer_seconds = time.perf_counter() - start
    epochs_run = len(head.history_.get("loss", [])) or 1
    scratch_acc, scratch_epoch = scratch_cnn(args.data, args.scratch_size, args.scratch_epochs)
    rows = {"transfer (VGG16 fc2 once + sigmoid head)":
            (head.val_accuracy_, head.summary_.seconds / epochs_run, transfer_seconds),
            "small CNN from scratch": (scratch_acc, scratch_epoch, scratch_epoch * args.scratch_epochs)}
    print(f"{'':42} {'val acc':>8} {'s/epoch':>8} {'total s':>8}")
    for name, (acc, per_epoch, total) in rows.items():
        print(f"{name:42} {acc:8.3f} {per_epoch:8.2f} {total:8.1f}")
    return rows


if __name__ == "__main__":
    main()
