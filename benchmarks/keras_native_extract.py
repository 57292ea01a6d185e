#!/usr/bin/env python3
"""What a user writes by hand to extract features with Keras alone (the side featcache is compared to).

`image_dataset_from_directory` -> the backbone's own `preprocess_input` ->
`model.predict` -> `np.save`, with tf.data prefetching, as the Keras guides
show it, done right (no `rescale=1/255`). Prints one JSON line: images,
seconds building the model, seconds extracting (reading, decoding, resizing,
inference and saving), and where the arrays went.

    python benchmarks/keras_native_extract.py --data ../shared/data/hymenoptera \
        --backbone vgg16 --weights ../shared/weights/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 \
        --out /tmp/keras-vgg16
"""

from __future__ import annotations

import argparse
import json
import os
import time

BUILDERS = {"mobilenet": ("MobileNet", "mobilenet"), "vgg16": ("VGG16", "vgg16")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with train/ and val/ class folders")
    parser.add_argument("--backbone", choices=sorted(BUILDERS), default="mobilenet")
    parser.add_argument("--weights", required=True, help="ImageNet weights file (no top)")
    parser.add_argument("--out", required=True, help="folder for <split>_features.npy / _labels.npy")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    started = time.perf_counter()
    import keras
    import numpy as np
    import tensorflow as tf

    builder, module = BUILDERS[args.backbone]
    size = (args.image_size, args.image_size)
    model = getattr(keras.applications, builder)(include_top=False, weights=args.weights,
                                                 input_shape=(*size, 3), pooling="avg")
    preprocess = getattr(keras.applications, module).preprocess_input
    built = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    images = 0
    for split in ("train", "val"):
        ds = keras.utils.image_dataset_from_directory(
            os.path.join(args.data, split), image_size=size, batch_size=args.batch_size,
            shuffle=False, interpolation="bilinear", verbose=False)
        # labels from the file list, not by iterating the dataset (that would decode every image twice)
        labels = np.array([ds.class_names.index(os.path.basename(os.path.dirname(p)))
                           for p in ds.file_paths])
        ds = ds.map(lambda x, y: preprocess(x), num_parallel_calls=tf.data.AUTOTUNE)
        features = model.predict(ds.prefetch(tf.data.AUTOTUNE), verbose=0)
        np.save(os.path.join(args.out, f"{split}_features.npy"), features)
        np.save(os.path.join(args.out, f"{split}_labels.npy"), labels)
        images += len(features)
    done = time.perf_counter()
    print(json.dumps({"images": images, "build_seconds": round(built - started, 3),
                      "extract_seconds": round(done - built, 3), "out": args.out}))


if __name__ == "__main__":
    main()
