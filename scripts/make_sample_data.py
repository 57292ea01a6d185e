#!/usr/bin/env python3
"""Rebuild the small CIFAR-10 sample that ships inside the package.

featcache's built-in default job (`featcache demo`) runs on a few hundred
CIFAR-10 images stored in featcache/sample_data/cifar10: four visually
distinct classes (automobile, frog, horse, ship), the first N train and M
val files (sorted by name, not picked by hand) of each, copied from any
CIFAR-10 folder laid out as <split>/<class>/<image>.

    python scripts/make_sample_data.py --source ../shared/data/cifar10_small
"""

import argparse
import shutil
from pathlib import Path

DEST = Path(__file__).resolve().parent.parent / "featcache" / "sample_data" / "cifar10"
# chosen by cross-validated logistic regression on MobileNet features of the previous
# 10-class sample (35 images per class): the best of the 210 four-class subsets (0.936)
CLASSES = ("automobile", "frog", "horse", "ship")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="CIFAR-10 folder with train/ and val/")
    parser.add_argument("--classes", nargs="+", default=list(CLASSES))
    parser.add_argument("--train", type=int, default=75, help="images per class for train")
    parser.add_argument("--val", type=int, default=25, help="images per class for val")
    args = parser.parse_args()
    source = Path(args.source)
    if DEST.exists():
        shutil.rmtree(DEST)
    for split, count in (("train", args.train), ("val", args.val)):
        for name in args.classes:
            out = DEST / split / name
            out.mkdir(parents=True)
            for image in sorted((source / split / name).iterdir())[:count]:
                shutil.copyfile(image, out / image.name)
    total = sum(1 for _ in DEST.rglob("*.jpg"))
    print(f"wrote {total} images to {DEST}")


if __name__ == "__main__":
    main()
