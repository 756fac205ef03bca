"""The build summary: a table of the nodes (status, rows in and out, rejected, time, why built),
then the metrics each operator reported, one line per node (a cached node's from the build that made
it), then every gate condition checked, then a warning for each output that is nearly empty."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from dataflow.records import NodeStats, manifest_gates, manifest_stats, output_warnings


def render(manifest: dict[str, Any], stream: TextIO | None = None) -> None:
    """Print the summary of the build a manifest records: the node table, the metrics the
    operators reported, one line per node, the gate conditions, one line each, and the warnings
    about its outputs (one that is nearly empty)."""
    stream = stream or sys.stdout
    stats = manifest_stats(manifest)
    _print_table(_rows(stats), stream)
    for s in stats:
        if s.metrics:
            shown = ", ".join(f"{k}={_metric(v)}" for k, v in s.metrics.items())
            when = " (cached: as the build that made it recorded)" if s.status == "cached" else ""
            print(f"  {s.name}{when}: {shown}", file=stream)
    for r in manifest_gates(manifest):
        verdict = "passed" if r.passed else "warning" if r.warn else "FAILED"
        print(f"  gate on {r.node}: {verdict}: {r.message}", file=stream)
    for warning in output_warnings(manifest):
        print(f"  warning: {warning}", file=stream)


def _rows(stats: list[NodeStats]) -> list[list[str]]:
    rows = []
    for s in stats:
        note = s.reason if s.status != "cached" else ""
        rows.append([s.name, s.status, "" if s.rows_in is None else f"{s.rows_in:,}",
                     "" if s.rows_out is None else f"{s.rows_out:,}",
                     f"{s.rejected:,}", f"{s.seconds:.2f}", note])
    return rows


HEADER = ["node", "status", "rows in", "rows out", "rejected", "seconds", "why built"]


def _metric(value) -> str:
    return f"{value:,.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def _print_table(rows: list[list[str]], stream: TextIO) -> None:
    if stream.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*HEADER)
        for row in rows:
            table.add_row(*row)
        Console(file=stream).print(table)
        return
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for row in [HEADER, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip(), file=stream)
