#!/usr/bin/env python3
"""Seed 000 with featcache: frozen VGG16 at 150 px, Flatten -> Dense 256 head, augmentation, curves.

The tutorial puts the frozen VGG16 inside `model.fit` with an
`ImageDataGenerator`, so every epoch decodes, augments and runs the base
again. Here the base runs once: over each image and over `--augment-views`
augmented copies of each training image, stored in the cache; the dense256
head (Flatten, Dense 256 relu, Dropout 0.5, softmax) then trains on the 4x4x512
maps in seconds, and its training curves are in head/history.png.

    python examples/vgg16_flatten_dense256.py --data photos/ --out runs/vgg16
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import featcache  # noqa: E402
from _common import parser  # noqa: E402


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--augment-views", type=int, default=2, help="augmented copies per training image")
    args = p.parse_args(argv)
    cache = featcache.extract(args.data, os.path.join(args.out, "cache"), backbone="vgg16",
                              image_size=150, pooling="none", augment_views=args.augment_views,
                              weights=args.weights)
    head = featcache.train_head(cache, "dense256", out=os.path.join(args.out, "head"),
                                epochs=args.epochs)
    print(cache)
    print(head)
    print("training curves:", os.path.join(args.out, "head", "history.png"))
    return head


if __name__ == "__main__":
    main()
