"""Build progress: a live display on a terminal, plain log lines otherwise, and the summary."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from dataflow.executor import NodeStats


def _rate(rows: int, seconds: float) -> str:
    if seconds <= 0 or not rows:
        return "-"
    rate = rows / seconds
    return f"{rate:,.0f} rows/s" if rate >= 10 else f"{rate:.2g} rows/s"


class Progress:
    """Plain log lines, one when a node starts and one when it ends."""

    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream
        self.done: dict[str, int] = {}
        self.totals: dict[str, int | None] = {}
        self.started: dict[str, float] = {}

    def log(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, name: str, total: int | None, reason: str) -> None:
        self.done[name], self.totals[name], self.started[name] = 0, total, time.perf_counter()
        self.log(f"[build] {name}: building ({reason})")

    def advance(self, name: str, rows: int) -> None:
        self.done[name] = self.done.get(name, 0) + rows

    def cached(self, stats: NodeStats) -> None:
        self.log(f"[cached] {stats.name}: {stats.rows_out:,} rows")

    def finish(self, stats: NodeStats) -> None:
        rejected = f", {stats.rejected:,} rejected" if stats.rejected else ""
        self.log(f"[done] {stats.name}: {stats.rows_out:,} rows{rejected} in {stats.seconds:.2f}s "
                 f"({_rate(stats.rows_in or stats.rows_out, stats.seconds)})")

    def close(self) -> None:
        pass


class RichProgress(Progress):
    """A live bar per node being built: rows done, rows/s and ETA."""

    def __init__(self, stream: TextIO = sys.stderr):
        super().__init__(stream)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bars, TextColumn, \
            TimeElapsedColumn, TimeRemainingColumn

        self.console = Console(file=stream)
        self.bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                         TimeRemainingColumn(), console=self.console, transient=False)
        self.tasks: dict[str, int] = {}
        self.bars.start()

    def log(self, text: str) -> None:
        self.bars.console.print(text, markup=False, highlight=False)

    def start(self, name: str, total: int | None, reason: str) -> None:
        super().start(name, total, reason)
        self.tasks[name] = self.bars.add_task(name, total=total, rate="")

    def advance(self, name: str, rows: int) -> None:
        super().advance(name, rows)
        elapsed = time.perf_counter() - self.started[name]
        self.bars.update(self.tasks[name], advance=rows, rate=_rate(self.done[name], elapsed))

    def finish(self, stats: NodeStats) -> None:
        task = self.tasks.pop(stats.name, None)
        if task is not None:
            self.bars.update(task, completed=stats.rows_in or stats.rows_out,
                             total=stats.rows_in or stats.rows_out,
                             rate=_rate(stats.rows_in or stats.rows_out, stats.seconds))
        super().finish(stats)

    def close(self) -> None:
        self.bars.stop()


def make_progress(stream: TextIO = sys.stderr) -> Progress:
    return RichProgress(stream) if stream.isatty() else Progress(stream)


def summary_rows(stats: list[NodeStats]) -> list[list[str]]:
    rows = []
    for s in stats:
        note = s.reason if s.status != "cached" else ""
        rows.append([s.name, s.status, "" if s.rows_in is None else f"{s.rows_in:,}", f"{s.rows_out:,}",
                     f"{s.rejected:,}", f"{s.seconds:.2f}", note])
    return rows


SUMMARY_HEADER = ["node", "status", "rows in", "rows out", "rejected", "seconds", "why built"]


def _metric(value) -> str:
    return f"{value:,.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def print_summary(stats: list[NodeStats], stream: TextIO = sys.stdout) -> None:
    """The per-node table, then the metrics operators reported, one line per node."""
    _print_table(summary_rows(stats), stream)
    for s in stats:
        if s.metrics:
            shown = ", ".join(f"{k}={_metric(v)}" for k, v in s.metrics.items())
            print(f"  {s.name}: {shown}", file=stream)


def _print_table(rows: list[list[str]], stream: TextIO) -> None:
    if stream.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*SUMMARY_HEADER)
        for row in rows:
            table.add_row(*row)
        Console(file=stream).print(table)
        return
    widths = [max(len(str(r[i])) for r in [SUMMARY_HEADER, *rows]) for i in range(len(SUMMARY_HEADER))]
    for row in [SUMMARY_HEADER, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip(), file=stream)
