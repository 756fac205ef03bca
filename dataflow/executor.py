"""The local executor: runs a compiled, planned DAG in this process.

Each operator returns lazy polars plans; a stored node's plan is sunk to Parquet with the
streaming engine, so row and batch operators run with bounded memory. A view node (a filter)
writes only its rejects; to make a chain of filters one pass over the data, those writes wait
and run in the same ``collect_all`` as the next stored node. Every node is committed atomically
as soon as it is complete: a crash or Ctrl-C keeps what finished, and a rebuild resumes there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dataflow.compiler import CompiledPipeline
from dataflow.errors import DataflowError
from dataflow.operator import Context, Result
from dataflow.plan import NodePlan
from dataflow.progress import Progress
from dataflow.store import DATA, REJECTS, Store, normalize_rejects, now


@dataclass
class NodeStats:
    name: str
    op: str
    status: str  # "built", "cached" or "view" (a filter stored as its rejects)
    fingerprint: str
    rows_in: int | None
    rows_out: int
    rejected: int
    seconds: float
    reason: str = ""
    schema: dict[str, str] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # what the operator reported via Context


@dataclass
class _Pending:
    name: str
    tmp: Path
    sinks: list[pl.LazyFrame]
    started: float
    ctx: Context


def count_rows(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item() if path.exists() else 0


class LocalExecutor:
    def __init__(self, store: Store, progress: Progress):
        self.store, self.progress = store, progress

    def run(self, compiled: CompiledPipeline, plans: dict[str, NodePlan]) -> dict[str, NodeStats]:
        self.compiled, self.plans = compiled, plans
        self.frames: dict[str, pl.LazyFrame] = {}
        self.stats: dict[str, NodeStats] = {}
        self.pending: list[_Pending] = []
        try:
            for name in compiled.order:
                if plans[name].cached:
                    self._use_cached(name)
                else:
                    self._build(name)
            self._flush([], None)
        finally:
            for job in self.pending:
                self.store.discard(job.tmp)
        return self.stats

    def _use_cached(self, name: str) -> None:
        fp = self.plans[name].fingerprint
        meta = self.store.meta(fp)
        self.frames[name] = self.store.scan(fp)
        self.stats[name] = NodeStats(name, meta["op"], "cached", fp, meta.get("rows_in"), meta["rows"],
                                     meta["rejected"], 0.0, schema=meta["schema"],
                                     metrics=meta.get("metrics", {}))
        self.progress.cached(self.stats[name])

    def _build(self, name: str) -> None:
        node, plan = self.compiled.nodes[name], self.plans[name]
        rows_in = self._rows_in(name)
        tmp = self.store.begin(plan.fingerprint)
        started = time.perf_counter()
        self.progress.start(name, rows_in, plan.reason)
        ctx = Context(node=name, workdir=tmp, rows_in=rows_in, report=lambda n: self.progress.advance(name, n))
        try:
            result: Result = node.op.apply(*[self.frames[i] for i in node.inputs], ctx=ctx)
        except BaseException:
            self.store.discard(tmp)
            raise
        output = result.output.lazy()
        sinks = []
        if result.rejects is not None or node.op.is_view:
            rejects = result.rejects if result.rejects is not None else pl.LazyFrame(schema={"id": pl.String})
            sinks.append(normalize_rejects(rejects, name).sink_parquet(tmp / REJECTS, lazy=True))
        self.stats[name] = NodeStats(name, type(node.op).__name__, "view" if node.op.is_view else "built",
                                     plan.fingerprint, rows_in, 0, 0, 0.0, plan.reason,
                                     {k: str(v) for k, v in node.schema.items()})
        if node.op.is_view:
            self.frames[name] = output
            self.pending.append(_Pending(name, tmp, sinks, started, ctx))
            return
        sinks.append(output.sink_parquet(tmp / DATA, compression="zstd", lazy=True))
        self._flush(sinks, _Pending(name, tmp, sinks, started, ctx))
        self.frames[name] = self.store.scan(plan.fingerprint)

    def _flush(self, sinks: list[pl.LazyFrame], job: _Pending | None) -> None:
        """Run the waiting view sinks with ``sinks`` in one pass, then commit in order."""
        jobs = self.pending + ([job] if job else [])
        if not jobs:
            return
        try:
            pl.collect_all([s for j in self.pending for s in j.sinks] + sinks, engine="streaming")
        except DataflowError:
            raise
        except pl.exceptions.PolarsError as exc:
            names = ", ".join(f"'{j.name}'" for j in jobs)
            raise DataflowError(f"node {names} failed: {str(exc).splitlines()[0]}") from exc
        for j in jobs:
            self._commit(j)
        self.pending = []

    def _rows_in(self, name: str) -> int | None:
        """Rows entering a node; None for sources, or while an input's count is not known yet."""
        inputs = [self.stats.get(i) for i in self.compiled.nodes[name].inputs]
        if not inputs or any(s is None or s.status == "view" and s.seconds == 0 for s in inputs):
            return None
        return sum(s.rows_out for s in inputs)

    def _commit(self, job: _Pending) -> None:
        stats = self.stats[job.name]
        stats.rows_in = self._rows_in(job.name)
        stats.rejected = count_rows(job.tmp / REJECTS)
        if stats.status == "view":
            stats.rows_out = (stats.rows_in or 0) - stats.rejected
        else:
            stats.rows_out = count_rows(job.tmp / DATA)
        stats.seconds = time.perf_counter() - job.started
        stats.metrics = dict(job.ctx.metrics)
        node = self.compiled.nodes[job.name]
        view_of = self.plans[node.inputs[0]].fingerprint if stats.status == "view" else None
        self.store.commit(job.tmp, stats.fingerprint, {
            "node": job.name, "op": stats.op, "fingerprint": stats.fingerprint, "view_of": view_of,
            "rows_in": stats.rows_in, "rows": stats.rows_out, "rejected": stats.rejected,
            "schema": stats.schema, "metrics": stats.metrics, "seconds": round(stats.seconds, 3),
            "built_at": now(),
        })
        self.progress.finish(stats)
