"""MinHash near-dedup on Ray, with the kept rows, rejects and metrics of ``MinHashDedup`` run in one process.

The operator numbers its documents in id order and finds their clusters in four steps; here each step runs
where its data is, with the operator's own functions (reached through the module of the operator the executor
was given: the engine imports no operator family, see ARCHITECTURE.md):

1. signatures (Ray Data ``map_batches``, a row range per call): each range shingles and signs its documents
   and writes them (row, id, length, score, signature, shingles) into the node's scratch directory, and its
   band keys, one row group per shuffle partition (the map side of the band-key shuffle). Every band-key row
   carries its document's 128-bit text key (the operator's exact-copy key). Each document also sends the hash
   of its id as band -1, so that rows sharing an id meet in one partition, and one with a shingle sends its
   text key as band -2, so that exact copies meet in one partition;
2. band-key shuffle (a task per partition): rows are grouped by (band, key); exact copies have equal signatures,
   so they share every bucket with their representative (the first of their text key in id order), and each
   bucket keeps only the first row of each text key: the representatives, in id order, are paired with the
   next ``window`` ones, as the operator pairs them. On band -2 each representative is paired with its copies
   (marked as copies, not candidates). A row whose id repeats is paired with itself, and the build fails as the
   operator fails on such rows. The pairs are shuffled once more, by their first row, so that a pair found on
   several bands reaches the driver once;
3. verification (tasks over chunks of pairs, each reading the two documents of its pairs from the ranges'
   files): a first wave screens every candidate as the operator does (set sizes, signature estimate); then
   the driver runs the operator's own rounds (its ``_verified_edges``), whose exact Jaccard checks go to a
   wave of tasks per round, so the same pairs are checked and become edges;
4. components and survivors on the driver, over the documents in candidate or copy pairs numbered in id order
   (the order the operator gives them among all documents), copies linked to their representatives; the
   similarities to the survivor are those of the representatives, as the operator measures them; the kept
   rows are written in input order with their clusters, in one streaming pass. The others are clusters of one.
"""

from __future__ import annotations

import math
import os
import secrets
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dataflow.executors.ray_tasks import ROW, NodeJob, write_atomically
from dataflow.operator import Context, normalized_rejects
from dataflow.operators.columns import column_text
from dataflow.operators.text import choose_survivors, components, prepared_texts, starts_of
from dataflow.outputs import data_sink, rejects_sink
from dataflow.store import DATA, REJECTS

PART, BAND, KEY = "__dataflow_part", "__dataflow_band", "__dataflow_key"
A, B, COPY, ESTIMATE, EXACT = "__dataflow_a", "__dataflow_b", "__dataflow_copy", "estimate", "exact"
LENGTH, SCORE, SIGNATURE, SHINGLES = "length", "score", "signature", "shingles"
DOCS, BANDS = "docs.parquet", "bands.parquet"  # a range's files
ID_BAND = -1  # the band of a document's id hash
TEXT_BAND = -2  # the band of a document's text key (exact copies)
HASH_SEED = 0  # fixed, so every range sends an id to the same partition
PAIRS_PER_TASK, MIN_PAIRS_PER_TASK = 200_000, 10_000  # pairs that one verification task measures
REMOVED = "__dataflow_removed"
MEASURED = pl.DataFrame(schema={A: pl.Int64, B: pl.Int64, ESTIMATE: pl.Float64, EXACT: pl.Float64})


def kernel(op: Any) -> ModuleType:
    """The module that defines the operator: its MinHash functions (signatures, band keys, shingle sets)."""
    return sys.modules[type(op).__module__]


def pairs_frame(a: Any, b: Any, copy: bool = False) -> pl.DataFrame:
    """Pairs of rows; ``copy`` marks (representative, exact copy) pairs, which are not candidates."""
    return pl.DataFrame({A: a, B: b}, schema={A: pl.Int64, B: pl.Int64}).with_columns(pl.lit(copy).alias(COPY))


def distinct(*parts: pl.DataFrame) -> pl.DataFrame:
    """The pairs of one partition of a's, each once (a pair of documents equal on several bands comes from as
    many bucket partitions)."""
    return pl.concat(parts).unique()


def write_partitioned(frame: pl.DataFrame, path: Path, partitions: int) -> None:
    """``frame`` as Parquet with row group ``i`` holding the rows of partition ``i``, written atomically."""
    frame = frame.sort(PART, maintain_order=True)
    sizes = np.bincount(frame.get_column(PART).to_numpy(), minlength=partitions)
    table = frame.to_arrow()
    partial = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    with pq.ParquetWriter(partial, table.schema) as writer:
        for offset, size in zip(starts_of(sizes), sizes):
            writer.write_table(table.slice(offset, size), row_group_size=max(int(size), 1))
    os.replace(partial, path)


@dataclass(frozen=True)
class MinHashJob:
    """A MinHash node's work as sent to workers, its band keys shuffled into ``partitions``."""

    job: NodeJob
    partitions: int

    def sign_ranges(self, batch: dict[str, Any]) -> dict[str, list]:
        """Ray Data's ``map_batches`` function: step 1 over each row range of the batch."""
        starts, rows = [int(s) for s in batch["start"]], []
        for start, stop in zip(starts, batch["stop"]):
            rows.append(self.sign(start, int(stop)))
        return {"start": starts, "rows": rows}

    def sign(self, start: int, stop: int) -> int:
        """Write a range's documents and band keys (step 1); its rows."""
        op = self.job.op
        frame = self.job.inputs[0].frame(start, stop, row_index=True)
        table = frame.select(ROW, "id", *op.required_columns()).collect()
        raw = table.select(column_text(op.column, table.schema[op.column])).to_series()
        prepared = prepared_texts(raw, op.shingle)
        shingles, counts = op._shingle_all(prepared)
        sig = op._signatures(shingles, counts)
        scores = op._scores(table)
        offsets = pa.array(np.concatenate(([0], np.cumsum(counts))).astype(np.int64))
        docs = pl.DataFrame({ROW: table.get_column(ROW), "id": table.get_column("id"),
                             LENGTH: raw.fill_null("").str.len_chars().cast(pl.Int64),
                             SCORE: np.zeros(table.height) if scores is None else scores,
                             SIGNATURE: pl.Series(sig, dtype=pl.Array(pl.UInt32, op.num_perm)),
                             SHINGLES: pl.from_arrow(pa.LargeListArray.from_arrays(offsets, pa.array(shingles)))})
        write_atomically(docs, self.job.part(start, DOCS))
        self.write_band_keys(start, table.select(ROW, "id"), prepared, sig, counts)
        return table.height

    def write_band_keys(self, start: int, table: pl.DataFrame, prepared: pl.Series, sig: np.ndarray,
                        counts: np.ndarray) -> None:
        """A range's band-key rows (band, key, row, id, text key), by shuffle partition: its documents' id hashes,
        the text keys and LSH bands of those with a shingle."""
        op = self.job.op
        bands, rows = op.banding()
        usable = np.flatnonzero(counts > 0)
        named = pl.concat([table, kernel(op).text_keys(prepared)], how="horizontal")
        signed = named[usable]
        keys = [named.with_columns(pl.lit(ID_BAND, pl.Int32).alias(BAND), pl.col("id").hash(HASH_SEED).alias(KEY)),
                signed.with_columns(pl.lit(TEXT_BAND, pl.Int32).alias(BAND),
                                    pl.col(kernel(op).TEXT_KEYS[0]).alias(KEY))]
        keys += [signed.with_columns(pl.lit(band, pl.Int32).alias(BAND),
                                     pl.Series(KEY, kernel(op).band_keys(sig, usable, band, rows)))
                 for band in range(bands)]
        keyed = pl.concat(keys).with_columns((pl.col(KEY) % self.partitions).cast(pl.Int32).alias(PART))
        write_partitioned(keyed, self.job.part(start, BANDS), self.partitions)

    def bucket(self, partition: int, files: list[str]) -> list[pl.DataFrame] | pl.DataFrame:
        """Step 2 for one partition: the (row a, row b) pairs its buckets form, a before b in id order, over the
        first row of each text key in a bucket (the representatives); as copies, each representative with the
        rows of its text key; and as (row, row) a row whose id another row has. Split by a's partition for
        ``distinct``."""
        text_keys = kernel(self.job.op).TEXT_KEYS
        keyed = pl.scan_parquet(files).filter(pl.col(PART) == partition).collect().sort("id", ROW)
        ids = keyed.filter(pl.col(BAND) == ID_BAND)
        repeated = ids.filter(pl.col("id").is_duplicated()).get_column(ROW)
        copies = keyed.filter(pl.col(BAND) == TEXT_BAND).select(pl.col(ROW).first().over(text_keys).alias(A), ROW)
        copies = copies.filter(pl.col(A) != pl.col(ROW))
        found = [pairs_frame(repeated, repeated), pairs_frame(copies.get_column(A), copies.get_column(ROW), copy=True)]
        keyed = keyed.filter(pl.col(BAND) >= 0).filter(pl.struct(BAND, KEY, *text_keys).is_first_distinct())
        rows, band_of, key = (keyed.get_column(c).to_numpy() for c in (ROW, BAND, KEY))
        for band in np.unique(band_of):
            members = np.flatnonzero(band_of == band)
            found += [pairs_frame(rows[pair[:, 0]], rows[pair[:, 1]])
                      for pair in kernel(self.job.op).bucket_pairs(key[members], members, self.job.op.window)]
        pairs = pl.concat(found).unique()
        parts = pairs.with_columns((pl.col(A) % self.partitions).alias(PART)).partition_by(
            PART, as_dict=True, include_key=False)
        split = [parts.get((i,), pairs.clear()) for i in range(self.partitions)]
        return split if self.partitions > 1 else split[0]  # Ray returns one object when num_returns is 1

    def measure(self, pairs: pl.DataFrame, files: list[str], screen: bool) -> pl.DataFrame:
        """Step 3 for a chunk of pairs (rows a, b): with ``screen``, the estimates of the pairs that the operator's
        screens keep; else every pair's estimate and, when the operator verifies, its exact Jaccard."""
        op, k = self.job.op, kernel(self.job.op)
        needed = pl.concat([pairs.get_column(A), pairs.get_column(B)]).unique()
        docs = pl.scan_parquet(files).select(ROW, SIGNATURE, SHINGLES).filter(
            pl.col(ROW).cast(pl.Int64).is_in(needed.implode())).collect().sort(ROW)
        rows = docs.get_column(ROW).to_numpy().astype(np.int64)
        local = np.stack([np.searchsorted(rows, pairs.get_column(c).to_numpy()) for c in (A, B)], axis=1)
        sig = docs.get_column(SIGNATURE).to_numpy()
        lists = docs.get_column(SHINGLES)
        sets = k.ShingleSets(lists.to_arrow().flatten().to_numpy(), lists.list.len().to_numpy().astype(np.int64),
                             np.arange(docs.height)) if op.verify else None
        if screen and sets is not None:
            local, estimate = op._worth_verifying(local, sig, sets)
        else:
            estimate = k.estimated_similarity(sig, local)
        exact = sets.jaccard(local) if sets is not None and not screen else np.full(len(local), np.nan)
        return pl.DataFrame({A: rows[local[:, 0]], B: rows[local[:, 1]], ESTIMATE: estimate, EXACT: exact},
                            schema=MEASURED.schema)


@dataclass
class Measured:
    """The values of document pairs (numbered in id order, a < b) that the verification tasks returned."""

    count: int  # documents numbered
    keys: np.ndarray  # a * count + b of each pair, sorted
    estimate: np.ndarray
    exact: np.ndarray

    @classmethod
    def of(cls, count: int, pairs: np.ndarray, estimate: np.ndarray, exact: np.ndarray) -> Measured:
        keys = pairs.min(axis=1) * count + pairs.max(axis=1)
        order = np.argsort(keys, kind="stable")
        return cls(count, keys[order], estimate[order], exact[order])

    @classmethod
    def none(cls, count: int) -> Measured:
        return cls(count, np.empty(0, dtype=np.int64), np.empty(0), np.empty(0))

    def merged(self, other: Measured) -> Measured:
        return Measured.of(self.count, np.concatenate((self.pairs(), other.pairs())),
                           np.concatenate((self.estimate, other.estimate)), np.concatenate((self.exact, other.exact)))

    def pairs(self) -> np.ndarray:
        count = max(self.count, 1)
        return np.stack((self.keys // count, self.keys % count), axis=1).reshape(-1, 2)

    def find(self, pairs: np.ndarray) -> np.ndarray:
        """The position of each pair (in either order) here; ``len(keys)`` for a pair not measured."""
        keys = pairs.min(axis=1, initial=self.count) * self.count + pairs.max(axis=1, initial=0)
        at = np.searchsorted(self.keys, keys)
        found = at < len(self.keys)
        found[found] = self.keys[at[found]] == keys[found]
        return np.where(found, at, len(self.keys))


class Plan:
    """Steps 2-4, run from the driver once step 1 has written the ranges' files."""

    def __init__(self, job: MinHashJob, ranges: list[tuple[int, int]], max_retries: int):
        import ray

        self.job, self.op = job, job.job.op
        self.docs = [str(job.job.part(start, DOCS)) for start, _ in ranges]
        self.bands = [str(job.job.part(start, BANDS)) for start, _ in ranges]
        self.bucket = ray.remote(MinHashJob.bucket).options(num_returns=job.partitions, max_retries=max_retries)
        self.distinct = ray.remote(distinct).options(max_retries=max_retries)
        self.measure = ray.remote(MinHashJob.measure).options(max_retries=max_retries)
        self.seconds: dict[str, float] = {}  # by stage, for the build log
        self.waves = 0  # verification task waves

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started

    def run(self) -> dict[str, Any]:
        """Write the node's rows and rejects into its directory; its metrics, as the operator counts them."""
        import ray

        partitions = self.job.partitions
        with self.stage("band-key shuffle"):
            mapped = [self.bucket.remote(self.job, p, self.bands) for p in range(partitions)]
            mapped = [m if partitions > 1 else [m] for m in mapped]
            found = pl.concat(ray.get([self.distinct.remote(*[m[i] for m in mapped]) for i in range(partitions)]))
            repeated = found.filter(pl.col(A) == pl.col(B))
            if repeated.height:
                self._fail_as_the_operator(repeated.get_column(A))
            docs, candidates, copies = self._numbered(found)
        count = docs.height
        representative = np.arange(count)
        representative[copies[:, 1]] = copies[:, 0]
        with self.stage("verification"):
            pool = self._measured(candidates, screen=True)
            if self.op.verify:
                self.known = Measured.none(count)
                edges, checked = self.op._verified_edges(pool.pairs(), pool.estimate, self, count)
            else:
                self.known = pool
                edges, checked = pool.pairs()[pool.estimate >= self.op.threshold - 1e-9], 0
            cluster = components(np.concatenate((edges, copies)), count)
            scores = docs.get_column(SCORE).to_numpy() if self.op.keep == "highest_score" else None
            survivor = choose_survivors(cluster, self.op.keep, docs.get_column(LENGTH).to_numpy(), scores)
            moved = np.flatnonzero(representative != representative[survivor])  # removed, not an exact copy
            to_survivor = np.stack((representative[moved], representative[survivor[moved]]), axis=1)
            self._learn(to_survivor)
        at = self.known.find(to_survivor)
        estimated, exact = np.ones(count), np.ones(count) if self.op.verify else None
        estimated[moved] = self.known.estimate[at]
        if exact is not None:
            exact[moved] = self.known.exact[at]
        clusters = kernel(self.op).Clusters(cluster, survivor, representative, estimated, exact, len(candidates),
                                            checked, len(edges))
        removed = survivor != np.arange(count)
        with self.stage("write"):
            self._write(docs, clusters, removed)
        return {"candidate_pairs": len(candidates), "verified_pairs": checked, "duplicate_pairs": len(edges),
                "exact_duplicates": clusters.exact_duplicates(),
                "clusters_with_duplicates": int(np.unique(cluster[removed]).size)}

    def jaccard(self, pairs: np.ndarray) -> np.ndarray:
        """What the operator's rounds ask of its shingle sets: the exact Jaccard of each pair (numbers), measured
        on the cluster and kept for the survivors' similarities."""
        self._learn(pairs)
        return self.known.exact[self.known.find(pairs)]

    def _learn(self, pairs: np.ndarray) -> None:
        """Measure the pairs not measured yet (their estimate, and exact Jaccard when the operator verifies)."""
        new = pairs[self.known.find(pairs) == len(self.known.keys)]
        if len(new):
            self.known = self.known.merged(self._measured(new, screen=False))

    def _fail_as_the_operator(self, rows: pl.Series) -> None:
        """Raise the operator's own error for repeated ids, by running it on the rows that share them."""
        frame = self.job.job.inputs[0].frame(row_index=True)
        shared = frame.filter(pl.col(ROW).cast(pl.Int64).is_in(rows.implode())).drop(ROW)
        self.op.apply(shared, ctx=Context(node=self.job.job.node, workdir=Path(self.job.job.workdir)))

    def _numbered(self, found: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
        """The documents in candidate or copy pairs (row, id, length, score) in id order; the unique candidate
        pairs as their numbers (a < b) in the operator's order, sorted by a then b; the (representative, copy)
        pairs as numbers."""
        rows = pl.concat([found.get_column(A), found.get_column(B)]).unique()
        docs = pl.scan_parquet(self.docs).select(pl.col(ROW).cast(pl.Int64), "id", LENGTH, SCORE).filter(
            pl.col(ROW).is_in(rows.implode())).collect().sort("id")
        self.rows = docs.get_column(ROW).to_numpy()
        self.by_row = np.argsort(self.rows)
        pairs = np.sort(np.stack([self._number(found.get_column(c).to_numpy()) for c in (A, B)], axis=1), axis=1)
        copy = found.get_column(COPY).to_numpy()
        keys = np.unique(pairs[~copy, 0] * docs.height + pairs[~copy, 1])
        return docs, np.stack((keys // max(docs.height, 1), keys % max(docs.height, 1)), axis=1), pairs[copy]

    def _number(self, rows: np.ndarray) -> np.ndarray:
        """The numbers of documents given by row."""
        return self.by_row[np.searchsorted(self.rows[self.by_row], rows)]

    def _measured(self, pairs: np.ndarray, screen: bool) -> Measured:
        """Step 3 over ``pairs`` (numbers), in chunks of one task each (one per CPU when there are many)."""
        import ray

        tasks = max(math.ceil(len(pairs) / PAIRS_PER_TASK), min(self.job.partitions, len(pairs) // MIN_PAIRS_PER_TASK))
        chunks = np.array_split(pairs, max(tasks, 1))
        self.waves += 1
        frames = [self.measure.remote(self.job, pl.DataFrame({A: self.rows[c[:, 0]], B: self.rows[c[:, 1]]}),
                                      self.docs, screen) for c in chunks if len(c)]
        done = pl.concat(ray.get(frames)) if frames else MEASURED.clear()
        numbers = np.stack([self._number(done.get_column(c).to_numpy()) for c in (A, B)], axis=1).reshape(-1, 2)
        return Measured.of(len(self.rows), numbers, done.get_column(ESTIMATE).to_numpy(),
                           done.get_column(EXACT).to_numpy())

    def _write(self, docs: pl.DataFrame, clusters: Any, removed: np.ndarray) -> None:
        """The kept rows in input order, with their clusters (a cluster of one for rows in no pair), and the
        rejects in id order, as the operator writes them."""
        ids = docs.get_column("id")
        size = np.bincount(clusters.cluster, minlength=len(removed))[clusters.cluster]
        marked = pl.DataFrame({ROW: self.rows, "cluster_id": ids.gather(clusters.cluster), "cluster_size": size,
                               REMOVED: removed}, schema_overrides={"cluster_size": pl.Int64, ROW: pl.Int64})
        frame = self.job.job.inputs[0].frame(row_index=True).with_columns(pl.col(ROW).cast(pl.Int64))
        kept = frame.join(marked.lazy(), on=ROW, how="left", maintain_order="left").filter(
            ~pl.col(REMOVED).fill_null(False)).with_columns(
            pl.col("cluster_id").fill_null(pl.col("id")), pl.col("cluster_size").fill_null(1)).drop(ROW, REMOVED)
        rejects = normalized_rejects(self.op._rejects(ids, clusters, removed), self.job.job.node)
        workdir = Path(self.job.job.workdir)
        pl.collect_all([data_sink(kept, workdir / DATA), rejects_sink(rejects, workdir / REJECTS)], engine="streaming")


def minhash_dedup(job: NodeJob, ranges: list[tuple[int, int]], partitions: int, max_retries: int,
                  advance: Callable[[int], None], log: Callable[[str], None]) -> dict[str, Any]:
    """Run a MinHash node on the cluster (see the module docstring): its files written, its metrics; the time of
    each stage goes to ``log``."""
    import ray

    plan = MinHashJob(job, partitions)
    started = time.perf_counter()
    items = ray.data.from_items([{"start": s, "stop": e} for s, e in ranges], override_num_blocks=len(ranges))
    for done in items.map_batches(plan.sign_ranges, batch_size=1).iter_rows():  # Ray Data retries a lost task
        advance(done["rows"])
    signed = time.perf_counter() - started
    steps = Plan(plan, ranges, max_retries)
    metrics = steps.run()
    stages = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in {"signatures": signed, **steps.seconds}.items())
    log(f"[ray] {job.node}: MinHash on {len(ranges)} ranges and {partitions} partitions: {stages} "
        f"({steps.waves} verification waves)")
    return metrics
