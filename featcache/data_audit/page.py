"""The audit's files: report.html (thumbnails side by side), audit.json and two CSV files.

- `report.html`: one self-contained page (`featcache.html_report.Page`): the
  counts, then each kind of finding, leaks first, each a card with the
  flagged image beside its duplicate or beside the most similar training
  image of the class the head prefers, with paths, labels and scores.
- `audit.json`: what `featcache audit --json` prints (top findings of each kind).
- `findings.csv`: every finding, one row per finding.
- `label_ranking.csv`: every training image by self-confidence, lowest first.
"""

from __future__ import annotations

import csv
import io
import os

from ..errors import UsageError
from ..fileio import write_json_atomic, write_text_atomic
from ..html_report import Page
from .kinds import KIND_TITLES, KINDS

REPORT_FILE = "report.html"
JSON_FILE = "audit.json"
FINDINGS_CSV = "findings.csv"
RANKING_CSV = "label_ranking.csv"


def prepare_audit_folder(out: str) -> str:
    """Create `out`, or reuse it when it holds an earlier audit; refuse anything else."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"{{param:out}} {out}: is a file, not a folder.")
    if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, JSON_FILE)):
        raise UsageError(f"{{param:out}} {out}: folder is not empty and holds no featcache audit. "
                         "Choose a new or empty folder.")
    os.makedirs(out, exist_ok=True)
    return out


def _where(image: dict) -> str:
    return f"{image['split']} · {image['label']}"


def _caption(finding: dict) -> list[str]:
    kind, images = finding["kind"], finding["images"]
    if kind in ("cross-split-exact", "exact-duplicate"):
        return [f"{len(images)} copies (same bytes)"] + [f"{i['path']} ({_where(i)})" for i in images]
    if kind in ("cross-split-near", "near-duplicate"):
        return [f"similarity {finding['similarity']:.3f}"] + [f"{i['path']} ({_where(i)})" for i in images]
    if kind == "label-issue":
        lines = [images[0]["path"], f"{images[0]['split']}, labelled {images[0]['label']}",
                 f"head: {finding['suggested']} {finding['suggested_probability']:.2f}, "
                 f"own label {finding['self_confidence']:.2f}"]
        if len(images) > 1:
            lines.append(f"right: closest {finding['suggested']} in train")
        return lines
    return [images[0]["path"], _where(images[0]),
            f"distance {finding['score']:.3f}, nearest class {finding['nearest_class']}"]


def _page(result, rows, top: int) -> Page:
    total = sum(result.images.values())
    page = Page("featcache audit",
                f"{total} images of {result.cache} ({', '.join(f'{s} {n}' for s, n in result.images.items())}), "
                f"checked from their cached {result.settings['backbone']} features in "
                f"{result.seconds:.1f} s")
    page.facts([(KIND_TITLES[k], result.counts[k]) for k in KINDS]
               + [("near-duplicate threshold", f"cosine similarity >= {result.threshold:.2f}"),
                  ("label check", f"logreg, {result.settings['folds']}-fold out-of-fold on "
                                  f"{result.settings['train_split']}" if result.settings["folds"]
                   else "skipped"),
                  ("outlier score", f"cosine distance to the {result.settings['neighbors']}th "
                                    f"nearest training image; flagged above "
                                    f"{result.settings['outlier_cutoff']:.3f}")])
    for note in result.notes:
        page.paragraph(note, note=True)
    for kind in KINDS:
        shown = result.top(kind, top)
        page.heading(f"{KIND_TITLES[kind][0].upper()}{KIND_TITLES[kind][1:]} "
                     f"({result.counts[kind]})")
        if not shown:
            page.paragraph("None found.", note=True)
            continue
        if len(shown) < result.counts[kind]:
            page.paragraph(f"The {len(shown)} most suspicious; {FINDINGS_CSV} lists all "
                           f"{result.counts[kind]}.", note=True)
        page.gallery([([rows.file(r) for r in f["rows"][:2]], _caption(f)) for f in shown], thumb=96)
    return page


def _csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _finding_rows(findings: list[dict]) -> list[dict]:
    out = []
    for f in findings:
        images = f["images"]
        row = {"kind": f["kind"], "score": f["score"], "path": images[0]["path"],
               "split": images[0]["split"], "label": images[0]["label"],
               "suggested": f.get("suggested", f.get("nearest_class", ""))}
        if f["kind"] != "label-issue" and len(images) > 1:
            row.update(other_path=";".join(i["path"] for i in images[1:]),
                       other_split=";".join(i["split"] for i in images[1:]),
                       other_label=";".join(i["label"] for i in images[1:]))
        out.append(row)
    return out


def write_audit(result, rows, out: str, top: int) -> list[str]:
    """Write the audit's files into `out`; returns their paths."""
    files = [os.path.join(out, name) for name in (REPORT_FILE, JSON_FILE, FINDINGS_CSV)]
    result.files = files + ([os.path.join(out, RANKING_CSV)] if result.label_ranking is not None else [])
    write_text_atomic(files[2], _csv(_finding_rows(result.findings),
                                     ["kind", "score", "path", "split", "label", "suggested",
                                      "other_path", "other_split", "other_label"]))
    if result.label_ranking is not None:
        write_text_atomic(result.files[3], _csv(result.label_ranking,
                                                ["rank", "path", "split", "label", "self_confidence",
                                                 "suggested", "suggested_probability"]))
    _page(result, rows, top).write(files[0])
    write_json_atomic(files[1], result.to_json(top))
    return result.files
