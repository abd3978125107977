"""The HTML pieces ``report.html`` and ``compare.html`` are built from: one stylesheet, escaping,
number formatting, tables, inline PNGs, "not run" notes and the page around the sections.

Every text that comes from data goes through :func:`esc` (or :func:`table`, which escapes each
cell); :class:`Raw` marks the only cells that are already HTML (links built here from numbers).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

TEXT_MAX_CHARS = 200

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f4f6f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#8a6d3b;background:#fcf8e3;border:1px solid #faebcc;padding:.5em .8em;border-radius:4px}
.muted{color:#777}img{max-width:100%;display:block;margin:.5em 0}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.85em}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dl.kv dt{font-weight:bold}
.text{max-width:520px;white-space:pre-wrap;word-break:break-word}
"""


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def trunc(s: Any, n: int = TEXT_MAX_CHARS) -> str:
    s = "" if s is None else str(s)
    return s if len(s) <= n else s[:n] + "…"


def num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):,.{digits}f}"
    return str(v)


class Raw(str):
    """A table cell that is already HTML (a link built here from numbers), not escaped."""


def table(headers: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    """An HTML table; every cell is escaped.  Columns in ``numeric`` are right-aligned numbers."""
    numeric = numeric or set()
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            if isinstance(c, Raw):
                cells.append(f'<td class="num">{c}</td>')
            elif i in numeric:
                cells.append(f'<td class="num">{esc(num(c))}</td>')
            else:
                cells.append(f'<td class="text">{esc(c)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv(pairs: list[tuple[str, Any]]) -> str:
    """A definition list of (label, value) pairs, both escaped."""
    return '<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs) + "</dl>"


def img(plot_id: str, alt: str, b64: str) -> str:
    return f'<img id="{esc(plot_id)}" alt="{esc(alt)}" src="data:image/png;base64,{b64}">'


def cluster_link(cluster_id: Any) -> Raw:
    return Raw(f'<a href="#cluster-{int(cluster_id)}">{int(cluster_id)}</a>')


def not_run(stage: str, what: str, anchor: bool = True) -> str:
    ident = f' id="missing-{esc(stage)}"' if anchor else ""
    return f'<p class="note"{ident}>{esc(what)}: stage <b>{esc(stage)}</b> not run (no committed output found).</p>'


def page(title: str, css: str, parts: list[str]) -> str:
    """The self-contained page: inline style, the parts one per line."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{css}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
