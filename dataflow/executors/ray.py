"""The ray executor (``--executor ray``): the local executor's DAG walk, fingerprints, store and commits,
with the work of each node on a Ray cluster (see ``ray_cluster`` for which one).

Where each kind of node runs:

- sources, views (filters) and maps by expression run on the driver, as in the local executor: a source
  reads files once, and an expression may aggregate over its whole input (``col > col.mean()``,
  ``col - col.mean()``, ``rank()``), so it is not split;
- row and batch nodes run as Ray Data ``map_batches`` over contiguous row ranges of their stored input,
  each worker reading its range from the store's Parquet as Arrow; CPUs and GPUs per task are the
  operator's ``num_cpus`` and ``num_gpus`` runtime fields where it has them (1 and 0 otherwise);
- exact dedup runs as a key shuffle (``ray_dedup``); MinHash dedup as signatures in ``map_batches``, a band-key
  shuffle, distributed verification and components on the driver (``ray_minhash``);
- LLM nodes run on the driver, their requests sharded over one engine per worker, the request cache
  written by the driver alone (``ray_llm``);
- every other global node runs whole on one worker, and the build log says why (``ONE_WORKER``: sampling and
  splits rank one hashed column, which costs less than the tasks a distributed rank would take).

Before a node is sent to the cluster the driver commits the filters pending before it, so every worker
reads stored inputs. Workers write into the node's temporary directory in the store (a path every node
of the cluster must reach); the driver commits it, as the local executor does, only when it is complete:
a failed or interrupted node leaves nothing half-written and every finished node stays cached. The store
is the same as the local executor's, so a build can switch executors and reuse every cached node.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import polars as pl

from dataflow.compiler import CompiledPipeline
from dataflow.errors import DataflowError
from dataflow.executors.local import LocalExecutor
from dataflow.executors.ray_cluster import check_shippable, cluster_address, cluster_error, connected, import_ray
from dataflow.executors.ray_dedup import shuffle_dedup
from dataflow.executors.ray_llm import model_specs, sharded_models
from dataflow.executors.ray_minhash import minhash_dedup
from dataflow.executors.ray_tasks import NodeJob, StoredInput, merged_metrics, row_ranges
from dataflow.operator import Context, Kind, Operator, normalized_rejects
from dataflow.operators.core.basic import WithColumns
from dataflow.operators.core.combine import Concat
from dataflow.operators.core.dedup import ExactDedup
from dataflow.operators.core.sampling import Sample, SplitPart
from dataflow.outputs import data_sink, rejects_sink
from dataflow.progress import Progress
from dataflow.records import NodePlan, NodeStats
from dataflow.store import DATA, REJECTS, Store

DRIVER, RANGES, SHUFFLE, MINHASH, WHOLE = "driver", "ranges", "shuffle", "minhash", "whole"
RANGE_ROWS = 200_000  # the most rows of one range task (more ranges than CPUs when inputs are large)
MAX_RETRIES = 3  # how often Ray runs a task again after its worker died
# Global operators with a distributed plan that are not core operators, by class (the engine imports no family).
PLANS = {"dataflow.operators.curation.minhash.MinHashDedup": MINHASH}
# Why a global operator without a distributed plan runs on one worker, where there is more to say than that.
ONE_WORKER = {
    Sample: "its rows are those whose seeded hash of the id ranks lowest in the whole input: one hash and one "
            "rank of the id column, which cost less than the tasks a distributed rank would take",
    SplitPart: "each row's part is the rank of its id's seeded hash within its stratum over the whole input: one "
               "hash and one rank of the id column, which cost less than the tasks a distributed rank would take",
    Concat: "it copies its inputs' rows one after another and checks that their ids stay unique: there is "
            "nothing to compute in parallel, and the driver would copy the rows of distributed parts again",
}


def placement(op: Operator) -> str:
    """Where a node of this operator runs (see the module docstring)."""
    kind = Kind(op.kind)
    if kind in (Kind.SOURCE, Kind.VIEW) or isinstance(op, WithColumns) or model_specs(op):
        return DRIVER
    if kind in (Kind.ROW, Kind.BATCH) and op.inputs_count == 1:
        return RANGES
    if isinstance(op, ExactDedup):
        return SHUFFLE
    return PLANS.get(f"{type(op).__module__}.{type(op).__qualname__}", WHOLE)


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
        op = self.compiled.nodes[name].op
        if placement(op) == DRIVER:
            with sharded_models(model_specs(op)):
                super()._build(name)
            return
        self._flush([], None)  # the filters before this node are stored: workers read their inputs
        super()._build(name)

    def _written(self, name: str, ctx: Context) -> list[pl.LazyFrame]:
        """A node placed on the cluster writes its files there (the driver's flush then commits them)."""
        node = self.compiled.nodes[name]
        where = placement(node.op)
        if where == DRIVER:
            return super()._written(name, ctx)
        job = NodeJob(node.op, name, str(ctx.workdir), tuple(StoredInput.of(self.store, self.plans[i].fingerprint)
                                                             for i in node.inputs), ctx.rows_in)
        runner = {RANGES: self._run_ranges, SHUFFLE: self._run_shuffle, MINHASH: self._run_minhash,
                  WHOLE: self._run_whole}[where]
        ctx.metrics.update(runner(job))
        return []

    def _failure(self, name: str, exc: BaseException) -> BaseException | None:
        """A lack of memory on the cluster, with the fix; an operator's error as the local executor gives it."""
        return cluster_error(name, exc) or super()._failure(name, exc)

    def _ranges(self, job: NodeJob) -> list[tuple[int, int]]:
        rows = job.inputs[0].rows()
        return row_ranges(rows, max(self._cpus(), math.ceil(rows / RANGE_ROWS)))

    @staticmethod
    def _cpus() -> int:
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)))

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
        sinks = [data_sink(pl.concat(data), tmp / DATA)]
        if rejects := [pl.scan_parquet(job.part(p["start"], "rejects.parquet")) for p in done if p["rejects"]]:
            sinks.append(rejects_sink(pl.concat(rejects), tmp / REJECTS))
        pl.collect_all(sinks, engine="streaming")
        return merged_metrics([p["metrics"] for p in done])

    def _run_shuffle(self, job: NodeJob) -> dict:
        """Exact dedup by key shuffle; the driver writes the kept rows in one streaming pass."""
        rejects = shuffle_dedup(job, self._ranges(job), self._cpus(), MAX_RETRIES)
        tmp = Path(job.workdir)
        kept = job.inputs[0].frame().filter(~pl.col("id").is_in(rejects.get_column("id").implode()))
        rejects = normalized_rejects(rejects, job.node)
        pl.collect_all([data_sink(kept, tmp / DATA), rejects_sink(rejects, tmp / REJECTS)], engine="streaming")
        self.progress.advance(job.node, job.rows_in or 0)
        return {}

    def _run_minhash(self, job: NodeJob) -> dict:
        """MinHash dedup by its distributed plan (``ray_minhash``)."""
        return minhash_dedup(job, self._ranges(job), self._cpus(), MAX_RETRIES,
                             lambda rows: self.progress.advance(job.node, rows), self.progress.log)

    def _run_whole(self, job: NodeJob) -> dict:
        """A global node whose operator has no distributed plan: run whole on one worker."""
        import ray

        why = ONE_WORKER.get(type(job.op), "it needs its whole input at once and has no distributed plan")
        self.progress.log(f"[ray] {job.node}: {type(job.op).__name__} runs on one worker: {why}")
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
