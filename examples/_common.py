"""Flags every example takes (the folder of images, where to write, which weights)."""

import argparse


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--data", required=True, help="folder of class folders (train/ val/ or not)")
    p.add_argument("--out", default="example-out", help="folder for the cache and the heads")
    p.add_argument("--weights", default="imagenet",
                   help="imagenet (Keras downloads them, or finds them in $FEATCACHE_WEIGHTS_DIR), "
                        "a weights file, or none (random: runs anywhere, learns little)")
    p.add_argument("--epochs", type=int, default=30, help="head epochs (early stopping may end sooner)")
    return p
