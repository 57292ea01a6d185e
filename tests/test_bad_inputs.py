"""Bad-input corpus, generated here: every odd file gets the right outcome.

Extracted, skipped and named with its reason (summary and manifest), passed
over and recorded, warned about, or refused with one line; `--strict` stops
at the first bad file and names it. Real files, real `featcache` processes.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from featcache.cli import main
from featcache.decode import ResizeSpec, decode_bytes
from featcache.errors import BadImageError
from featcache.cache import FeatureCache
from reliability_util import assert_one_line_error

HEIF = importlib.util.find_spec("pillow_heif") is not None
FAST = ["--backbone", "mobilenet", "--image-size", "32", "--weights", "none"]


def noise(size=(24, 20), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A valid PNG header claiming width x height 8-bit gray pixels, with a tiny body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def root_reads_anything(tmp: Path) -> bool:
    probe = tmp / "probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        probe.read_bytes()
        return True
    except PermissionError:
        return False
    finally:
        probe.chmod(0o644)


def build_corpus(root: Path) -> dict:
    """Write the corpus; returns {relative path: expected outcome}."""
    expect: dict[str, tuple[str, str]] = {}
    a, b = root / "train" / "ants", root / "train" / "bees"
    for folder in (a, b, root / "train" / "empty_class", root / "val" / "ants",
                   root / "val" / "wasps"):
        folder.mkdir(parents=True)

    def put(rel: str, data: bytes, outcome: str, reason: str = ""):
        (root / rel).write_bytes(data)
        expect[rel] = (outcome, reason)

    for i in range(3):
        put(f"train/ants/good{i}.jpg", jpeg_bytes(noise(seed=i)), "extracted")
        put(f"train/bees/good{i}.jpg", jpeg_bytes(noise(seed=10 + i)), "extracted")
    put("val/ants/v.jpg", jpeg_bytes(noise(seed=20)), "extracted")
    put("val/wasps/w.jpg", jpeg_bytes(noise(seed=21)), "extracted")
    good = jpeg_bytes(noise(seed=30))
    put("train/ants/cmyk.JPG", jpeg_bytes(noise(seed=31).convert("CMYK")), "extracted")
    buf = io.BytesIO()
    Image.fromarray(np.full((9, 7), 40000, np.uint16)).save(buf, format="PNG", transparency=0)
    put("train/ants/deep16.png", buf.getvalue(), "extracted")
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)
    put("train/ants/palette.png", buf.getvalue(), "extracted")
    buf = io.BytesIO()
    frames = [Image.new("RGB", (12, 12), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    put("train/ants/anim.gif", buf.getvalue(), "extracted")
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (9, 9, 9)).save(buf, format="PNG")
    put("train/ants/one_pixel.png", buf.getvalue(), "extracted")
    put("train/ants/UPPER.JPEG", jpeg_bytes(noise(seed=32)), "extracted")
    # the same bytes filed under two classes: both kept, and a warning names them
    put("train/ants/same.jpg", good, "extracted")
    put("train/bees/same_too.jpg", good, "extracted")
    # a non-UTF-8 file name (Latin-1 e-acute) that decodes fine
    latin = os.fsencode(str(a)) + b"/caf\xe9.jpg"
    with open(latin, "wb") as fh:
        fh.write(jpeg_bytes(noise(seed=33)))
    expect[os.fsdecode(b"train/ants/caf\xe9.jpg")] = ("extracted", "")

    truncated = jpeg_bytes(noise((64, 64), seed=34))
    put("train/bees/truncated.jpg", truncated[: len(truncated) // 2], "skipped", "truncated")
    put("train/bees/zero.jpg", b"", "skipped", "empty file")
    put("train/bees/text.jpg", b"hello, I am text in disguise\n", "skipped", "not an image")
    put("train/bees/bomb.png", bomb_png(), "skipped", "decompression bomb")
    with open(os.fsencode(str(b)) + b"/bad\xff.png", "wb"):
        pass  # zero bytes, non-UTF-8 name: its reason must still print
    expect[os.fsdecode(b"train/bees/bad\xff.png")] = ("skipped", "empty file")
    os.mkfifo(b / "pipe.jpg")  # would block a reader forever
    expect["train/bees/pipe.jpg"] = ("skipped", "not a regular file")
    os.symlink("loop.jpg", b / "loop.jpg")  # a symlink to itself
    expect["train/bees/loop.jpg"] = ("skipped", "symbolic links")
    os.symlink("..", b / "up")  # a folder loop: listed once
    if not root_reads_anything(root):
        put("train/bees/locked.jpg", good, "skipped", "Permission denied")
        (root / "train/bees/locked.jpg").chmod(0)

    if HEIF:  # iPhone photos: read through pillow-heif, upright; broken ones skipped with a reason
        heic = io.BytesIO()
        noise((64, 48), seed=35).save(heic, format="HEIF", quality=80)
        put("train/ants/IMG_0001.HEIC", heic.getvalue(), "extracted")
        put("train/bees/cut.heic", heic.getvalue()[: len(heic.getvalue()) // 2], "skipped",
            "end of file")
        put("train/bees/fake.heif", b"not a photo at all", "skipped", "not an image")

    put("train/ants/.hidden.jpg", good, "ignored", "hidden file")
    put("train/ants/.DS_Store", b"\0\0", "ignored", "hidden file")
    put("train/ants/notes.txt", b"field notes", "ignored", "not an image file extension")
    put("train/bees/Thumbs.db", b"\0", "ignored", "not an image file extension")
    return expect


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "data"
    return root, build_corpus(root)


def test_every_bad_input_gets_its_outcome_in_summary_and_manifest(corpus, tmp_path):
    root, expect = corpus
    out = tmp_path / "cache"
    done = run_cli("extract", "--data", str(root), "--out", str(out), *FAST, "--shard-size", "4",
                   "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    summary = json.loads(done.stdout)
    manifest = FeatureCache(str(out)).manifest
    skipped = {s["path"]: s["reason"] for s in summary["skipped"]}
    in_manifest = {s["path"]: s["reason"] for sh in manifest["shards"] for s in sh["skipped"]}
    assert skipped == in_manifest
    ignored = {i["path"]: i["reason"] for i in manifest["ignored"]}
    rows = {p for split in manifest["splits"] for p in FeatureCache(str(out)).index(split)[0]}
    for rel, (outcome, reason) in expect.items():
        if outcome == "extracted":
            assert rel in rows, rel
        elif outcome == "skipped":
            assert rel in skipped and reason in skipped[rel], (rel, skipped.get(rel))
            assert rel not in rows
        else:
            assert ignored.get(rel) == reason, (rel, ignored.get(rel))
    extracted = sum(1 for o, _ in expect.values() if o == "extracted")
    assert summary["rows"] == extracted and summary["images"] == extracted
    assert ignored["train/bees/up"] == "symlink loop: links to a folder above it"
    warnings = "\n".join(summary["warnings"])
    assert "train/empty_class/ holds no images" in warnings
    assert "train/ants/same.jpg (ants)" in warnings and "train/bees/same_too.jpg (bees)" in warnings
    assert "split train has no images of class wasps" in warnings  # train/val class sets differ
    assert manifest["warnings"] == summary["warnings"]
    assert manifest["class_names"] == ["ants", "bees", "wasps"]

    # the terminal summary prints the same, non-UTF-8 names included, and a rerun reuses all
    again = run_cli("extract", "--data", str(root), "--out", str(out), *FAST, "--shard-size", "4")
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert "truncated.jpg" in again.stdout and "bad" in again.stdout and "pipe.jpg" in again.stdout


def test_strict_stops_at_the_first_bad_file_and_names_it(corpus, tmp_path, capsys):
    root, _ = corpus
    out = tmp_path / "strict"
    code = main(["extract", "--data", str(root), "--out", str(out), *FAST, "--strict", "--quiet"])
    assert code == 2
    # sorted order: train/ants has only good files; train/bees/bad\xff.png is the first bad one
    line = assert_one_line_error(capsys.readouterr().err, "--strict")
    assert "train/bees/bad" in line and "empty file" in line


def test_decompression_bomb_is_refused_without_allocating_it():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BadImageError, match="decompression bomb"):
        decode_bytes(bomb_png(), ResizeSpec((32, 32)), "bomb.png")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200_000  # decoding it would take 10 GB


def test_single_class_extracts_with_a_warning_and_training_refuses(tmp_path, capsys):
    (tmp_path / "only" / "cats").mkdir(parents=True)
    for i in range(3):
        noise(seed=i).save(tmp_path / "only" / "cats" / f"{i}.jpg")
    out = tmp_path / "c"
    assert main(["extract", "--data", str(tmp_path / "only"), "--out", str(out), *FAST,
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 3 and any("only one class (cats)" in w for w in summary["warnings"])
    assert main(["train-head", "--cache", str(out), "--model", "logreg", "--out",
                 str(tmp_path / "h")]) == 2
    assert_one_line_error(capsys.readouterr().err, "only one class")
    assert not (tmp_path / "h").exists()


def test_no_images_at_all_is_one_line(tmp_path, capsys):
    (tmp_path / "d" / "x").mkdir(parents=True)
    (tmp_path / "d" / "x" / "readme.txt").write_text("no pictures here")
    assert main(["extract", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "c"), *FAST]) == 2
    assert_one_line_error(capsys.readouterr().err, "no images found")
    assert not (tmp_path / "c").exists()
