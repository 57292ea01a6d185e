"""`featcache demo`: the shipped sample, the leaderboard, the time-saved estimate, the HTML
report (rendered in headless Chromium where it is installed), and the offline message."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import run_cli

from featcache.demo import DEMO_HEADS, sample_data_dir, time_saved
from featcache.extract import ExtractOptions, extract
from featcache.html_report import Page


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, weights_dir):
    out = tmp_path_factory.mktemp("demo") / "demo"
    proc = run_cli("demo", "--out", str(out), "--json", env={"FEATCACHE_WEIGHTS_DIR": str(weights_dir)})
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout), proc.stderr


def test_demo_compares_heads_on_one_extraction(demo_run):
    out, summary, _ = demo_run
    assert summary["images"] == 400 and summary["extract"]["splits"] == {"train": 300, "val": 100}
    assert summary["images_extracted"] == 400 and summary["extract_seconds"] > 0
    board = summary["leaderboard"]
    assert [r["head"] for r in board if r["status"] == "ok"] and len(board) == len(DEMO_HEADS) >= 4
    assert {r["head"] for r in board} == set(DEMO_HEADS)  # a Keras dense head and sklearn heads
    assert all(r["val_accuracy"] is not None and r["fit_seconds"] > 0 for r in board)
    assert next(r for r in board if r["head"] == "dense256")["epochs_run"] >= 4  # folds + final
    assert next(r for r in board if r["head"] == "logreg")["epochs_run"] == 0
    best = next(r for r in board if r["rank"] == 1)
    assert summary["best_head"] == best["head"] and summary["best_val_accuracy"] == best["val_accuracy"]
    assert summary["best_val_accuracy"] >= 0.9  # four distinct classes; chance is 0.25
    saved = summary["time_saved"]
    assert saved["estimate"] and saved["images"] == 400
    passes = sum(r["epochs_run"] or 1 for r in board)
    assert saved["passes"] == passes
    assert saved["in_fit_seconds_estimate"] == pytest.approx(
        passes * 400 / saved["backbone_images_per_second"], rel=0.01)
    manifest = json.loads((out / "cache" / "manifest.json").read_text())
    assert manifest["extraction"]["backbone_speed"]["rows"] == 400
    preds = summary["predictions"]
    assert len(preds) == 3 and len({p["true_label"] for p in preds}) == 3
    assert all(len(p["top_k"]) == 3 and p["label"] == p["top_k"][0]["label"] for p in preds)
    assert summary["report"] == str(out / "report.html") and os.path.isfile(summary["report"])
    assert os.path.isfile(os.path.join(summary["winner_dir"], "confusion_matrix.png"))


def test_demo_text_output_has_the_leaderboard_time_saved_and_hints(demo_run, weights_dir):
    out, _, _ = demo_run
    # the cache is complete: the rerun extracts nothing and still has the backbone's pace
    proc = run_cli("demo", "--out", str(out), env={"FEATCACHE_WEIGHTS_DIR": str(weights_dir)})
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "0 shard(s) already done" not in text and "2 shard(s) already done" in text
    assert "time saved (estimate)" in text and "sample predictions of the winner" in text
    assert re.search(r"^   1  \S+ ", text, re.M)  # a ranked leaderboard row
    assert "featcache predict --model" in text and "featcache demo --data" in text
    assert f"report: {out / 'report.html'}" in text


def test_time_saved_survives_a_rerun_that_extracts_nothing(tiny_folder, tmp_path):
    options = ExtractOptions(data=str(tiny_folder), out=str(tmp_path / "c"), backbone="mobilenet",
                             image_size=32, weights="none", progress=False)
    first = extract(options)
    again = extract(options)
    assert first.images_extracted == 12 and again.images_extracted == 0
    assert again.backbone_images_per_second == first.backbone_images_per_second > 0

    class Compared:  # the two fields time_saved reads from a comparison
        rows = [{"status": "ok", "head": "dense256", "epochs_run": 7, "fit_seconds": 1.0},
                {"status": "ok", "head": "logreg", "epochs_run": 0, "fit_seconds": 0.5},
                {"status": "over budget", "head": "knn", "fit_seconds": 9.0}]

    saved = time_saved(Compared(), again)
    assert saved.passes == 8 and saved.images == 12 and saved.heads_seconds == 1.5
    assert saved.in_fit_seconds == pytest.approx(8 * 12 / first.backbone_images_per_second)


def test_demo_on_the_users_folder_without_val_split(tmp_path, weights_dir):
    from conftest import make_folder

    data = make_folder(tmp_path / "mine", {"train": {"red": 10, "blue": 10}})
    data = data / "train"  # class folders only: the demo carves out validation by hash
    proc = run_cli("demo", "--data", str(data), "--out", str(tmp_path / "d"), "--json",
                   env={"FEATCACHE_WEIGHTS_DIR": str(weights_dir)})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["data"] == str(data) and summary["images"] == 20
    assert set(summary["extract"]["splits"]) == {"train", "val"}
    assert "your images in" in proc.stderr


def test_demo_offline_without_weights_says_which_file(tmp_path):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    proc = run_cli("demo", "--out", str(tmp_path / "d"), env={"FEATCACHE_WEIGHTS_DIR": str(empty),
                                                                "KERAS_HOME": str(tmp_path / "kh")})
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("featcache: error")]
    assert len(errors) == 1 and "mobilenet_1_0_224_tf_no_top.h5" in errors[0]
    assert "Traceback" not in proc.stderr


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs.get("src", ""))
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key])


def test_report_is_self_contained(demo_run):
    out, summary, _ = demo_run
    page = Path(summary["report"]).read_text()
    found = _Images()
    found.feed(page)
    # leaderboard chart, confusion matrix, three thumbnails; nothing fetched from anywhere
    assert len(found.sources) == 5 and all(s.startswith("data:image/png;base64,") for s in found.sources)
    assert not found.links and "<script" not in page
    for row in summary["leaderboard"]:
        assert f'<td class="text">{row["head"]}</td>' in page


def test_page_escapes_text():
    page = Page("a <b> & c", "sub").table([{"x": "<i>"}], [("x", "<x>")]).paragraph("<p>")
    text = page.html()
    assert "<b>" not in text and "&lt;b&gt;" in text and "<i>" not in text and "&lt;p&gt;" in text


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("FEATCACHE_REQUIRE_SHARED") == "1":
        pytest.fail("chromium is not installed (.ci/run installs it with apt-get)")
    return found


PROBE = """<script>
window.addEventListener("load", () => {
  const rows = [...document.querySelectorAll("#leaderboard tbody tr")]
      .map(tr => tr.children[1].textContent);
  const widths = [...document.images].map(img => img.complete ? img.naturalWidth : 0);
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({rows, widths});
  document.body.appendChild(out);
});
</script>"""


def test_report_renders_in_headless_chromium(demo_run, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed")
    out, summary, _ = demo_run
    # a copy with a probe that reads the rendered page back (the report itself has no script)
    probed = tmp_path / "probed.html"
    probed.write_text(Path(summary["report"]).read_text().replace("</body>", PROBE + "</body>"))
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, proc.stdout[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["rows"] == [r["head"] for r in summary["leaderboard"] if r["status"] == "ok"]
    assert len(probe["widths"]) == 5 and all(w > 0 for w in probe["widths"])


def test_sample_is_the_documented_subset():
    root = Path(sample_data_dir())
    counts = {(s, c.name): len(list(c.glob("*.jpg"))) for s in ("train", "val")
              for c in (root / s).iterdir()}
    assert counts == {(s, c): n for s, n in (("train", 75), ("val", 25))
                      for c in ("automobile", "frog", "horse", "ship")}
