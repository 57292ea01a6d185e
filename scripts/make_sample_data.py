#!/usr/bin/env python3
"""Rebuild the small CIFAR-10 sample that ships inside the package.

featcache's built-in default job (`featcache demo`) runs on a few hundred
CIFAR-10 images stored in featcache/sample_data/cifar10. This script copies
the first N train and M val files (sorted) of each class from any CIFAR-10
folder laid out as <split>/<class>/<image>.

    python scripts/make_sample_data.py --source ../shared/data/cifar10_small
"""

import argparse
import shutil
from pathlib import Path

DEST = Path(__file__).resolve().parent.parent / "featcache" / "sample_data" / "cifar10"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="CIFAR-10 folder with train/ and val/")
    parser.add_argument("--train", type=int, default=25, help="images per class for train")
    parser.add_argument("--val", type=int, default=10, help="images per class for val")
    args = parser.parse_args()
    source = Path(args.source)
    if DEST.exists():
        shutil.rmtree(DEST)
    for split, count in (("train", args.train), ("val", args.val)):
        for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            out = DEST / split / class_dir.name
            out.mkdir(parents=True)
            for image in sorted(class_dir.iterdir())[:count]:
                shutil.copyfile(image, out / image.name)
    total = sum(1 for _ in DEST.rglob("*.jpg"))
    print(f"wrote {total} images to {DEST}")


if __name__ == "__main__":
    main()
