"""The ray executor (``--executor ray``): the local executor's DAG walk, fingerprints, store and commits,
with the work of each node on a Ray cluster (see ``ray_cluster`` for which one).

Where each kind of node runs:

- sources and views (filters) run on the driver, as in the local executor: a source reads files once,
  and a filter's expression may aggregate over its whole input (``col > col.mean()``), so it is not split;
- row and batch nodes run as Ray Data ``map_batches`` over contiguous row ranges of their stored input,
  each worker reading its range from the store's Parquet as Arrow; CPUs and GPUs per task are the
  operator's ``num_cpus`` and ``num_gpus`` runtime fields where it has them (1 and 0 otherwise);
- exact dedup runs as a key shuffle (``ray_dedup``);
- LLM nodes run on the driver, their requests sharded over one engine per worker, the request cache
  written by the driver alone (``ray_llm``);
- every other global node runs whole on one worker, and the build log says why.

Before a node is sent to the cluster the driver commits the filters pending before it, so every worker
reads stored inputs. Workers write into the node's temporary directory in the store (a path every node
of the cluster must reach); the driver commits it, as the local executor does, only when it is complete:
a failed or interrupted node leaves nothing half-written and every finished node stays cached. The store
is the same as the local executor's, so a build can switch executors and reuse every cached node.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import polars as pl

from dataflow.compiler import CompiledPipeline
from dataflow.errors import DataflowError
from dataflow.executors.local import LocalExecutor, _Pending
from dataflow.executors.ray_cluster import check_shippable, cluster_address, cluster_error, connected, import_ray
from dataflow.executors.ray_dedup import shuffle_dedup
from dataflow.executors.ray_llm import model_specs, sharded_models
from dataflow.executors.ray_tasks import REJECTS_CODEC, NodeJob, StoredInput, merged_metrics, row_ranges
from dataflow.operator import Context, Kind, Operator, normalized_rejects
from dataflow.operators.core.dedup import ExactDedup
from dataflow.progress import Progress
from dataflow.records import NodePlan, NodeStats, node_rows
from dataflow.store import DATA, REJECTS, Store

DRIVER, RANGES, SHUFFLE, WHOLE = "driver", "ranges", "shuffle", "whole"
RANGE_ROWS = 200_000  # the most rows of one range task (more ranges than CPUs when inputs are large)
MAX_RETRIES = 3  # how often Ray runs a task again after its worker died


def placement(op: Operator) -> str:
    """Where a node of this operator runs (see the module docstring)."""
    kind = Kind(op.kind)
    if kind in (Kind.SOURCE, Kind.VIEW) or model_specs(op):
        return DRIVER
    if kind in (Kind.ROW, Kind.BATCH) and op.inputs_count == 1:
        return RANGES
    return SHUFFLE if isinstance(op, ExactDedup) else WHOLE


class RayExecutor(LocalExecutor):
    """Runs the nodes on a Ray cluster (see the module docstring)."""

    def __init__(self, store: Store, progress: Progress):
        super().__init__(store, progress)
        self.address = cluster_address()

    def run(self, compiled: CompiledPipeline, plans: dict[str, NodePlan],
            passes_gates: Callable[[NodeStats], bool] = lambda stats: True) -> dict[str, NodeStats]:
        import_ray()
        to_build = {name: compiled.nodes[name].op for name in compiled.order if not plans[name].cached}
        if not to_build:  # a rebuild with nothing to do contacts no cluster
            return super().run(compiled, plans, passes_gates)
        check_shippable({name: op for name, op in to_build.items() if placement(op) != DRIVER})
        with connected(self.address):
            return super().run(compiled, plans, passes_gates)

    def _build(self, name: str) -> None:
        node, plan = self.compiled.nodes[name], self.plans[name]
        where = placement(node.op)
        if where == DRIVER:
            with sharded_models(model_specs(node.op)):
                super()._build(name)
            return
        self._flush([], None)  # the filters before this node are stored: workers read their inputs
        tmp = self.store.begin(plan.fingerprint)
        started, rows_in = time.perf_counter(), self._rows_in(name)
        self.progress.start(name, rows_in, plan.reason)
        ctx = Context(node=name, workdir=tmp, rows_in=rows_in, report=lambda n: self.progress.advance(name, n))
        self.progress.watch(name, ctx.metrics)
        self.stats[name] = NodeStats(name, type(node.op).__name__, "built", plan.fingerprint, None, 0, 0, 0.0,
                                     plan.reason, {k: str(v) for k, v in node.schema.items()})
        job = NodeJob(node.op, name, str(tmp), tuple(StoredInput.of(self.store, self.plans[i].fingerprint)
                                                     for i in node.inputs), rows_in)
        try:
            runner = {RANGES: self._run_ranges, SHUFFLE: self._run_shuffle, WHOLE: self._run_whole}[where]
            ctx.metrics.update(runner(job))
            self._flush([], _Pending(name, tmp, started, ctx))
        except BaseException as exc:  # an error or Ctrl-C: nothing half-written stays behind
            self.store.discard(tmp)
            error = cluster_error(name, exc)
            if error is None or error is exc:
                raise
            raise error from exc
        self.frames[name] = node_rows(self.store, plan.fingerprint)

    def _ranges(self, job: NodeJob) -> list[tuple[int, int]]:
        import ray

        rows = job.inputs[0].rows()
        return row_ranges(rows, max(int(ray.cluster_resources().get("CPU", 1)), math.ceil(rows / RANGE_ROWS)))

    def _run_ranges(self, job: NodeJob) -> dict:
        """A row or batch node as Ray Data ``map_batches``, a row range per call; the ranges' files are then
        concatenated in input order."""
        import ray

        ranges = self._ranges(job)
        items = ray.data.from_items([{"start": s, "stop": e} for s, e in ranges], override_num_blocks=len(ranges))
        mapped = items.map_batches(job.run_ranges, batch_size=1, num_cpus=getattr(job.op, "num_cpus", 1),
                                   num_gpus=getattr(job.op, "num_gpus", 0))  # Ray Data retries a task whose worker died
        done = []
        for part in mapped.iter_rows():
            if part["error"]:
                raise DataflowError(part["error"])
            done.append(part)
            self.progress.advance(job.node, part["rows"])
        done.sort(key=lambda part: part["start"])
        tmp = Path(job.workdir)
        data = [pl.scan_parquet(job.part(p["start"], "data.parquet")) for p in done]
        sinks = [pl.concat(data).sink_parquet(tmp / DATA, compression="zstd", lazy=True)]
        if rejects := [pl.scan_parquet(job.part(p["start"], "rejects.parquet")) for p in done if p["rejects"]]:
            sinks.append(pl.concat(rejects).sink_parquet(tmp / REJECTS, compression=REJECTS_CODEC, lazy=True))
        pl.collect_all(sinks, engine="streaming")
        return merged_metrics([p["metrics"] for p in done])

    def _run_shuffle(self, job: NodeJob) -> dict:
        """Exact dedup by key shuffle; the driver writes the kept rows in one streaming pass."""
        import ray

        partitions = max(1, int(ray.cluster_resources().get("CPU", 1)))
        rejects = shuffle_dedup(job, self._ranges(job), partitions, MAX_RETRIES)
        tmp = Path(job.workdir)
        kept = job.inputs[0].frame().filter(~pl.col("id").is_in(rejects.get_column("id").implode()))
        pl.collect_all([kept.sink_parquet(tmp / DATA, compression="zstd", lazy=True),
                        normalized_rejects(rejects, job.node).sink_parquet(tmp / REJECTS, compression=REJECTS_CODEC,
                                                                            lazy=True)], engine="streaming")
        self.progress.advance(job.node, job.rows_in or 0)
        return {}

    def _run_whole(self, job: NodeJob) -> dict:
        """A global node whose operator has no distributed plan: run whole on one worker."""
        import ray

        self.progress.log(f"[ray] {job.node}: {type(job.op).__name__} needs its whole input at once and has no "
                          f"distributed plan; running it on one worker")
        task = ray.remote(NodeJob.run_whole).options(num_cpus=getattr(job.op, "num_cpus", 1),
                                                     num_gpus=getattr(job.op, "num_gpus", 0),
                                                     max_retries=MAX_RETRIES).remote(job)
        try:
            _, metrics = ray.get(task)
        except KeyboardInterrupt:
            ray.cancel(task, force=True)
            raise
        self.progress.advance(job.node, job.rows_in or 0)
        return merged_metrics([metrics])
