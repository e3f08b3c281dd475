"""The demo report: one HTML page with a section per system, images beside it."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from .io import write_atomic


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (file name in the report folder, caption)
    table: tuple[list[str], list[list[object]]] | None = None


def write_report(sections: list[Section], folder: str | Path, title: str = "keenvision demo") -> Path:
    folder = Path(folder)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%;margin:4px}"
             "figure{display:inline-block;vertical-align:top;margin:6px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        if section.table:
            headers, rows = section.table
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in headers) + "</tr>")
            for row in rows:
                parts.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
            parts.append("</table>")
        for name, caption in section.images:
            parts.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(caption)}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    path = folder / "report.html"
    write_atomic(path, "\n".join(parts).encode())
    return path
