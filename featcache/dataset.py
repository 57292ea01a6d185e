"""Turn an image folder or a CSV/TSV list into labelled, split image records.

Accepted inputs:

* a folder of class sub-folders (`cats/`, `dogs/`), optionally inside split
  folders (`train/`, `val/`, `test/`, any subset; `valid`/`validation` mean val);
* a CSV or TSV file of `path,label[,split]` rows, paths relative to the file's
  folder (or `root`), with an optional header row. A label cell may name several
  labels separated by `;` (`daisy;white`): the list is then multi-label, as it
  is when its header names the column `labels`.

Files are listed in a stable sorted order. Hidden files and files whose
extension is not an image's are passed over and counted. With `val_fraction` /
`test_fraction`, files are assigned to splits by the sha256 of their bytes, so
adding images never moves an existing image to another split, and identical
files always land in the same split.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from .errors import DataError, ParameterError, UsageError, param
from .multilabel import SEPARATOR, label_set, labels_of, vocabulary

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".webp",
     ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".heic", ".heif", ".hif"}
)
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}
SPLIT_ORDER = ("train", "val", "test")


@dataclass(frozen=True)
class ImageRecord:
    """One image to extract.

    Attributes:
        path: path relative to the data root with '/' separators (absolute only
            for CSV rows outside the root that were explicitly allowed).
        label: class name (multi-label: the canonical label set, "daisy;white").
        split: "train", "val" or "test".
        size: file size in bytes when listed (-1 if the file was missing).
        content_hash: sha256 of the bytes, when split assignment needed it.
    """

    path: str
    label: str
    split: str
    size: int
    content_hash: str | None = None


@dataclass
class Dataset:
    """The listed images of one data source.

    Attributes:
        root: absolute data root; record paths are relative to it.
        layout: "split-folders", "class-folders" or "list".
        records: sorted by (split order, path).
        class_names: sorted class names; labels index into this list.
        ignored: (path, reason) for files passed over while listing.
        warnings: things worth telling the user that do not stop extraction.
        multi_label: labels are label sets (`featcache.multilabel`); class_names
            then lists the distinct sets and `label_names` the labels.
    """

    root: str
    layout: str
    records: list[ImageRecord]
    class_names: list[str]
    ignored: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    multi_label: bool = False

    @property
    def label_names(self) -> list[str]:
        """The labels a head predicts: the classes, or a multi-label list's labels."""
        return vocabulary(self.class_names) if self.multi_label else list(self.class_names)

    def abspath(self, record: ImageRecord) -> str:
        return os.path.join(self.root, record.path)

    def split_counts(self) -> dict[str, int]:
        counts = Counter(r.split for r in self.records)
        return {s: counts[s] for s in SPLIT_ORDER if counts[s]}


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _rel(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _walk_images(top: str, root: str, ignored: list[tuple[str, str]]) -> list[tuple[str, int]]:
    """(relative path, size) of every image under `top`, following links without looping."""
    found: list[tuple[str, int]] = []
    seen_dirs: set[tuple[int, int]] = set()
    top_real = os.path.realpath(top)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        real = os.path.realpath(dirpath)
        if dirpath != top and (top_real + os.sep).startswith(real + os.sep):
            # a link up to the folder being listed or one above it: following it would
            # list the same images again, under other classes
            ignored.append((_rel(dirpath, root), "symlink loop: links to a folder above it"))
            dirnames[:] = []
            continue
        if key in seen_dirs:  # a symlink loop or a second link to the same folder
            ignored.append((_rel(dirpath, root), "folder already listed (symlink loop?)"))
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        for d in sorted(dirnames):
            if _is_hidden(d):
                ignored.append((_rel(os.path.join(dirpath, d), root), "hidden folder"))
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if _is_hidden(name):
                ignored.append((_rel(full, root), "hidden file"))
                continue
            if not is_image_name(name):
                ignored.append((_rel(full, root), "not an image file extension"))
                continue
            try:
                size = os.stat(full).st_size
            except OSError as exc:  # dangling link, permissions: decoding will say why
                size = -1
                if not os.path.lexists(full):
                    ignored.append((_rel(full, root), f"cannot stat: {exc.strerror}"))
                    continue
            found.append((_rel(full, root), size))
    return found


def list_images(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Image files named directly or found under folders (recursively, sorted).

    Returns:
        (files, ignored): files to decode, and (path, reason) for what was passed over.
    """
    files: list[str] = []
    ignored: list[tuple[str, str]] = []
    for path in paths:
        if os.path.isdir(path):
            root = os.path.abspath(path)
            files.extend(os.path.join(root, rel) for rel, _ in _walk_images(root, root, ignored))
        else:
            files.append(path)  # named explicitly: decoding will say if it is not an image
    return files, ignored


def _subdirs(path: str) -> list[str]:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"Cannot list {path}: {exc.strerror}.") from exc
    return [e.name for e in entries if not _is_hidden(e.name) and e.is_dir()]


def _class_records(split_dir: str, root: str, split: str, ignored, warnings) -> list[ImageRecord]:
    records = []
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if _is_hidden(entry.name):
            continue
        if not entry.is_dir():
            if is_image_name(entry.name):
                ignored.append((_rel(entry.path, root), "image not inside a class folder"))
            continue
        images = _walk_images(entry.path, root, ignored)
        if not images:
            warnings.append(f"class folder {_rel(entry.path, root)}/ holds no images")
        records.extend(ImageRecord(p, entry.name, split, size) for p, size in images)
    return records


def scan_folder(root: str) -> Dataset:
    """List a class-per-folder tree, with or without split folders.

    Raises:
        DataError: missing folder, no images, or split and class folders mixed.
    """
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise DataError(f"{{param:data}} {root}: no such folder.")
    top = _subdirs(root)
    split_dirs = [d for d in top if d.lower() in SPLIT_ALIASES]
    ignored: list[tuple[str, str]] = []
    warnings: list[str] = []
    if split_dirs and len(split_dirs) != len(top):
        others = [d for d in top if d not in split_dirs]
        raise DataError(
            f"{{param:data}} {root}: mixes split folders ({', '.join(split_dirs)}) with other folders "
            f"({', '.join(others[:5])}). Put every class folder inside train/, val/ or test/, "
            "or remove the split folders."
        )
    if split_dirs:
        layout = "split-folders"
        seen: dict[str, str] = {}
        records: list[ImageRecord] = []
        for d in split_dirs:
            split = SPLIT_ALIASES[d.lower()]
            if split in seen:
                raise DataError(f"{{param:data}} {root}: both {seen[split]}/ and {d}/ mean split '{split}'.")
            seen[split] = d
            records += _class_records(os.path.join(root, d), root, split, ignored, warnings)
    else:
        layout = "class-folders"
        records = _class_records(root, root, "train", ignored, warnings)
    return _finish(root, layout, records, ignored, warnings, source=f"{{param:data}} {root}")


def read_list(
    list_path: str, root: str | None = None, allow_outside_root: bool = False
) -> Dataset:
    """Read a CSV/TSV of `path,label[,split]` rows.

    Raises:
        DataError: unreadable file, malformed row, unknown split, or a path
            outside the root without `allow_outside_root`.
    """
    list_path = os.path.abspath(list_path)
    root = os.path.abspath(root or os.path.dirname(list_path))
    delimiter = "\t" if os.path.splitext(list_path)[1].lower() in (".tsv", ".tab") else ","
    records: list[ImageRecord] = []
    try:
        with open(list_path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{{param:data}} {list_path}: cannot read the list: {exc}.") from exc
    first = True
    multi_label = False
    for lineno, row in enumerate(rows, 1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if first and cells[0].lower() in ("path", "file", "filename", "image", "filepath"):
            first = False
            multi_label = len(cells) > 1 and cells[1].lower() == "labels"
            continue
        first = False
        where = f"{list_path}:{lineno}"
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise DataError(f"{where}: expected 'path{delimiter}label[{delimiter}split]', got {row!r}.")
        if SEPARATOR in cells[1]:
            multi_label = True
            cells[1] = label_set(cells[1])
            if not cells[1]:
                raise DataError(f"{where}: the label cell {row[1]!r} names no label; every image "
                                "needs at least one.")
        split = "train"
        if len(cells) > 2 and cells[2]:
            split = SPLIT_ALIASES.get(cells[2].lower())
            if split is None:
                raise DataError(f"{where}: unknown split '{cells[2]}'; use train, val or test.")
        full = os.path.normpath(os.path.join(root, cells[0]))
        rel = _rel(full, root)
        if rel == ".." or rel.startswith("../"):
            if not allow_outside_root:
                raise DataError(
                    f"{where}: {cells[0]} is outside the data root {root}. Move it under the "
                    "root, pass {param:root}, or pass {param:allow_outside_root} to accept it."
                )
            rel = full
        try:
            size = os.stat(full).st_size
        except OSError:
            size = -1  # decoding records it as skipped, with the reason
        records.append(ImageRecord(rel, cells[1], split, size))
    return _finish(root, "list", records, [], [], source=f"{{param:data}} {list_path}",
                   multi_label=multi_label)


def _finish(root, layout, records, ignored, warnings, source, multi_label=False) -> Dataset:
    if not records:
        raise DataError(
            f"{source}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))} "
            "inside class folders)."
        )
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    records.sort(key=lambda r: (order[r.split], r.path))
    dupes = [p for p, n in Counter((r.split, r.path) for r in records).items() if n > 1]
    if dupes:
        raise DataError(f"{source}: {dupes[0][1]} is listed more than once in split {dupes[0][0]}.")
    class_names = sorted({r.label for r in records})
    label_names = vocabulary(class_names) if multi_label else class_names
    heif = sum(os.path.splitext(r.path)[1].lower() in HEIF_EXTENSIONS for r in records)
    if heif and importlib.util.find_spec("pillow_heif") is None:
        warnings.append(f"HEIC/HEIF photos ({heif}) cannot be read without pillow-heif: "
                        'pip install "featcache[heic]"')
    if len(class_names) == 1:
        warnings.append(f"only one {'label set' if multi_label else 'class'} ({class_names[0]}): "
                        "features are extracted, but training a classifier needs at least two")
    by_split = {s: {lab for r in records if r.split == s
                    for lab in (labels_of(r.label) if multi_label else [r.label])} for s in SPLIT_ORDER}
    for split, labels in by_split.items():
        missing = [c for c in label_names if c not in labels]
        if labels and missing:
            warnings.append(f"split {split} has no images of {'label' if multi_label else 'class'} "
                            f"{', '.join(missing[:5])}")
    return Dataset(root, layout, records, class_names, ignored, warnings, multi_label)


def content_hash(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def hash_fraction(hex_digest: str) -> float:
    """Map a hex digest to [0, 1) uniformly."""
    return int(hex_digest[:16], 16) / float(1 << 64)


def assign_splits(
    dataset: Dataset, val_fraction: float = 0.0, test_fraction: float = 0.0, workers: int = 4
) -> Dataset:
    """Carve val (and test) out of the training records by content hash.

    Only records in split "train" move; a dataset that already has a val
    (or test) split cannot be given another.

    Raises:
        UsageError: fractions out of range, or the split already exists.
    """
    if not val_fraction and not test_fraction:
        return dataset
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ParameterError(name, value, "must be a fraction in [0, 1).")
    if val_fraction + test_fraction >= 1.0:
        raise UsageError(f"{param('val_fraction')} plus {param('test_fraction')} must leave some "
                         "images for training.")
    present = dataset.split_counts()
    for name, value, split in (("val_fraction", val_fraction, "val"),
                               ("test_fraction", test_fraction, "test")):
        if value and split in present:
            raise UsageError(
                f"{param(name)}: the data already has a '{split}' split ({present[split]} images); "
                f"drop {param(name)} or the {split} folder."
            )
    train = [r for r in dataset.records if r.split == "train"]

    def digest(record: ImageRecord) -> str | None:
        try:
            return content_hash(dataset.abspath(record))
        except OSError:
            return None  # unreadable: stays in train, decoding records why

    with ThreadPoolExecutor(max(1, workers)) as pool:
        digests = dict(zip((r.path for r in train), pool.map(digest, train)))
    moved = []
    for record in dataset.records:
        if record.split != "train":
            moved.append(record)
            continue
        h = digests[record.path]
        split = "train"
        if h is not None:
            u = hash_fraction(h)
            split = "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"
        moved.append(replace(record, split=split, content_hash=h))
    return _finish(dataset.root, dataset.layout, moved, dataset.ignored,
                   [w for w in dataset.warnings if not w.startswith(("split ", "only one ", "HEIC/HEIF"))],
                   source=f"{{param:data}} {dataset.root}", multi_label=dataset.multi_label)


def load_dataset(
    source: str,
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    root: str | None = None,
    allow_outside_root: bool = False,
    workers: int = 4,
) -> Dataset:
    """List a folder or a CSV/TSV file and apply --val-split/--test-split.

    Raises:
        DataError, UsageError: see messages.
    """
    if os.path.isdir(source):
        if root:
            raise UsageError("{param:root} applies to CSV/TSV lists only; {param:data} is a folder.")
        dataset = scan_folder(source)
    elif os.path.isfile(source):
        dataset = read_list(source, root=root, allow_outside_root=allow_outside_root)
    else:
        raise DataError(f"{{param:data}} {source}: no such folder or file.")
    return assign_splits(dataset, val_fraction, test_fraction, workers)
