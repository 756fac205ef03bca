"""Exact dedup on Ray, by key shuffle: each row range computes its rows' normalized keys and sends each
key to the partition its hash picks; each partition finds, per key, the first row in input order, and
returns the others as duplicates of it. The survivors and rejects are those of ``ExactDedup`` run in one
process: the first row of each group in input order survives.
"""

from __future__ import annotations

import polars as pl

from dataflow.executors.ray_tasks import ROW, NodeJob
from dataflow.operators.core.dedup import duplicate_detail

KEY, SURVIVOR = "__dataflow_key", "__dataflow_survivor"
HASH_SEED = 0  # fixed, so every worker sends a key to the same partition


def keyed_partitions(job: NodeJob, start: int, stop: int, partitions: int) -> list[pl.DataFrame]:
    """A range's (row, id, key) rows, split by the hash of the key (the map side of the shuffle)."""
    frame = job.inputs[0].frame(start, stop, row_index=True)
    key = job.op.key(frame.collect_schema())
    keyed = frame.select(ROW, "id", key.alias(KEY)).collect()
    bucket = keyed.get_column(KEY).hash(HASH_SEED) % partitions
    parts = [keyed.filter(bucket == i) for i in range(partitions)]
    return parts if partitions > 1 else parts[0]  # Ray returns one object when num_returns is 1


def duplicates(*parts: pl.DataFrame) -> pl.DataFrame:
    """(row, id, survivor id) of every row whose key an earlier row has (the reduce side)."""
    keyed = pl.concat(parts).sort(ROW)
    marked = keyed.with_columns(pl.col("id").first().over(KEY).alias(SURVIVOR))
    return marked.filter(pl.col("id") != pl.col(SURVIVOR)).select(ROW, "id", SURVIVOR)


def shuffle_dedup(job: NodeJob, ranges: list[tuple[int, int]], partitions: int, max_retries: int) -> pl.DataFrame:
    """The node's rejects (id, reason, detail) in input order, computed on the cluster."""
    import ray

    mapper = ray.remote(keyed_partitions).options(num_returns=partitions, max_retries=max_retries)
    reducer = ray.remote(duplicates).options(max_retries=max_retries)
    mapped = [mapper.remote(job, start, stop, partitions) for start, stop in ranges]
    mapped = [m if partitions > 1 else [m] for m in mapped]
    reduced = ray.get([reducer.remote(*[m[i] for m in mapped]) for i in range(partitions)])
    found = pl.concat(reduced).sort(ROW)
    return found.select("id", reason=pl.lit("duplicate"), detail=duplicate_detail(pl.col(SURVIVOR)))
