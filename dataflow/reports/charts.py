"""The report's charts as Vega-Lite specs, built from aggregates (never from raw rows), so a chart weighs a
few kilobytes whatever the build's size. Written as plain dicts: altair's wrapper classes cost ~30 ms a
chart, and a report with 30 charts is written after every build. The page renders them with the Vega
bundle inlined (``page.py``); the tests compile every spec with vl-convert and draw them in a browser."""

from __future__ import annotations

from typing import Any

from dataflow.reports.distributions import Histogram

SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"  # an identifier only: nothing is fetched
WIDTH, HEIGHT = 300, 130


def _top(title: str, width: int, height: int, **view: Any) -> dict[str, Any]:
    return {"$schema": SCHEMA, "title": title, "width": width, "height": height, **view}


def histogram(h: Histogram, title: str) -> dict[str, Any]:
    """Rows per bin of one column, with each threshold a labelled dashed rule."""
    bars = {"data": {"values": [{"start": s, "end": e, "rows": n} for s, e, n in h.bins]}, "mark": "bar",
            "encoding": {"x": {"field": "start", "type": "quantitative", "bin": "binned", "title": h.column,
                               "axis": {"format": ".3~g", "labelOverlap": True}},
                         "x2": {"field": "end"}, "y": {"field": "rows", "type": "quantitative", "title": "rows"},
                         "tooltip": [{"field": "start", "type": "quantitative", "format": ".3~g"},
                                     {"field": "end", "type": "quantitative", "format": ".3~g"},
                                     {"field": "rows", "type": "quantitative"}]}}
    layers = [bars]
    if h.marks:
        layers.append({"data": {"values": [{"threshold": label, "value": value} for label, value in h.marks]},
                       "mark": {"type": "rule", "strokeWidth": 2, "strokeDash": [4, 2]},
                       "encoding": {"x": {"field": "value", "type": "quantitative"},
                                    "color": {"field": "threshold", "type": "nominal",
                                              "legend": {"orient": "bottom", "columns": 1, "labelLimit": 400}},
                                    "tooltip": [{"field": "threshold", "type": "nominal"},
                                                {"field": "value", "type": "quantitative", "format": ".4~g"}]}})
    return _top(title, WIDTH, HEIGHT, layer=layers)


def bars(rows: list[dict[str, Any]], category: str, value: str, title: str, color: str | None = None) -> dict[str, Any]:
    """Horizontal bars of ``value`` per ``category`` (stacked by ``color`` when given), in the given order."""
    order = list(dict.fromkeys(r[category] for r in rows))
    encoding: dict[str, Any] = {
        "y": {"field": category, "type": "nominal", "sort": order, "title": None, "axis": {"labelLimit": 220}},
        "x": {"field": value, "type": "quantitative", "aggregate": "sum", "title": value},
        "tooltip": [{"field": f, "type": t} for f, t in ((category, "nominal"), (color, "nominal"),
                                                         (value, "quantitative")) if f]}
    if color:
        encoding["color"] = {"field": color, "type": "nominal",
                             "legend": {"orient": "bottom", "columns": 2, "labelLimit": 400}}
    return _top(title, WIDTH + 100, max(16 * len(order), 20), data={"values": rows}, mark="bar", encoding=encoding)
