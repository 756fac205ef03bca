"""Build progress: a live display on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from dataflow.records import NodeStats


def _rate(rows: int, seconds: float) -> str:
    if seconds <= 0 or not rows:
        return "-"
    rate = rows / seconds
    return f"{rate:,.0f} rows/s" if rate >= 10 else f"{rate:.2g} rows/s"


class Progress:
    """Plain log lines, one when a node starts and one when it ends."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.done: dict[str, int] = {}
        self.started: dict[str, float] = {}

    def log(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, name: str, total: int | None, reason: str) -> None:
        self.done[name], self.started[name] = 0, time.perf_counter()
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

    def __init__(self, stream: TextIO | None = None):
        super().__init__(stream)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bars, TextColumn, \
            TimeElapsedColumn, TimeRemainingColumn

        self.console = Console(file=self.stream)
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


def make_progress(stream: TextIO | None = None) -> Progress:
    stream = stream or sys.stderr
    return RichProgress(stream) if stream.isatty() else Progress(stream)
