#!/usr/bin/env python3
"""The tutorials' way: a frozen base inside model.fit, images re-read every epoch.

This is the baseline featcache is compared against (cached_vs_infit.py runs
it in its own process). It follows the VGG16 and NASNet tutorials: the frozen
ImageNet base and a dense256 head (pooling or Flatten, Dense 256 relu, Dropout
0.5, softmax) in one Keras model, trained with `model.fit` on images streamed
from the class folders, so every epoch decodes, resizes and runs the base over
every training and validation image again. Two things are done better than in
the tutorials, so the comparison is not won on a mistake: the backbone's own
`preprocess_input` (not `rescale=1./255`), and `tf.data` prefetching. No
augmentation, to match the cached side, which sees the same images.

    python benchmarks/infit_baseline.py --data ../shared/data/hymenoptera \
        --backbone mobilenet --weights ../shared/weights/mobilenet_1_0_224_tf_no_top.h5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import time

BUILDERS = {
    "mobilenet": ("MobileNet", "mobilenet", "avg"),
    "vgg16": ("VGG16", "vgg16", "flatten"),  # the VGG16 tutorial flattens the 7x7x512 map
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", required=True, help="folder with train/ and val/ class folders")
    parser.add_argument("--backbone", choices=sorted(BUILDERS), default="mobilenet")
    parser.add_argument("--weights", required=True, help="ImageNet weights file (no top)")
    parser.add_argument("--units", type=int, default=256, help="hidden units of the head (256)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    start = time.perf_counter()
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    builder, module, reduce = BUILDERS[args.backbone]
    preprocess = getattr(keras.applications, module).preprocess_input
    size = (args.image_size, args.image_size)

    def images(split: str, shuffle: bool):
        ds = keras.utils.image_dataset_from_directory(
            os.path.join(args.data, split), image_size=size, batch_size=args.batch_size,
            label_mode="categorical", shuffle=shuffle, seed=args.seed, interpolation="bilinear",
            verbose=False)
        return ds, ds.map(lambda x, y: (preprocess(x), y)).prefetch(tf.data.AUTOTUNE)

    train_raw, train = images("train", True)
    _, val = images("val", False)
    n_classes = len(train_raw.class_names)

    base = getattr(keras.applications, builder)(include_top=False, weights=args.weights,
                                                input_shape=(*size, 3))
    base.trainable = False
    inputs = keras.Input((*size, 3))
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x) if reduce == "avg" else keras.layers.Flatten()(x)
    x = keras.layers.Dense(args.units, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    fit_start = time.perf_counter()
    history = model.fit(train, validation_data=val, epochs=args.epochs,
                        verbose=0 if args.json else 2)
    fit_seconds = time.perf_counter() - fit_start
    result = {"backbone": args.backbone, "epochs": args.epochs, "units": args.units,
              "val_accuracy": float(history.history["val_accuracy"][-1]),
              "best_val_accuracy": float(max(history.history["val_accuracy"])),
              "fit_seconds": fit_seconds, "seconds": time.perf_counter() - start}
    print(json.dumps(result) if args.json else result)


if __name__ == "__main__":
    main()
