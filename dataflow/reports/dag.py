"""The DAG as an inline SVG: one layer per depth (the longest path from a source), a box per node with
its rows in and out, rejects, time and status, and an edge from each input."""

from __future__ import annotations

from html import escape
from typing import Any

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 190, 50, 24, 34, 8
COLORS = {"built": "#d7e8fb", "view": "#e4f1fd", "cached": "#eeeeee", "skipped": "#fde2c4", "not built": "#fbd3d3"}


def layers(nodes: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Nodes by depth, each layer in build order."""
    depth: dict[str, int] = {}
    for name, node in nodes.items():  # build order: inputs come first
        depth[name] = 1 + max((depth[i] for i in node["inputs"] if i in depth), default=-1)
    found: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in nodes:
        found[depth[name]].append(name)
    return found


def svg(nodes: dict[str, dict[str, Any]], seconds: dict[str, float]) -> str:
    """The DAG drawing; ``seconds``: each node's build time (a cached node's earlier build)."""
    rows = layers(nodes)
    width = MARGIN * 2 + max((len(r) for r in rows), default=1) * (BOX_W + GAP_X) - GAP_X
    height = MARGIN * 2 + len(rows) * (BOX_H + GAP_Y) - GAP_Y
    at = {name: (MARGIN + i * (BOX_W + GAP_X), MARGIN + d * (BOX_H + GAP_Y))
          for d, row in enumerate(rows) for i, name in enumerate(row)}
    edges = [_edge(at[i], at[name]) for name, node in nodes.items() for i in node["inputs"] if i in at]
    boxes = [_box(name, nodes[name], seconds.get(name, 0.0), *at[name]) for name in nodes]
    return (f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="pipeline DAG">'
            f'{"".join(edges)}{"".join(boxes)}</svg>')


def _edge(start: tuple[int, int], end: tuple[int, int]) -> str:
    x1, y1 = start[0] + BOX_W / 2, start[1] + BOX_H
    x2, y2 = end[0] + BOX_W / 2, end[1]
    middle = (y1 + y2) / 2
    return f'<path d="M{x1},{y1} C{x1},{middle} {x2},{middle} {x2},{y2}" fill="none" stroke="#888"/>'


def _box(name: str, node: dict[str, Any], seconds: float, x: int, y: int) -> str:
    status = node["status"]
    rows = "" if node["rows_out"] is None else f'{node["rows_out"]:,} rows'
    if node["rows_in"] is not None and node["rows_out"] is not None:
        rows = f'{node["rows_in"]:,} → {node["rows_out"]:,}'
    rejected = f' · −{node["rejected"]:,}' if node["rejected"] else ""
    detail = f"{rows}{rejected} · {seconds:.1f}s · {status}" if status not in ("skipped", "not built") else status
    dash = ' stroke-dasharray="4 3"' if status in ("skipped", "not built") else ""
    return (f'<g class="node" data-status="{escape(status)}"><title>{escape(name)} ({escape(node["op"])}): '
            f'{escape(detail)}</title>'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{COLORS.get(status, "#fff")}" '
            f'stroke="#555"{dash}/>'
            f'<text x="{x + 8}" y="{y + 19}" font-weight="600">{escape(_fit(name, 22))}'
            f'<tspan font-weight="400" fill="#666"> {escape(_fit(node["op"], 40 - min(len(name), 22)))}</tspan>'
            f'</text><text x="{x + 8}" y="{y + 38}" fill="#333">{escape(_fit(detail, 30))}</text></g>')


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:max(limit - 1, 1)] + "…"
