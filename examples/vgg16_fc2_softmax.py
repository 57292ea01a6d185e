#!/usr/bin/env python3
"""Seed 002 with featcache: VGG16's fc2 features (4096) with a softmax head, Dogs vs Cats style.

The tutorial loads the whole VGG16 (`include_top=True`), freezes it, swaps
the 1000-way softmax for a 2-way one and trains with `fit_generator`. Here the
frozen network runs once up to `fc2` and a softmax regression (`linear`)
trains on the 4096 numbers per image. `fc2` needs VGG16's full ImageNet
weights (Keras downloads them; offline, pass the file with --weights).

    python examples/vgg16_fc2_softmax.py --data cats_dogs/ --out runs/fc2
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import featcache  # noqa: E402
from _common import parser  # noqa: E402


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    cache = featcache.extract(args.data, os.path.join(args.out, "cache"), backbone="vgg16",
                              layer="fc2", weights=args.weights)
    head = featcache.train_head(cache, "linear", out=os.path.join(args.out, "head"),
                                epochs=args.epochs)
    print(cache)
    print(head)
    return head


if __name__ == "__main__":
    main()
