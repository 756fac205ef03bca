"""What the ray executor's workers run: an operator over a row range of a stored node, or over its
whole input, writing Parquet into the node's temporary directory in the store (a path every worker
reaches). Files are written under a temporary name and renamed, so a task that Ray retries after its
worker died leaves no half file behind; results are the files' names and the operator's metrics.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import polars as pl

from dataflow.errors import DataflowError
from dataflow.executors.ray_cluster import cluster_error
from dataflow.operator import SCRATCH, Context, Operator, Result, normalized_rejects
from dataflow.outputs import data_sink, rejects_sink
from dataflow.records import read_node_meta
from dataflow.store import DATA, REJECTS, Store

ROW = "__dataflow_row"  # a row's index in the stored node its rows come from
PARTS = "parts"  # the ranges' files, under the node's scratch directory


@dataclass(frozen=True)
class StoredInput:
    """A stored node's rows as files: the Parquet of the nearest node with data, minus the ids that the
    filters between it and this node rejected (so a range of it is read without scanning what precedes)."""

    data: str
    rejected: tuple[str, ...]

    @classmethod
    def of(cls, store: Store, fingerprint: str) -> StoredInput:
        entry, rejected = store.entry(fingerprint), []
        while view_of := read_node_meta(entry).get("view_of"):
            rejected.append(str(entry / REJECTS))
            entry = store.entry(view_of)
        return cls(str(entry / DATA), tuple(rejected))

    def rows(self) -> int:
        return pl.scan_parquet(self.data).select(pl.len()).collect().item()

    def frame(self, start: int = 0, stop: int | None = None, row_index: bool = False) -> pl.LazyFrame:
        """Rows ``start:stop`` of the data file that the filters kept, with their index there if asked."""
        frame = pl.scan_parquet(self.data)
        if row_index:
            frame = frame.with_row_index(ROW)
        if start or stop is not None:
            frame = frame.slice(start, None if stop is None else stop - start)
        for path in self.rejected:
            ids = pl.read_parquet(path, columns=["id"]).get_column("id")
            frame = frame.filter(~pl.col("id").is_in(ids.implode()))
        return frame


def row_ranges(rows: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``rows`` rows (at least one range, even for no rows)."""
    parts = max(1, min(parts, rows))
    bounds = [rows * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


class WorkerContext(Context):
    """A node's context on a worker: counts and values kept apart, so the driver can add the counts of
    every range and keep the last value of each recorded metric."""

    def __init__(self, node: str, workdir: Path, rows_in: int | None):
        super().__init__(node=node, workdir=workdir, rows_in=rows_in)
        self.counted: dict[str, Any] = {}

    def count(self, metric: str, amount: int | float = 1) -> None:
        self.counted[metric] = self.counted.get(metric, 0) + amount

    def reported(self) -> str:
        return json.dumps({"counts": self.counted, "values": self.metrics})


def merged_metrics(reports: list[str]) -> dict[str, Any]:
    """The metrics of a node from its ranges' reports (in input order)."""
    metrics: dict[str, Any] = {}
    for report in map(json.loads, reports):
        metrics.update(report["values"])
        for metric, amount in report["counts"].items():
            metrics[metric] = metrics.get(metric, 0) + amount
    return metrics


def write_atomically(frame: pl.LazyFrame | pl.DataFrame, path: Path,
                     sink: Callable[[pl.LazyFrame, Path], pl.LazyFrame] = data_sink) -> None:
    """Write ``frame`` to ``path`` by ``sink`` (``data_sink`` or ``rejects_sink``), whole or not at all."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    sink(frame.lazy(), partial).collect(engine="streaming")
    os.replace(partial, path)


def write_result(result: Result, node: str, data: Path, rejects: Path) -> bool:
    """Write an operator's output and rejects; whether it had rejects."""
    write_atomically(result.output, data)
    if result.rejects is None:
        return False
    write_atomically(normalized_rejects(result.rejects, node), rejects, rejects_sink)
    return True


@dataclass(frozen=True)
class NodeJob:
    """A node's work as sent to workers."""

    op: Operator
    node: str
    workdir: str  # the node's temporary directory in the store
    inputs: tuple[StoredInput, ...]
    rows_in: int | None = None

    def context(self, start: int | None = None) -> WorkerContext:
        """The context of the whole node, or of the range at ``start`` (its own scratch directory)."""
        workdir = Path(self.workdir) if start is None else self.part(start, "work")
        workdir.mkdir(parents=True, exist_ok=True)
        return WorkerContext(self.node, workdir, self.rows_in)

    def part(self, start: int, kind: str) -> Path:
        """A range's file (or folder) in the node's scratch directory, removed when the node is committed."""
        folder = Path(self.workdir) / SCRATCH / PARTS
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{start:012d}.{kind}"

    def run_ranges(self, batch: dict[str, Any]) -> dict[str, list]:
        """Ray Data's ``map_batches`` function: the operator over each row range of the batch. An error the
        user can fix comes back as its message (Ray Data passes on a function's exception as text only)."""
        done: dict[str, list] = {"start": [], "rows": [], "rejects": [], "metrics": [], "error": []}
        for start, stop in zip(batch["start"], batch["stop"]):
            start, stop, ctx = int(start), int(stop), self.context(int(start))
            try:
                result = self.op.apply(self.inputs[0].frame(start, stop), ctx=ctx)
                had_rejects = write_result(result, self.node, self.part(start, "data.parquet"),
                                           self.part(start, "rejects.parquet"))
                error = None
            except Exception as exc:
                error = user_error(self.node, exc)
                if not isinstance(error, DataflowError):
                    raise
                had_rejects, error = False, str(error)
            for column, value in zip(done, (start, stop - start, had_rejects, ctx.reported(), error)):
                done[column].append(value)
        return done

    def run_whole(self) -> tuple[bool, str]:
        """The operator over its whole input, written as the node's files; (had rejects, metrics)."""
        ctx, workdir = self.context(), Path(self.workdir)
        try:
            result = self.op.apply(*[i.frame() for i in self.inputs], ctx=ctx)
            return write_result(result, self.node, workdir / DATA, workdir / REJECTS), ctx.reported()
        except Exception as exc:
            raise user_error(self.node, exc) from None


def user_error(node: str, exc: Exception) -> Exception:
    """A worker's failure as an error that reaches the driver whole: a DataflowError with the message the
    local executor would give (Ray cannot send every exception class back), else ``exc`` itself."""
    error = cluster_error(node, exc)
    return exc if error is None else DataflowError(str(error))
