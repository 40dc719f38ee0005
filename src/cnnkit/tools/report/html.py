"""The pieces of ``report.html``: sections, tables, inlined figures, and the page around them.

Everything is inlined (figures as base64 PNG, the style sheet in ``<style>``), so the one file opens
offline, can be mailed or attached to a lab report, and never points at a file that moved.
Tables carry ``id`` attributes and plain numbers, so that a script (or a test) reads them back.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass
class Section:
    """One part of the report: a title, its HTML body, and an anchor (``id``) made from the title if none."""

    title: str
    body: str
    id: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.id:
            self.id = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def cell(value: Any, digits: int = 4) -> str:
    """A table cell's text: floats to ``digits`` significant figures, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value)


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], *, id: str = "", numeric_from: int = 1,
          caption: str = "") -> str:
    """An HTML table; columns from ``numeric_from`` on are right-aligned, and every cell keeps its exact
    value in ``data-value`` (floats unrounded) for whoever reads the table back."""
    out = [f'<table id="{esc(id)}">' if id else "<table>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>")
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            cls = ' class="num"' if i >= numeric_from else ""
            data = f' data-value="{esc(v)}"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            tag = "th" if i == 0 else "td"
            cells.append(f"<{tag}{cls}{data}>{esc(cell(v))}</{tag}>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def key_values(pairs: Sequence[tuple[str, Any]], id: str = "") -> str:
    """A two-column table of names and values."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(cell(v))}</td></tr>" for k, v in pairs)
    return (f'<table id="{esc(id)}">' if id else "<table>") + f"<tbody>{rows}</tbody></table>"


def figure(fig, alt: str, caption: str = "", dpi: int = 110) -> str:
    """A matplotlib figure as an inlined PNG ``<figure>`` (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return png(buf.getvalue(), alt, caption)


def png(data: bytes, alt: str, caption: str = "") -> str:
    """PNG bytes as an inlined ``<figure>``."""
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt)}">{cap}</figure>'


def para(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def note(text: str) -> str:
    """A remark the reader should not miss (why a section is short, what was left out)."""
    return f'<p class="note">{esc(text)}</p>'


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#c5cad6;font-size:13px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #dde1e8;padding:8px 32px;font-size:13px;z-index:1}
nav a{margin-right:14px;color:#2857b8;text-decoration:none;white-space:nowrap}
main{max-width:1100px;margin:0 auto;padding:8px 32px 48px}
section{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:6px 22px 18px;margin:18px 0}
h2{font-size:18px;border-bottom:1px solid #eef0f4;padding-bottom:6px}
table{border-collapse:collapse;margin:10px 0;font-size:13px}
th,td{border:1px solid #e3e6ec;padding:3px 8px;text-align:left}
thead th{background:#f0f2f6}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;color:#5b6476;font-size:12px;padding-bottom:4px}
figure{margin:12px 0}figure img{max-width:100%;height:auto}
figcaption{color:#5b6476;font-size:12px}
pre{background:#f4f5f7;padding:10px;overflow:auto;font-size:12px;border-radius:6px}
.note{color:#7a4b00;background:#fff7e6;border-left:3px solid #f0a500;padding:6px 10px}
.ngram{background:rgba(220,60,40,var(--w));border-radius:3px;padding:0 1px}
.ngram.against{background:rgba(40,100,220,var(--w))}
"""


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole report: a header, a table of contents and the sections, in one HTML document."""
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{s.body}'
                   + "".join(note(n) for n in s.notes) + "</section>" for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta name=\"generator\" content=\"cnnkit report\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
            f"<nav>{nav}</nav><main>{body}</main></body></html>\n")


__all__ = ["Section", "cell", "esc", "figure", "key_values", "note", "para", "png", "pre", "render_page", "table"]
