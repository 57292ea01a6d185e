"""Listing image folders and lists into labelled, split records."""

from __future__ import annotations

import shutil

import pytest
from conftest import make_folder

from featcache.dataset import load_dataset, scan_folder
from featcache.errors import DataError, UsageError


def test_split_folders_with_aliases(tmp_path):
    make_folder(tmp_path, {"train": {"a": 2, "b": 1}, "validation": {"a": 1, "b": 1}})
    ds = scan_folder(str(tmp_path))
    assert ds.layout == "split-folders"
    assert ds.split_counts() == {"train": 3, "val": 2}
    assert ds.class_names == ["a", "b"]
    assert [r.path for r in ds.records][:3] == ["train/a/a_000.jpg", "train/a/a_001.jpg",
                                               "train/b/b_000.jpg"]


def test_class_folders_without_splits_are_all_train(tmp_path):
    make_folder(tmp_path, {"": {"x": 2, "y": 2}})
    ds = scan_folder(str(tmp_path))
    assert ds.layout == "class-folders" and ds.split_counts() == {"train": 4}


def test_hidden_and_non_image_files_are_passed_over(tmp_path):
    make_folder(tmp_path, {"": {"x": 1}})
    (tmp_path / "x" / "notes.txt").write_text("hi")
    (tmp_path / "x" / ".hidden.jpg").write_bytes(b"junk")
    (tmp_path / ".git").mkdir()
    shutil.copy(tmp_path / "x" / "x_000.jpg", tmp_path / "x" / "UPPER.JPG")
    ds = scan_folder(str(tmp_path))
    assert sorted(r.path for r in ds.records) == ["x/UPPER.JPG", "x/x_000.jpg"]
    assert ("x/notes.txt", "not an image file extension") in ds.ignored


def test_mixed_split_and_class_folders_are_refused(tmp_path):
    make_folder(tmp_path, {"train": {"a": 1}, "": {"stray": 1}})
    with pytest.raises(DataError, match="mixes split folders"):
        scan_folder(str(tmp_path))


def test_empty_source_is_a_clear_error(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="no images found"):
        scan_folder(str(tmp_path))


def test_val_split_is_by_content_and_stable_when_images_are_added(tmp_path):
    make_folder(tmp_path, {"": {"a": 30, "b": 30}})
    before = {r.path: r.split for r in load_dataset(str(tmp_path), val_fraction=0.3).records}
    assert 8 <= sum(s == "val" for s in before.values()) <= 30
    make_folder(tmp_path / "more", {"": {"a": 20}})
    for f in (tmp_path / "more" / "a").iterdir():
        f.rename(tmp_path / "a" / f"new_{f.name}")
    after = {r.path: r.split for r in load_dataset(str(tmp_path), val_fraction=0.3).records}
    assert all(after[p] == s for p, s in before.items())
    assert len(after) == len(before) + 20


def test_identical_files_land_in_the_same_split(tmp_path):
    make_folder(tmp_path, {"": {"a": 10}})
    for i in range(10):
        shutil.copy(tmp_path / "a" / f"a_{i:03d}.jpg", tmp_path / "a" / f"copy_{i:03d}.jpg")
    splits = {r.path: r.split for r in load_dataset(str(tmp_path), val_fraction=0.5).records}
    assert all(splits[f"a/a_{i:03d}.jpg"] == splits[f"a/copy_{i:03d}.jpg"] for i in range(10))


def test_val_split_refused_when_val_exists(tmp_path):
    make_folder(tmp_path, {"train": {"a": 2}, "val": {"a": 1}})
    with pytest.raises(UsageError, match="already has a 'val' split"):
        load_dataset(str(tmp_path), val_fraction=0.2)


def test_csv_list_with_header_and_splits(tmp_path):
    make_folder(tmp_path / "imgs", {"": {"a": 2, "b": 1}})
    (tmp_path / "list.csv").write_text(
        "path,label,split\nimgs/a/a_000.jpg,cat,train\nimgs/a/a_001.jpg,cat,validation\n"
        "imgs/b/b_000.jpg,dog,\n")
    ds = load_dataset(str(tmp_path / "list.csv"))
    assert ds.layout == "list" and ds.class_names == ["cat", "dog"]
    assert {(r.path, r.split) for r in ds.records} == {
        ("imgs/a/a_000.jpg", "train"), ("imgs/b/b_000.jpg", "train"), ("imgs/a/a_001.jpg", "val")}


def test_tsv_list_and_missing_file_kept_for_decoding_to_report(tmp_path):
    make_folder(tmp_path, {"": {"a": 1}})
    (tmp_path / "list.tsv").write_text("a/a_000.jpg\tx\nmissing.jpg\ty\n")
    ds = load_dataset(str(tmp_path / "list.tsv"))
    assert [r.size > 0 for r in ds.records] == [True, False]


def test_list_paths_outside_the_root_are_refused_unless_allowed(tmp_path):
    make_folder(tmp_path / "outside", {"": {"a": 1}})
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "l.csv").write_text("../outside/a/a_000.jpg,a\n")
    with pytest.raises(DataError, match="outside the data root.*allow_outside_root"):
        load_dataset(str(tmp_path / "lists" / "l.csv"))
    ds = load_dataset(str(tmp_path / "lists" / "l.csv"), allow_outside_root=True)
    assert ds.records[0].path.startswith("/")


def test_bad_list_row_names_file_and_line(tmp_path):
    (tmp_path / "l.csv").write_text("a.jpg,x\njust-a-path.jpg\n")
    with pytest.raises(DataError, match=r"l\.csv:2: expected"):
        load_dataset(str(tmp_path / "l.csv"))
