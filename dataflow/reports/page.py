"""One self-contained HTML page: sections of escaped text, tables and charts, the Vega bundle inlined
(from vl-convert, cached once per version in the user cache), nothing fetched. Every value from the
data is escaped; chart specs travel as JSON in a non-executed script element with ``<`` escaped."""

from __future__ import annotations

import json
import os
from html import escape
from typing import Any, Iterable

from dataflow.paths import user_cache_dir

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#223;color:#fff;padding:12px 24px}header h1{margin:0;font-size:20px}header p{margin:4px 0 0}
nav{padding:6px 24px;background:#eef;position:sticky;top:0;z-index:1}nav a{margin-right:14px}
main{padding:0 24px 40px}section{margin:22px 0}h2{border-bottom:1px solid #ccc;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;background:#fff}th,td{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:18px}
.chart{background:#fff;border:1px solid #e4e4e4;padding:6px;min-width:120px}
details{margin:4px 0;background:#fff;border:1px solid #e4e4e4;padding:4px 8px}summary{cursor:pointer}
.row{border-top:1px dashed #ddd;padding:4px 0}.field{white-space:pre-wrap;word-break:break-word;font-size:12.5px}
.key{color:#555;font-weight:600}.side{display:flex;gap:8px;overflow-x:auto}.side>div{flex:1;min-width:220px;
background:#f6f6f6;padding:6px}.kept{border-left:3px solid #3a3}.removed{border-left:3px solid #c33}
.banner{padding:8px 12px;margin:12px 0;border-radius:4px}.warn{background:#fff3cd}.bad{background:#f8d7da}
.ok{color:#176617}.fail{color:#a11}.muted{color:#777}svg.dag text{font-size:12px}
"""

EMBED = """
(async () => {
  const specs = JSON.parse(document.getElementById("dataflow-charts").textContent);
  const views = await Promise.all(Object.entries(specs).map(([id, spec]) =>
    vegaEmbed("#" + id, spec, {renderer: "svg", actions: false})));
  document.body.dataset.charts = String(views.length);
})().catch(error => { document.body.dataset.charts = "failed"; console.error(error); });
"""


def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script, built by vl-convert (~1.5 s, then kept by vl-convert for
    the process) and kept in the user cache for the next processes when it can be written there."""
    import vl_convert

    path = user_cache_dir() / "report" / f"vega-bundle-{vl_convert.__version__}.js"
    if path.is_file():
        return path.read_text()
    bundle = vl_convert.javascript_bundle()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(bundle)
        tmp.replace(path)
    except OSError:
        pass  # an unwritable cache costs the next process the same 1.5 s, nothing more
    return bundle


def script_json(value: Any) -> str:
    """JSON that cannot end the script element it sits in, nor open a comment or markup there."""
    return json.dumps(value, ensure_ascii=False, default=str).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026")


class Page:
    """Sections of HTML and the chart specs they place."""

    def __init__(self, title: str):
        self.title = title
        self.sections: list[tuple[str, str, str]] = []  # (anchor, heading, html)
        self.charts: dict[str, dict[str, Any]] = {}

    def chart(self, spec: dict[str, Any]) -> str:
        """A placeholder the page renders ``spec`` into."""
        chart_id = f"chart-{len(self.charts) + 1}"
        self.charts[chart_id] = spec
        return f'<div class="chart" id="{chart_id}"></div>'

    def section(self, anchor: str, heading: str, *parts: str) -> None:
        self.sections.append((anchor, heading, "".join(parts)))

    def html(self, header: str) -> str:
        nav = "".join(f'<a href="#{a}">{escape(h)}</a>' for a, h, _ in self.sections)
        body = "".join(f'<section id="{a}"><h2>{escape(h)}</h2>{html}</section>' for a, h, html in self.sections)
        return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(self.title)}</title>'
                f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
                f'<body><header>{header}</header><nav>{nav}</nav><main>{body}</main>'
                f'<script type="application/json" id="dataflow-charts">{script_json(self.charts)}</script>'
                f'<script>{vega_bundle()}</script><script>{EMBED}</script></body></html>')


# -- pieces ---------------------------------------------------------------------------------------------
def text(value: Any) -> str:
    return escape(str(value))


def number(value: Any) -> str:
    """A table cell for a number: thousands separated, floats to four significant digits."""
    if value is None:
        return '<td class="n muted">–</td>'
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{text(value)}</td>"
    shown = f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"
    return f'<td class="n">{shown}</td>'


def table(header: Iterable[str], rows: Iterable[Iterable[str]], css: str = "") -> str:
    """A table; each row's cells are HTML already (``cell`` or ``number``)."""
    head = "".join(f"<th>{text(h)}</th>" for h in header)
    body = "".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def cell(value: Any, css: str = "") -> str:
    return f'<td class="{css}">{text(value)}</td>' if css else f"<td>{text(value)}</td>"


def details(summary: str, body: str) -> str:
    """A block that opens on a click; ``summary`` and ``body`` are HTML already."""
    return f"<details><summary>{summary}</summary>{body}</details>"


def fields(row: dict[str, str]) -> str:
    """A row's fields as key/value lines."""
    return "".join(f'<div class="field"><span class="key">{text(k)}:</span> {text(v)}</div>' for k, v in row.items())


def paragraph(value: str, css: str = "") -> str:
    return f'<p class="{css}">{text(value)}</p>'
