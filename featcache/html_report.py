"""Self-contained HTML pages: one file, every image inline as a data URI, no script, no network.

A page is built from a few blocks (headings, paragraphs, key-value facts,
tables, figures, a gallery of thumbnails with captions) and written
atomically, so it opens from a mail attachment or a file browser as it does
on the machine that made it. `featcache demo` writes its report with it; any
command that wants a page a person would rather look at than read uses the
same blocks.
"""

from __future__ import annotations

import base64
import html
import io
import mimetypes
import os
from dataclasses import dataclass, field

from .fileio import write_text_atomic

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 60rem; padding: 0 1rem; color: #1b1f24; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
.subtitle { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border-bottom: 1px solid #d0d7de; padding: 0.3rem 0.7rem; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
tr.highlight td { background: #fff4d6; font-weight: 600; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dl.facts dt { color: #57606a; }
dl.facts dd { margin: 0; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: 0.9rem; }
.gallery { display: flex; flex-wrap: wrap; gap: 1rem; }
.gallery figure { margin: 0; width: 12rem; }
.gallery img { width: 96px; height: 96px; object-fit: contain; image-rendering: pixelated; }
.gallery figure.pair { width: 14rem; }
.gallery figcaption { overflow-wrap: anywhere; }
.gallery .images { display: flex; gap: 0.4rem; }
.gallery .missing { width: 96px; height: 96px; background: #eaeef2; color: #57606a;
                    font-size: 0.75rem; display: flex; align-items: center; text-align: center; }
.note { color: #57606a; font-size: 0.9rem; }
"""


def data_uri(image: str | bytes, mime: str | None = None) -> str:
    """`image` (a file's path, or its bytes with `mime`) as a data: URI."""
    if isinstance(image, (str, os.PathLike)):
        mime = mime or mimetypes.guess_type(str(image))[0] or "application/octet-stream"
        with open(image, "rb") as fh:
            image = fh.read()
    return f"data:{mime or 'image/png'};base64,{base64.b64encode(image).decode('ascii')}"


def thumbnail_uri(path: str, size: int = 192) -> str:
    """A PNG thumbnail of an image file (upright, longest side at most `size`) as a data URI."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.draft("RGB", (size * 2, size * 2))  # a JPEG decodes at a reduced scale: photos stay fast
        img = ImageOps.exif_transpose(img).convert("RGB")
        img.thumbnail((size, size))
        buffer = io.BytesIO()
        img.save(buffer, "PNG")
    return data_uri(buffer.getvalue(), "image/png")


def _esc(value) -> str:
    return html.escape("" if value is None else str(value))


@dataclass
class Page:
    """An HTML page built block by block; `write(path)` saves it as one file."""

    title: str
    subtitle: str | None = None
    blocks: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> Page:
        self.blocks.append(f"<h{level}>{_esc(text)}</h{level}>")
        return self

    def paragraph(self, text: str, note: bool = False) -> Page:
        css = ' class="note"' if note else ""
        self.blocks.append(f"<p{css}>{_esc(text)}</p>")
        return self

    def facts(self, pairs: list[tuple[str, object]]) -> Page:
        """Label-value lines (what ran, how long, where things are)."""
        items = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in pairs)
        self.blocks.append(f'<dl class="facts">{items}</dl>')
        return self

    def table(self, rows: list[dict], columns: list[tuple[str, str]], highlight: int | None = None,
              table_id: str | None = None) -> Page:
        """`rows` as a table; `columns` are (key, header) pairs; row `highlight` is marked.

        Floats print with 4 decimals; text cells are left-aligned.
        """
        def cell(value) -> str:
            if isinstance(value, float):
                return f"<td>{value:.4f}</td>"
            if isinstance(value, (int, type(None))):
                return f"<td>{_esc(value if value is not None else '-')}</td>"
            return f'<td class="text">{_esc(value)}</td>'

        head = "".join(f"<th>{_esc(label)}</th>" for _, label in columns)
        marked = ' class="highlight"'
        body = "".join(
            f"<tr{marked if i == highlight else ''}>"
            + "".join(cell(row.get(key)) for key, _ in columns) + "</tr>"
            for i, row in enumerate(rows))
        ident = f' id="{_esc(table_id)}"' if table_id else ""
        self.blocks.append(f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def figure(self, image: str | bytes, caption: str, alt: str | None = None) -> Page:
        """An image (a PNG file's path, or PNG bytes) embedded in the page, with a caption."""
        self.blocks.append(f'<figure><img src="{data_uri(image)}" alt="{_esc(alt or caption)}">'
                           f"<figcaption>{_esc(caption)}</figcaption></figure>")
        return self

    def gallery(self, items: list[tuple[str | list[str], list[str]]], thumb: int = 192) -> Page:
        """Thumbnails of image files, each with caption lines (e.g. its top classes).

        An item's path may be a list of paths: their thumbnails sit side by
        side in one card (an image beside its duplicate). A file that cannot
        be read shows as a grey box naming it instead of failing the page.
        """
        def image(path: str) -> str:
            name = _esc(os.path.basename(path))
            try:
                return f'<img src="{thumbnail_uri(path, thumb)}" alt="{name}">'
            except (OSError, ValueError):
                return f'<div class="missing">not readable: {name}</div>'

        figures = []
        for paths, lines in items:
            group = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
            css = ' class="pair"' if len(group) > 1 else ""
            images = "".join(image(p) for p in group)
            if len(group) > 1:
                images = f'<div class="images">{images}</div>'
            figures.append(f"<figure{css}>{images}"
                           f"<figcaption>{'<br>'.join(_esc(line) for line in lines)}</figcaption></figure>")
        self.blocks.append(f'<div class="gallery">{"".join(figures)}</div>')
        return self

    def html(self) -> str:
        subtitle = f'<p class="subtitle">{_esc(self.subtitle)}</p>' if self.subtitle else ""
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{_esc(self.title)}</title><style>{STYLE}</style></head>"
                f"<body><h1>{_esc(self.title)}</h1>{subtitle}\n" + "\n".join(self.blocks)
                + "\n</body></html>\n")

    def write(self, path: str) -> str:
        """Write the page to `path` atomically; returns the absolute path."""
        path = os.path.abspath(path)
        write_text_atomic(path, self.html())
        return path
