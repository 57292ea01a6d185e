#!/usr/bin/env python3
"""Seed 001 with featcache: frozen base, GAP -> Dense 512 head with early stopping, then fine-tuning.

The tutorial loads `oxford_flowers102` with NASNetLarge at 331 px, trains a
GlobalAveragePooling -> Dense 512 -> Dropout head with early stopping on the
frozen base, then unfreezes the top of the base and plots where fine-tuning
starts. Here MobileNet stands in (its weights are small); NASNetLarge is the
drop-in where its ImageNet weights can be downloaded: `--backbone nasnetlarge`
(331 px). The head trains on the cached feature maps; fine-tuning then trains
the backbone's top block with the head, and finetuned/history.png marks where
fine-tuning starts (epoch 0 is the fused model before its first update).

    python examples/mobilenet_gap_dense512_finetune.py --data photos/ --out runs/flowers
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import featcache  # noqa: E402
from _common import parser  # noqa: E402


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--backbone", default="mobilenet", help="mobilenet, or nasnetlarge (online)")
    p.add_argument("--image-size", type=int, help="input size (default: the backbone's own)")
    p.add_argument("--finetune-epochs", type=int, default=5)
    args = p.parse_args(argv)
    cache = featcache.extract(args.data, os.path.join(args.out, "cache"), backbone=args.backbone,
                              image_size=args.image_size, pooling="none", weights=args.weights)
    head_dir = os.path.join(args.out, "head")
    head = featcache.train_head(cache, "dense512", out=head_dir, epochs=args.epochs,
                                early_stopping=True, patience=3)
    print(head)
    tuned = featcache.finetune(args.data, head_dir, os.path.join(args.out, "finetuned"),
                               epochs=args.finetune_epochs)
    print(tuned)
    print("where fine-tuning starts:", os.path.join(args.out, "finetuned", "history.png"))
    return head, tuned


if __name__ == "__main__":
    main()
