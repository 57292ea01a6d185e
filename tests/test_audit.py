"""`featcache audit`: planted leaks, duplicates and a flipped label found from a real cache
(MobileNet, real weights, cats_dogs images), the report rendered in headless Chromium, bad input."""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from featcache.cli import main
from featcache.data_audit import audit_cache
from featcache.data_audit.duplicates import exact_groups, near_across_splits, near_within_splits
from featcache.data_audit.outliers import score_outliers
from featcache.data_audit.vectors import AuditRows, unit_vectors
from featcache.extract import ExtractOptions, extract


@pytest.fixture(scope="module")
def planted(tmp_path_factory, data_root, weights_dir):
    """48 train and 16 val images of cats_dogs with known problems: three train images copied
    into val (byte-identical, re-encoded, resized), one duplicated inside train, and two moved
    into the other class's folder."""
    root = tmp_path_factory.mktemp("planted") / "pets"
    train = {}
    for split, count in (("train", 24), ("val", 8)):
        for name in ("cats", "dogs"):
            (root / split / name).mkdir(parents=True)
            files = sorted((data_root / "cats_dogs" / split / name).iterdir())[:count]
            for image in files:
                shutil.copyfile(image, root / split / name / image.name)
            if split == "train":
                train[name] = [root / split / name / f.name for f in files]
    leaks = {}
    shutil.copyfile(train["cats"][0], root / "val/cats/leak_identical.jpg")
    leaks["identical"] = (f"train/cats/{train['cats'][0].name}", "val/cats/leak_identical.jpg")
    with Image.open(train["dogs"][0]) as img:
        img.convert("RGB").save(root / "val/dogs/leak_reencoded.jpg", quality=60)
    leaks["reencoded"] = (f"train/dogs/{train['dogs'][0].name}", "val/dogs/leak_reencoded.jpg")
    with Image.open(train["cats"][1]) as img:
        img.convert("RGB").resize((img.width * 3 // 4, img.height * 3 // 4), Image.LANCZOS).save(
            root / "val/cats/leak_resized.jpg", quality=85)
    leaks["resized"] = (f"train/cats/{train['cats'][1].name}", "val/cats/leak_resized.jpg")
    shutil.copyfile(train["dogs"][1], root / "train/dogs/copy_inside_train.jpg")
    flipped = {}
    for name, other in (("cats", "dogs"), ("dogs", "cats")):
        image = train[name][5]
        shutil.move(image, root / "train" / other / image.name)
        flipped[f"train/{other}/{image.name}"] = name
    cache = tmp_path_factory.mktemp("planted-cache")
    summary = extract(ExtractOptions(data=str(root), out=str(cache), backbone="mobilenet",
                                     weights_dir=str(weights_dir), progress=False))
    return {"root": root, "cache": str(cache), "summary": summary, "leaks": leaks,
            "inside": (f"train/dogs/{train['dogs'][1].name}", "train/dogs/copy_inside_train.jpg"),
            "flipped": flipped}


@pytest.fixture(scope="module")
def audited(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "report"
    return audit_cache(planted["cache"], out=str(out), progress=False), str(out)


def _pairs(findings, kinds):
    return {tuple(sorted(i["path"] for i in f["images"])) for f in findings if f["kind"] in kinds}


def test_extract_hints_at_byte_identical_images_across_splits(planted):
    hints = [w for w in planted["summary"].warnings if "byte-identical in two splits" in w]
    assert len(hints) == 1 and "1 image sit" in hints[0] and "featcache audit" in hints[0]


def test_planted_leaks_are_found_across_splits(audited, planted):
    result, _ = audited
    exact = _pairs(result.findings, {"cross-split-exact"})
    near = _pairs(result.findings, {"cross-split-near"})
    assert exact == {tuple(sorted(planted["leaks"]["identical"]))}
    assert tuple(sorted(planted["leaks"]["reencoded"])) in near
    assert tuple(sorted(planted["leaks"]["resized"])) in near
    assert result.counts["cross-split-near"] == len(near)
    for f in result.findings:
        if f["kind"] == "cross-split-near":
            assert f["similarity"] >= result.threshold
    # leaks come first in the findings, as in the report
    assert [f["kind"] for f in result.findings[:3]] == ["cross-split-exact"] + ["cross-split-near"] * 2


def test_a_copy_inside_a_split_is_an_exact_duplicate_not_a_leak(audited, planted):
    result, _ = audited
    assert _pairs(result.findings, {"exact-duplicate"}) == {tuple(sorted(planted["inside"]))}
    assert tuple(sorted(planted["inside"])) not in _pairs(result.findings, {"near-duplicate"})


def test_flipped_labels_rank_at_the_top_with_their_true_class_suggested(audited, planted):
    result, _ = audited
    ranking = result.label_ranking
    assert [r["split"] for r in ranking] == ["train"] * len(ranking)
    assert len(ranking) == result.images["train"] == 49
    assert {r["path"] for r in ranking[:2]} == set(planted["flipped"]), ranking[:4]
    for path, true_class in planted["flipped"].items():
        issue = next(f for f in result.findings if f["kind"] == "label-issue"
                     and f["images"][0]["path"] == path)
        assert issue["suggested"] == true_class and issue["images"][0]["label"] != true_class
        # beside it: the most similar training image of the suggested class
        assert issue["images"][1]["label"] == true_class and issue["images"][1]["split"] == "train"
    confidences = [r["self_confidence"] for r in ranking]
    assert confidences == sorted(confidences)


def test_json_lists_every_finding_with_paths_kind_and_score(planted, tmp_path, capsys):
    code = main(["audit", planted["cache"], "--out", str(tmp_path / "a"), "--json", "--top", "2"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["threshold"] == pytest.approx(0.90)
    assert data["counts"]["cross-split-exact"] == 1 and data["counts"]["exact-duplicate"] == 1
    kinds = [f["kind"] for f in data["findings"]]
    assert kinds.count("label-issue") <= 2 and kinds[0] == "cross-split-exact"
    for f in data["findings"]:
        assert {"kind", "score", "images"} <= set(f) and "rows" not in f
        assert all({"path", "split", "label"} <= set(i) for i in f["images"])
    files = {os.path.basename(p) for p in data["files"]}
    assert files == {"report.html", "audit.json", "findings.csv", "label_ranking.csv"}
    lines = (tmp_path / "a" / "findings.csv").read_text().splitlines()
    assert len(lines) == 1 + sum(data["counts"].values())


def test_terminal_summary_puts_leaks_first(planted, tmp_path, capsys):
    assert main(["audit", planted["cache"], "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["audit", planted["cache"], "--out", str(tmp_path / "a")]) == 0  # an audit folder is reused
    text = capsys.readouterr().out
    assert text.index("two splits (leaks)") < text.index("likely label errors")
    assert "val/cats/leak_identical.jpg" in text and "report.html" in text


def test_a_clean_set_shows_no_leaks(mobilenet_cache):
    result = audit_cache(mobilenet_cache("tiny_flowers5"), progress=False)
    assert result.counts["cross-split-exact"] == 0 and result.counts["cross-split-near"] == 0
    assert result.files == [] and result.out is None


def _chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("FEATCACHE_REQUIRE_SHARED") == "1":
        pytest.fail("chromium is not installed (.ci/run installs it with apt-get)")
    if found is None:
        pytest.skip("chromium is not installed")
    return found


PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    headings: [...document.querySelectorAll("h2")].map(h => h.textContent),
    widths: [...document.images].map(img => img.complete ? img.naturalWidth : 0),
    pairs: document.querySelectorAll("figure.pair").length});
  document.body.appendChild(out);
});
</script>"""


def _browse(browser, page, *flags):
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-dev-shm-usage", "--virtual-time-budget=10000", *flags,
                           page.as_uri()], capture_output=True, text=True, timeout=120)


def test_report_renders_thumbnails_in_headless_chromium(audited, tmp_path):
    browser = _chromium()
    result, out = audited
    report = tmp_path / "probed.html"
    report.write_text(open(os.path.join(out, "report.html")).read().replace("</body>", PROBE + "</body>"))
    proc = _browse(browser, report, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S).group(1)
                       .replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["headings"][0].startswith("Byte-identical images in two splits")
    shown = sum(min(len(f["images"]), 2) for kind in result.counts for f in result.top(kind))
    assert shown > 6
    assert len(probe["widths"]) == shown and all(w > 0 for w in probe["widths"])
    assert probe["pairs"] >= 3  # each leak: the copy beside its source
    # and what a person sees: a screenshot with the thumbnails' colours in it
    shot = tmp_path / "report.png"
    proc = _browse(browser, report, f"--screenshot={shot}", "--window-size=1200,1400")
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    # photos, not only text: thousands of colours, and coloured (not grey) pixels
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 5000
    assert ((pixels.max(axis=2) - pixels.min(axis=2)) > 20).mean() > 0.005


def test_moved_images_leave_a_readable_report(planted, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(planted["cache"], moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["source"]["root"] = str(tmp_path / "gone")
    (moved / "manifest.json").write_text(json.dumps(manifest))
    result = audit_cache(str(moved), out=str(tmp_path / "a"), progress=False)
    page = (tmp_path / "a" / "report.html").read_text()
    assert result.counts["cross-split-exact"] == 1 and "not readable: leak_identical.jpg" in page


@pytest.mark.parametrize("args, message", [
    (["--threshold", "1.5"], "--threshold 1.5"),
    (["--top", "0"], "--top 0"),
    (["--train-split", "nope"], "--train-split nope"),
])
def test_bad_settings_get_one_line_errors(planted, tmp_path, capsys, args, message):
    assert main(["audit", planted["cache"], "--out", str(tmp_path / "a"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists()


def test_not_a_cache_and_a_foreign_folder_are_refused(planted, tmp_path, capsys):
    assert main(["audit", str(tmp_path), "--out", str(tmp_path / "a")]) == 2
    assert "not a featcache cache" in capsys.readouterr().err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert main(["audit", planted["cache"], "--out", str(foreign)]) == 2
    assert "holds no featcache audit" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep" and len(os.listdir(foreign)) == 1


def _rows(vectors, splits, hashes, labels):
    return AuditRows(unit_vectors(np.asarray(vectors, dtype=np.float32)), np.asarray(labels),
                     np.asarray(splits, dtype=object), [f"img{i}.jpg" for i in range(len(labels))],
                     np.asarray(hashes, dtype=object), ["a", "b"], "/nowhere")


def test_duplicate_search_on_known_vectors():
    rows = _rows([[1, 0, 0], [1, 0.05, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0.02], [0, 0, 1]],
                 ["train", "train", "train", "val", "val", "val"],
                 ["h0", "h1", "h2", "h0", "h4", "h5"], [0, 0, 1, 0, 1, 1])
    across, within = exact_groups(rows)
    assert across == [[0, 3]] and within == []
    # row 3 has the same bytes as row 0: an exact leak, not also a near one; row 4 ~ row 2
    assert [(a, b) for _, a, b in near_across_splits(rows, 0.99)] == [(2, 4)]
    assert [(a, b) for _, a, b in near_within_splits(rows, 0.99)] == [(0, 1)]
    assert near_within_splits(rows, 0.99999) == []


def test_outlier_score_flags_the_vector_far_from_every_training_image():
    rng = np.random.default_rng(0)
    base = np.abs(rng.normal(size=(1, 16))) + 1.0
    train = base + 0.05 * rng.normal(size=(30, 16))
    far = -base
    rows = _rows(np.vstack([train, far]), ["train"] * 30 + ["val"], [f"h{i}" for i in range(31)],
                 [0] * 15 + [1] * 15 + [0])
    scores = score_outliers(rows, k=3)
    assert int(np.argmax(scores.scores)) == 30 and scores.scores[30] > scores.cutoff
    assert (scores.scores[:30] <= scores.cutoff).mean() > 0.9


def test_spatial_features_are_pooled_before_comparison():
    x = np.ones((2, 3, 3, 4), dtype=np.float32)
    out = unit_vectors(x)
    assert out.shape == (2, 4) and np.allclose(np.linalg.norm(out, axis=1), 1.0)
