"""The local executor: runs a compiled, planned DAG in this process.

Each operator returns lazy polars plans; a stored node's plan is sunk to Parquet with the
streaming engine, so row and batch operators run with bounded memory; global operators collect
inside their ``apply``. A view node (a filter) stores only its rejects. Consecutive views form a
chain over one base frame: a single ``__stage`` column holds the index of the first view a row
fails, so every predicate is evaluated once, and each view's rejects are written in the same
``collect_all`` pass as the next stored node: ids and scores per row, the node, reason and detail
once in its meta.json (``reject_constants``). Every node is committed atomically as soon as it is
complete: a crash or Ctrl-C keeps what finished, and a rebuild resumes there. A node with gates is
committed before they are checked; when they fail, everything downstream of it is skipped.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import polars as pl

from dataflow.compiler import CompiledPipeline
from dataflow.errors import DataflowError
from dataflow.operator import SCRATCH, Context, Kind, Result, ViewOperator, normalized_rejects
from dataflow.outputs import data_sink, rejects_sink
from dataflow.progress import Progress
from dataflow.records import NodePlan, NodeStats, cached_stats, node_rows, write_node_meta
from dataflow.store import DATA, REJECTS, Store

STAGE = "__dataflow_stage"


@dataclass
class _Pending:
    """A node whose files are being written in the next flush."""

    name: str
    tmp: Path
    started: float
    ctx: Context
    reject_constants: dict = field(default_factory=dict)  # rejects' columns that hold one value


@dataclass
class _Chain:
    """Consecutive filters over one base frame; the marked frame carries the failing stage."""

    base: pl.LazyFrame
    steps: list[str]  # view node names, in order

    def marked(self, ops: dict[str, ViewOperator]) -> pl.LazyFrame:
        stage = pl.when(~ops[self.steps[0]].keep()).then(pl.lit(0, pl.Int32))
        for i, name in enumerate(self.steps[1:], 1):
            stage = stage.when(~ops[name].keep()).then(pl.lit(i, pl.Int32))
        return self.base.with_columns(stage.otherwise(None).alias(STAGE))


def operator_failure(name: str, exc: BaseException) -> DataflowError | None:
    """A polars or file error an operator raised (collecting inside apply) as one line naming its node; None
    for any other error."""
    if isinstance(exc, (pl.exceptions.PolarsError, OSError)):
        return DataflowError(f"node '{name}' failed: {str(exc).splitlines()[0]}")
    return None


def count_rows(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item() if path.exists() else 0


class LocalExecutor:
    """Runs every node in this process (see the module docstring)."""

    def __init__(self, store: Store, progress: Progress):
        self.store, self.progress = store, progress

    def run(self, compiled: CompiledPipeline, plans: dict[str, NodePlan],
            passes_gates: Callable[[NodeStats], bool] = lambda stats: True) -> dict[str, NodeStats]:
        self.compiled, self.plans = compiled, plans
        self.frames: dict[str, pl.LazyFrame] = {}
        self.stats: dict[str, NodeStats] = {}
        self.pending: list[_Pending] = []
        self.counted: set[str] = set()  # nodes whose row counts are known (cached or committed)
        self.chains: dict[str, tuple[_Chain, pl.LazyFrame]] = {}  # view -> (its chain, marked frame)
        self.stopped: dict[str, str] = {}  # node -> the node upstream of it (or itself) that failed a gate
        try:
            for name in compiled.order:
                failed = next((self.stopped[i] for i in compiled.nodes[name].inputs if i in self.stopped), None)
                if failed:
                    self._skip(name, failed)
                    continue
                if plans[name].cached:
                    self._use_cached(name)
                else:
                    self._build(name)
                if name in compiled.gates:
                    self._flush([], None)  # gates measure the node as stored
                    if not passes_gates(self.stats[name]):
                        self.stopped[name] = name
            self._flush([], None)
        finally:
            for job in self.pending:
                self.store.discard(job.tmp)
        return self.stats

    def _use_cached(self, name: str) -> None:
        fp = self.plans[name].fingerprint
        self.frames[name] = node_rows(self.store, fp)
        self.stats[name] = cached_stats(self.store, name, fp)
        self.counted.add(name)
        self.progress.cached(self.stats[name])

    def _skip(self, name: str, failed: str) -> None:
        node, plan = self.compiled.nodes[name], self.plans[name]
        self.stopped[name] = failed
        self.stats[name] = NodeStats(name, type(node.op).__name__, "skipped", plan.fingerprint, None, None, 0, 0.0,
                                     f"a gate failed on '{failed}'", {k: str(v) for k, v in node.schema.items()})
        self.progress.log(f"[skipped] {name}: a gate failed on '{failed}'")

    def _build(self, name: str) -> None:
        node, plan = self.compiled.nodes[name], self.plans[name]
        tmp = self.store.begin(plan.fingerprint)
        started, rows_in = time.perf_counter(), self._rows_in(name)
        self.progress.start(name, rows_in, plan.reason)
        ctx = Context(node=name, workdir=tmp, rows_in=rows_in, report=lambda n: self.progress.advance(name, n))
        self.progress.watch(name, ctx.metrics)
        is_view = Kind(node.op.kind) is Kind.VIEW
        self.stats[name] = NodeStats(name, type(node.op).__name__, "view" if is_view else "built",
                                     plan.fingerprint, None, 0, 0, 0.0, plan.reason,
                                     {k: str(v) for k, v in node.schema.items()})
        if is_view:  # source, row, batch and global operators are stored; a view joins its parent's chain
            self._add_to_chain(name)
            self.pending.append(_Pending(name, tmp, started, ctx))
            return
        try:
            self._flush(self._written(name, ctx), _Pending(name, tmp, started, ctx))
        except BaseException as exc:  # an error or Ctrl-C: nothing half-written stays behind
            self.store.discard(tmp)
            error = self._failure(name, exc)
            if error is None or error is exc:
                raise
            raise error from exc
        self.frames[name] = node_rows(self.store, plan.fingerprint)

    def _written(self, name: str, ctx: Context) -> list[pl.LazyFrame]:
        """Run a stored node's operator: the sinks that write its files into ``ctx.workdir`` (run by the flush
        that commits it). Another executor runs the node elsewhere, writes the files itself and returns none."""
        node = self.compiled.nodes[name]
        result: Result = node.op.apply(*[self.frames[i] for i in node.inputs], ctx=ctx)
        sinks = []
        if result.rejects is not None:
            rejects = normalized_rejects(result.rejects, name)
            sinks.append(rejects_sink(rejects, ctx.workdir / REJECTS))
        sinks.append(data_sink(result.output.lazy(), ctx.workdir / DATA))
        return sinks

    def _failure(self, name: str, exc: BaseException) -> BaseException | None:
        """The error to raise for a node that failed with ``exc``; None (or ``exc``) to raise ``exc`` as it is."""
        return operator_failure(name, exc)

    def _add_to_chain(self, name: str) -> None:
        """Extend the parent's filter chain (or start one) with this view."""
        parent = self.compiled.nodes[name].inputs[0]
        if parent in self.chains and any(p.name == parent for p in self.pending):
            chain = _Chain(self.chains[parent][0].base, [*self.chains[parent][0].steps, name])
        else:
            chain = _Chain(self.frames[parent], [name])
        marked = chain.marked({n: self.compiled.nodes[n].op for n in chain.steps})
        self.chains[name] = (chain, marked)
        self.frames[name] = marked.filter(pl.col(STAGE).is_null()).drop(STAGE)

    def _view_sinks(self) -> list[pl.LazyFrame]:
        """Each pending view's rejects, from the marked frame of the longest chain holding it."""
        pending = {j.name: j for j in self.pending}
        covered = {n for v in pending for n in self.chains[v][0].steps if n != v}
        sinks, done = [], set()
        for leaf in (v for v in pending if v not in covered):
            chain, marked = self.chains[leaf]
            for stage, view in enumerate(chain.steps):
                if view not in pending or view in done:
                    continue
                op = self.compiled.nodes[view].op
                score = op.reject_score()
                per_row = {} if score is None else {"score": score}
                pending[view].reject_constants = {"node": view, **op.reject_labels(),
                                                  **({} if per_row else {"score": None})}
                rejects = marked.filter(pl.col(STAGE) == stage).select("id", **per_row)
                sinks.append(rejects_sink(rejects, pending[view].tmp / REJECTS))
                done.add(view)
        return sinks

    def _flush(self, sinks: list[pl.LazyFrame], job: _Pending | None) -> None:
        """Write the pending views' rejects and ``sinks`` in one pass, then commit in order."""
        jobs = self.pending + ([job] if job else [])
        if not jobs:
            return
        try:
            pl.collect_all(self._view_sinks() + sinks, engine="streaming")
        except (pl.exceptions.PolarsError, OSError) as exc:
            names = ", ".join(f"'{j.name}'" for j in jobs)
            files = [str(path) for j in jobs if (path := getattr(self.compiled.nodes[j.name].op, "path", None))]
            reading = f" (reading {', '.join(files)})" if files else ""
            raise DataflowError(f"node {names} failed{reading}: {str(exc).splitlines()[0]}") from exc
        for j in jobs:
            self._commit(j)
        self.pending = []

    def _rows_in(self, name: str) -> int | None:
        """Rows entering a node; None for sources, or while an input's count is not known yet."""
        inputs = self.compiled.nodes[name].inputs
        if not inputs or any(i not in self.counted for i in inputs):
            return None
        return sum(self.stats[i].rows_out for i in inputs)

    def _commit(self, job: _Pending) -> None:
        shutil.rmtree(job.tmp / SCRATCH, ignore_errors=True)
        stats = self.stats[job.name]
        stats.rows_in = self._rows_in(job.name)
        stats.rejected = count_rows(job.tmp / REJECTS)
        if stats.status == "view":
            stats.rows_out = (stats.rows_in or 0) - stats.rejected
        else:
            stats.rows_out = count_rows(job.tmp / DATA)
        stats.seconds = time.perf_counter() - job.started
        stats.metrics = dict(job.ctx.metrics)
        self.counted.add(job.name)
        node = self.compiled.nodes[job.name]
        view_of = self.plans[node.inputs[0]].fingerprint if stats.status == "view" else None
        write_node_meta(job.tmp, stats, view_of, job.reject_constants)
        self.store.commit(job.tmp, stats.fingerprint)
        self.progress.finish(stats)
