"""The decode mode of a cache: fast by default for new caches, exact caches keep their key.

Real extractions of generated photo-like JPEGs (large next to the 32 px input,
so the fast decode reads them at a reduced DCT scale), then resume, refusal,
`verify --repair` and `info` on those caches.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from featcache.cache import FeatureCache, load_features
from featcache.cli import main
from featcache.extract import ExtractOptions, extract
from reliability_util import assert_one_line_error, assert_same_cache

OLD_RESIZE_KEYS = {"size", "method", "aspect", "alpha_background", "exif_orientation"}


def photos(root, per_class=3, size=(640, 480)):
    """Smooth pictures with some grain, a third of them rotated by EXIF, in train/ and val/."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    n = 0
    for split, count in (("train", per_class), ("val", 1)):
        for cls in ("cats", "dogs"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                base = np.stack([(xx * (1 + n % 3) // 5) % 256, (yy * 255 // size[1]),
                                 np.full_like(xx, 40 * (n % 6))], -1).astype(float)
                base += rng.normal(0, 8, base.shape)
                img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
                exif = Image.Exif()
                exif[0x0112] = 6 if n % 3 == 0 else 1
                img.save(folder / f"{cls}_{i}.jpg", quality=92, exif=exif.tobytes())
                n += 1
    return root


def options(data, out, **kw):
    return ExtractOptions(data=str(data), out=str(out), backbone="mobilenet", image_size=32,
                          weights="none", shard_size=3, progress=False, **kw)


@pytest.fixture
def photo_folder(tmp_path):
    return photos(tmp_path / "photos")


def test_new_caches_decode_fast_and_exact_caches_keep_the_old_fingerprint(photo_folder, tmp_path):
    fast = extract(options(photo_folder, tmp_path / "fast"))
    exact = extract(options(photo_folder, tmp_path / "exact", decode="exact"))
    assert fast.decode == "fast" and fast.to_json()["decode"] == "fast"
    fp_fast = FeatureCache(fast.cache).fingerprint
    fp_exact = FeatureCache(exact.cache).fingerprint
    assert fp_fast["resize"]["decode"] == "fast"
    assert set(fp_exact["resize"]) == OLD_RESIZE_KEYS  # what every earlier cache holds
    assert fast.fingerprint_hash != exact.fingerprint_hash
    a, b = load_features(fast.cache, "train"), load_features(exact.cache, "train")
    assert list(a.paths) == list(b.paths)
    # the pixels differ a little, so do the features; far less than the features differ between images
    gap = np.linalg.norm(a.features - b.features) / np.linalg.norm(b.features)
    spread = np.linalg.norm(b.features - b.features.mean(0)) / np.linalg.norm(b.features)
    assert 0 < gap < spread / 2, (gap, spread)


def test_resume_keeps_the_caches_mode_and_refuses_the_other(photo_folder, tmp_path, capsys):
    cache = tmp_path / "old"
    first = extract(options(photo_folder, cache, decode="exact"))
    again = extract(options(photo_folder, cache))  # default flags on an exact cache: resume it
    assert again.decode == "exact" and again.images_extracted == 0
    assert again.shards_reused == first.shards_written
    assert main(["extract", "--data", str(photo_folder), "--out", str(cache), "--backbone",
                 "mobilenet", "--image-size", "32", "--weights", "none", "--shard-size", "3",
                 "--decode", "fast", "--quiet"]) == 2
    line = assert_one_line_error(capsys.readouterr().err, "--decode fast", "exact decode")
    assert "--decode exact" in line
    fast = tmp_path / "fast"
    extract(options(photo_folder, fast))
    with pytest.raises(Exception, match="decode exact: the cache .* was extracted with the fast decode"):
        extract(options(photo_folder, fast, decode="exact"))


def test_repair_and_info_use_the_caches_decode_mode(photo_folder, tmp_path, capsys):
    cache = extract(options(photo_folder, tmp_path / "c")).cache
    shutil.copytree(cache, tmp_path / "original")
    damaged = FeatureCache(cache).manifest["shards"][0]["file"]
    os.remove(os.path.join(cache, damaged))
    assert main(["verify", cache, "--repair", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["repaired"] == [damaged]
    assert_same_cache(cache, str(tmp_path / "original"))  # rebuilt with the fast decode, as made
    assert main(["info", cache]) == 0
    assert "fast decode" in capsys.readouterr().out


def test_summary_says_decode_bound_when_the_backbone_waited(photo_folder, tmp_path):
    summary = extract(options(photo_folder, tmp_path / "c", decode="exact"))
    summary.timing.update(wait_for_decode=9.0, inference=2.0)
    from featcache.report import extract_summary

    assert summary.decode_bound and summary.to_json()["decode_bound"] is True
    assert "decode-bound" in extract_summary(summary) and "--decode fast" in extract_summary(summary)
    summary.timing.update(wait_for_decode=0.1, inference=2.0)
    assert not summary.decode_bound and "decode-bound" not in extract_summary(summary)


def test_a_folder_of_heic_photos_extracts(tmp_path):
    pytest.importorskip("pillow_heif")
    root = tmp_path / "iphone"
    jpegs = photos(tmp_path / "jpegs", per_class=2, size=(320, 240))
    for path in sorted(jpegs.rglob("*.jpg")):
        target = root / path.relative_to(jpegs).with_suffix(".HEIC")
        target.parent.mkdir(parents=True, exist_ok=True)
        img = Image.open(path)
        img.save(target, format="HEIF", quality=90, exif=img.getexif().tobytes())
    heic = extract(options(root, tmp_path / "heic", decode="exact"))
    assert heic.images_extracted == 6 and not heic.skipped and heic.ignored == 0
    ref = extract(options(jpegs, tmp_path / "jpeg", decode="exact"))
    a, b = load_features(heic.cache, "train"), load_features(ref.cache, "train")
    # the same pictures, upright the same way: features as close as two lossy codecs allow
    assert np.linalg.norm(a.features - b.features) / np.linalg.norm(b.features) < 0.15
