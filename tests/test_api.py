"""featcache from Python: the verbs as functions (the README's quick start runs here), heads
held in memory, backbone reuse across predict calls, reprs, and a cheap import."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

import featcache
from featcache.errors import UsageError


@pytest.fixture(scope="module")
def photos(tmp_path_factory, data_root, weights_dir):
    """A folder of class folders (no split folders), as the README's example assumes."""
    root = tmp_path_factory.mktemp("api")
    for name in ("cats", "dogs"):
        target = root / "photos" / name
        target.mkdir(parents=True)
        for image in sorted((data_root / "cats_dogs" / "train" / name).iterdir())[:20]:
            shutil.copyfile(image, target / image.name)
    return root


def _quickstart() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- python-quickstart -->\n```python\n(.*?)```", text, re.S)
    assert match, "README lost its Python quick start"
    return match.group(1)


def test_readme_python_quickstart_runs(photos, weights_dir, monkeypatch, capsys):
    code = _quickstart()
    assert len(code.strip().splitlines()) <= 5
    monkeypatch.chdir(photos)
    monkeypatch.setenv("FEATCACHE_WEIGHTS_DIR", str(weights_dir))
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert "# val accuracy" in printed[0]
    first = eval(printed[1], {})  # the first prediction row, as printed
    assert first["label"] in ("cats", "dogs") and len(first["top_k"]) == 2
    assert (photos / "head" / "config.json").is_file()


@pytest.fixture(scope="module")
def cache(photos, weights_dir):
    os.environ["FEATCACHE_WEIGHTS_DIR"] = str(weights_dir)
    try:
        return featcache.extract(str(photos / "photos"), str(photos / "cache-api"),
                                 backbone="mobilenet", val_fraction=0.25, progress=False)
    finally:
        del os.environ["FEATCACHE_WEIGHTS_DIR"]


def test_train_head_without_out_writes_nothing_and_predicts_like_its_folder(cache, photos, weights_dir,
                                                                         tmp_path):
    before = sorted(os.listdir(photos))
    head = featcache.train_head(cache, "logreg")
    assert sorted(os.listdir(photos)) == before and head.summary_.out is None
    assert head.metrics_["accuracy"] == head.val_accuracy_ and "val accuracy" in repr(head)
    saved = featcache.train_head(cache.cache, "logreg", out=tmp_path / "head")
    images = str(photos / "photos" / "dogs")
    in_memory = featcache.predict(head, images, weights_dir=str(weights_dir))
    from_folder = featcache.predict(tmp_path / "head", images, weights_dir=str(weights_dir))
    assert [r["path"] for r in in_memory] == [r["path"] for r in from_folder]
    np.testing.assert_allclose([r["score"] for r in in_memory], [r["score"] for r in from_folder],
                               rtol=1e-5)
    assert all(len(r["top_k"]) == 2 for r in in_memory)  # top_k=3 default, two classes
    assert saved.summary_.out == str(tmp_path / "head")


def test_repeated_predict_reuses_the_backbone(cache, photos, weights_dir, monkeypatch):
    head = featcache.train_head(cache, "ridge")
    images = [str(p) for p in sorted((photos / "photos" / "cats").iterdir())[:3]]
    featcache.predict(head, images, weights_dir=str(weights_dir))
    import featcache.feature_model as fm

    built = dict(fm._LAST_BUILT)
    calls = []
    original = fm.build_feature_extractor
    monkeypatch.setattr(fm, "build_feature_extractor", lambda *a, **k: calls.append(a) or original(*a, **k))
    again = featcache.predict(head, images, weights_dir=str(weights_dir))
    assert calls == [] and fm._LAST_BUILT == built and len(again) == 3


def test_verbs_take_flag_names_and_refuse_unknown_ones(photos):
    with pytest.raises(UsageError, match="unknown options image_sise"):
        featcache.extract(photos / "photos", photos / "x", image_sise=96)
    with pytest.raises(UsageError, match="top_k"):
        featcache.predict(photos / "head", photos / "photos", top_k=0)


def test_reprs_say_what_they_hold(cache):
    text = repr(featcache.FeatureCache(cache.cache))
    assert "mobilenet" in text and "train" in text and "MiB" in text
    assert "img/s" in repr(cache)


def test_import_is_cheap_and_names_are_functions():
    code = ("import sys, featcache, featcache.prediction, featcache.finetuning, featcache.extract.run;"
            "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules;"
            "assert all(callable(getattr(featcache, n)) and not hasattr(getattr(featcache, n), '__path__')"
            " for n in ('extract', 'train_head', 'compare', 'evaluate', 'predict', 'finetune'));"
            "import types; assert not isinstance(featcache.predict, types.ModuleType)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_cli_verbs_call_the_python_functions():
    """Each verb's command imports its function from featcache.api, and nothing the function
    would otherwise wrap (so the command and Python cannot drift apart)."""
    import ast

    tree = ast.parse((REPO / "featcache" / "cli.py").read_text())
    commands = {"_cmd_extract": "extract", "_cmd_train_head": "train_head", "_cmd_compare": "compare",
                "_cmd_evaluate": "evaluate", "_cmd_predict": "predict", "_cmd_finetune": "finetune"}
    wrapped = {"train_head", "compare_heads", "evaluate", "predict_images", "finetune", "extract"}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in commands:
            imports = [(n.module, a.name) for n in ast.walk(node) if isinstance(n, ast.ImportFrom)
                       for a in n.names]
            assert ("api", commands[node.name]) in imports, node.name
            assert not [i for i in imports if i[0] != "api" and i[1] in wrapped], (node.name, imports)
