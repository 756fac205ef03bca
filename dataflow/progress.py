"""Build progress on every terminal: live bars on a TTY (rows, rows/s, tokens/s, ETA), plain log
lines elsewhere, with a status line for each node still running at least every ``interval`` seconds,
so a CI log shows a long model step moving."""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from dataflow.errors import DataflowError

if TYPE_CHECKING:
    from dataflow.records import NodeStats

STATUS_INTERVAL = 10.0  # seconds between two status lines of a running node, off a terminal
INTERVAL_VARIABLE = "DATAFLOW_STATUS_SECONDS"  # sets that interval
TOKENS = "tokens_out"  # the node metric that counts generated tokens (dataflow.llm.client)


def rate(amount: float, seconds: float, unit: str) -> str:
    """``amount / seconds`` as "1,234 rows/s" (two significant digits below 10); "-" when unknown."""
    if seconds <= 0 or not amount:
        return "-"
    value = amount / seconds
    return f"{value:,.0f} {unit}/s" if value >= 10 else f"{value:.2g} {unit}/s"


def duration(seconds: float) -> str:
    """A duration as "45s", "3m05s" or "2h07m"."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class Running:
    """A node being built: rows done of its input (``total`` when known) and its live metrics."""

    total: int | None
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)  # the node's Context.metrics, read as it runs
    last_line: float = field(default_factory=time.perf_counter)
    ended: float | None = None

    def elapsed(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    def eta(self) -> float | None:
        """Seconds left at the rate so far; None before the first row or without a total."""
        if not self.total or not self.done:
            return None
        return max(self.total - self.done, 0) * self.elapsed() / self.done

    @property
    def speed(self) -> str:
        """"0.49 rows/s", with ", 31 tokens/s" for a node that generates."""
        elapsed = self.elapsed()
        speeds = [rate(self.done, elapsed, "rows")]
        if self.metrics.get(TOKENS):
            speeds.append(rate(self.metrics[TOKENS], elapsed, "tokens"))
        return ", ".join(speeds)

    def status(self) -> str:
        """"24 of 54 rows (44%), 0.49 rows/s, 31 tokens/s, 48s elapsed, eta 1m02s"."""
        rows = f"{self.done:,} of {self.total:,} rows ({self.done / self.total:.0%})" if self.total else \
            f"{self.done:,} rows"
        parts = [rows, self.speed, f"{duration(self.elapsed())} elapsed"]
        eta = self.eta()
        if eta is not None:
            parts.append(f"eta {duration(eta)}")
        return ", ".join(parts)


class Progress:
    """Plain log lines: one when a node starts, one when it ends, and ``[status]`` lines in between
    for each node still running, at least every ``interval`` seconds."""

    def __init__(self, stream: TextIO | None = None, interval: float = STATUS_INTERVAL):
        self.stream = stream or sys.stderr
        self.interval = interval
        self.running: dict[str, Running] = {}
        self._lock = threading.Lock()
        self._ticking = False  # whether the thread that prints status lines runs
        self._closed = threading.Event()

    def log(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def start(self, name: str, total: int | None, reason: str) -> None:
        self.running[name] = Running(total)
        self.log(f"[build] {name}: building ({reason})")
        self._show(name)

    def watch(self, name: str, metrics: dict[str, Any]) -> None:
        """Read a running node's metrics (its Context's), for tokens/s."""
        self.running[name].metrics = metrics

    def advance(self, name: str, rows: int) -> None:
        self.running[name].done += rows

    def cached(self, stats: NodeStats) -> None:
        self.log(f"[cached] {stats.name}: {stats.rows_out:,} rows")

    def finish(self, stats: NodeStats) -> None:
        self.running.pop(stats.name, None)
        rejected = f", {stats.rejected:,} rejected" if stats.rejected else ""
        tokens = stats.metrics.get(TOKENS)
        speed = rate(stats.rows_in or stats.rows_out, stats.seconds, "rows")
        if tokens:
            speed += f", {rate(tokens, stats.seconds, 'tokens')}"
        self.log(f"[done] {stats.name}: {stats.rows_out:,} rows{rejected} in {stats.seconds:.2f}s ({speed})")

    def close(self) -> None:
        self._closed.set()

    def print_status(self, now: float) -> None:
        """A ``[status]`` line for each running node whose last line is ``interval`` old."""
        for name, node in list(self.running.items()):
            if now - node.last_line >= self.interval:
                node.last_line = now
                self.log(f"[status] {name}: {node.status()}")

    def _show(self, name: str) -> None:
        """Start the thread that prints status lines, unless it runs; it ends once no node runs,
        at ``close()``, or when this Progress is gone (a build that raised and was never closed)."""
        with self._lock:
            if self._ticking:
                return
            self._ticking = True
        threading.Thread(target=_tick, args=(weakref.ref(self), self._closed, min(1.0, self.interval / 4)),
                         name="dataflow-status", daemon=True).start()


def _tick(progress_ref: weakref.ref, closed: threading.Event, period: float) -> None:
    while not closed.wait(period):
        progress = progress_ref()
        if progress is None:
            return
        with progress._lock:
            if not progress.running:
                progress._ticking = False
                return
        progress.print_status(time.perf_counter())
        del progress


class RichProgress(Progress):
    """A live bar per node being built: rows done of its input, rows/s, tokens/s for a model step,
    elapsed time and ETA; the log lines print above the bars."""

    def __init__(self, stream: TextIO | None = None):
        super().__init__(stream)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bars, TextColumn, \
            TimeElapsedColumn, TimeRemainingColumn

        self.console = Console(file=self.stream)
        self.bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("{task.fields[node].speed}"), TimeElapsedColumn(), TextColumn("eta"),
                         TimeRemainingColumn(), console=self.console, transient=False)
        self.tasks: dict[str, Any] = {}
        self.bars.start()

    def log(self, text: str) -> None:
        self.bars.console.print(text, markup=False, highlight=False)

    def _show(self, name: str) -> None:
        self.tasks[name] = self.bars.add_task(name, total=self.running[name].total, node=self.running[name])

    def advance(self, name: str, rows: int) -> None:
        super().advance(name, rows)
        self.bars.update(self.tasks[name], advance=rows)

    def finish(self, stats: NodeStats) -> None:
        task, node = self.tasks.pop(stats.name, None), self.running.get(stats.name)
        if task is not None and node is not None:
            node.done, node.ended = stats.rows_in or stats.rows_out, time.perf_counter()
            self.bars.update(task, completed=node.done, total=node.done)
        super().finish(stats)

    def close(self) -> None:
        super().close()
        self.bars.stop()


def make_progress(stream: TextIO | None = None) -> Progress:
    """Bars on a terminal, log lines with status lines elsewhere (a pipe, a file, a CI log), every
    ``$DATAFLOW_STATUS_SECONDS`` seconds (10 by default)."""
    stream = stream or sys.stderr
    if stream.isatty():
        return RichProgress(stream)
    given = os.environ.get(INTERVAL_VARIABLE, "")
    try:
        interval = float(given) if given else STATUS_INTERVAL
    except ValueError:
        interval = -1.0
    if not interval > 0:
        raise DataflowError(f"${INTERVAL_VARIABLE}={given!r}: give the seconds between status lines, a number "
                            f"above 0, e.g. {INTERVAL_VARIABLE}=30")
    return Progress(stream, interval)
