"""featcache fuse: two caches of the same images (MobileNet and VGG16) joined by content hash."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import small_models

import featcache
from featcache.cli import main
from featcache.errors import CacheError
from featcache.extract import ExtractOptions, extract
from featcache.feature_model import build_feature_extractor
from featcache.fusion import fuse_caches
from featcache.cache import FeatureCache
from featcache.train import train_head


@pytest.fixture(scope="module")
def caches(tmp_path_factory, data_root, weights_dir):
    """MobileNet 96 px of tiny_hymenoptera; VGG16 64 px of a renamed copy (other paths, other order)."""
    root = tmp_path_factory.mktemp("fusion")
    source = data_root / "tiny_hymenoptera"
    renamed = root / "renamed"
    for i, path in enumerate(sorted(source.rglob("*.jpg"))):
        target = renamed / path.parent.relative_to(source) / f"{999 - i:03d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    mobilenet = small_models.mobilenet96(weights_dir)
    vgg = build_feature_extractor("vgg16", 64, weights=str(
        weights_dir / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"))
    a = extract(ExtractOptions(data=str(source), out=str(root / "a"), shard_size=8, progress=False),
                extractor=mobilenet).cache
    b = extract(ExtractOptions(data=str(renamed), out=str(root / "b"), shard_size=5, progress=False),
                extractor=vgg).cache
    fewer = root / "fewer"
    shutil.copytree(renamed, fewer)
    for path in sorted((fewer / "train" / "ants").glob("*.jpg"))[:2]:
        path.unlink()
    c = extract(ExtractOptions(data=str(fewer), out=str(root / "c"), progress=False),
                extractor=mobilenet).cache
    return a, b, c


def test_fused_rows_join_both_caches_by_content_hash(caches, tmp_path):
    a, b, _ = caches
    summary = fuse_caches(a, b, str(tmp_path / "ab"))
    assert summary.feature_shape == (1024 + 512,) and summary.splits == {"train": 16, "val": 8}
    for split in ("train", "val"):
        fa, fb = featcache.load_features(a, split), featcache.load_features(b, split)
        fused = featcache.load_features(str(tmp_path / "ab"), split)
        assert fused.paths == fa.paths and fused.hashes == fa.hashes
        np.testing.assert_array_equal(fused.labels, fa.labels)
        np.testing.assert_array_equal(fused.features[:, :1024], fa.features)
        row_of = {h: i for i, h in enumerate(fb.hashes)}
        assert [row_of[h] for h in fa.hashes] != list(range(len(fa)))  # the order really differs
        np.testing.assert_array_equal(fused.features[:, 1024:],
                                      fb.features[[row_of[h] for h in fa.hashes]])
    fp = FeatureCache(str(tmp_path / "ab")).fingerprint
    assert [f["backbone"] for f in fp["fused"]] == ["mobilenet", "vgg16"]
    trained = train_head(str(tmp_path / "ab"), "logreg", str(tmp_path / "head"), progress=False)
    assert trained.val_rows == 8 and trained.val_accuracy is not None


def test_caches_of_other_images_are_refused_naming_how_many_rows_differ(caches, tmp_path, capsys):
    a, _, c = caches
    with pytest.raises(CacheError, match=r"2 rows of split 'train' differ \(2 only in the first, "
                                         r"0 only in the second"):
        fuse_caches(a, c, str(tmp_path / "ac"))
    assert main(["fuse", c, a, "--out", str(tmp_path / "ca")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "(0 only in the first, 2 only in the second" in err
    assert not (tmp_path / "ac").exists() and not (tmp_path / "ca").exists()
