"""MinHash near-duplicate removal: shingles, one-permutation MinHash, LSH, exact check, clusters.

How it works (every step vectorized over a batch of documents with NumPy/Polars):

1. Text is normalized (NFKC, lower case, whitespace collapsed) and split into tokens: words
   (``shingle="word"``) or characters (``shingle="char"``). Tokens are hashed by Polars.
2. Shingles are hashes of ``ngram`` consecutive tokens, computed with ``ngram`` array passes
   over the flat token array of the whole batch. A document with fewer tokens than ``ngram``
   becomes one shingle holding all its tokens ("shingled as a whole"); a document with no token
   (empty, whitespace only, or a null) has no shingle and is never a duplicate.
3. Signatures use one-permutation hashing with optimal densification (Shrivastava 2017): each
   shingle hash picks one of ``num_perm`` bins and keeps the minimum there; empty bins borrow
   from other bins along a fixed pseudo-random route. The collision probability of two
   signatures at one position is their Jaccard similarity, as with ``num_perm`` permutations,
   at the cost of one hash per shingle.
4. LSH splits signatures into ``bands`` x ``rows``; documents equal on a band are candidates.
5. Candidates are verified by exact Jaccard of their shingle sets (``verify=True``), or by
   the signature estimate (``verify=False``); pairs at or above ``threshold`` are edges.
6. Connected components of the edges (union-find) are clusters; one survivor per cluster is kept
   by ``keep``: ``"lowest_id"``, ``"longest"`` (most characters) or ``"highest_score"`` (the
   largest ``score_column`` value; ties and nulls fall back to the lowest id).

Documents are processed in the order of their ids, so the result does not depend on the row
order of the input. Every kept row gets ``cluster_id`` (lowest id in its cluster) and
``cluster_size``; removed rows go to rejects (reason ``near_duplicate``) with the survivor's id,
the estimated similarity (score) and, when verified, the exact Jaccard similarity to it.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from dataflow.errors import DataflowError
from dataflow.operator import Context, Operator, Result
from dataflow.operators.dedup import column_text

KEEP_RULES = ("lowest_id", "longest", "highest_score")
EMPTY = np.uint32(0xFFFFFFFF)
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BATCH_TOKENS = 4_000_000  # tokens hashed per batch: bounds the temporary arrays (~200 MB)


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijective, well-spread mix of uint64 values."""
    x = x.copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def normalized_text(text: pl.Expr) -> pl.Expr:
    """NFKC, lower case, runs of whitespace as one space, no leading or trailing space."""
    return (text.str.normalize("NFKC").str.to_lowercase()
            .str.replace_all(r"\s+", " ").str.strip_chars())


def token_hashes(texts: pl.Series, shingle: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint64 hashes of every token of every text, and the token count of each text."""
    texts = texts.fill_null("")
    tokens = texts.str.split(" ") if shingle == "word" else texts.str.split("")
    lengths = tokens.list.len().to_numpy().astype(np.int64)
    lengths[(texts.str.len_bytes() == 0).to_numpy()] = 0  # "".split(" ") is [""]
    flat = tokens.explode(empty_as_null=True).drop_nulls()
    flat = flat.filter(flat.str.len_bytes() > 0) if shingle == "word" else flat
    return flat.hash(seed=seed).to_numpy(), lengths


def shingle_hashes(tokens: np.ndarray, lengths: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the ``ngram``-token windows of each document, and the shingle count of each.

    A document shorter than ``ngram`` tokens gives one shingle of all its tokens.
    """
    counts = np.where(lengths >= ngram, lengths - ngram + 1, np.minimum(lengths, 1))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    total = int(counts.sum())
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    position = np.arange(total, dtype=np.int64) + np.repeat(starts - first, counts)
    span = np.repeat(np.minimum(lengths, ngram), counts)
    combined = np.zeros(total, dtype=np.uint64)
    for k in range(ngram):
        inside = k < span
        step = np.where(inside, tokens[np.minimum(position + k, len(tokens) - 1)] if len(tokens) else 0,
                        np.uint64(0))
        combined = combined * _GOLDEN + step + np.uint64(k + 1) * inside
    return mix64(combined), counts


def densify_routes(num_perm: int, attempt: int, seed: int) -> np.ndarray:
    """The bin that each bin borrows from at a given densification attempt (same for all docs)."""
    bins = np.arange(num_perm, dtype=np.uint64)
    salt = mix64(np.array([attempt, seed], dtype=np.uint64))
    key = bins * np.uint64(0x100000001B3) + salt[0] + salt[1]
    return (mix64(key) % np.uint64(num_perm)).astype(np.int64)


def signatures(shingles: np.ndarray, counts: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """One-permutation MinHash signatures (uint32, docs x num_perm), densified.

    Documents without shingles keep an all-``EMPTY`` row.
    """
    docs = len(counts)
    owner = np.repeat(np.arange(docs, dtype=np.int64), counts)
    h = mix64(shingles ^ np.uint64(seed))
    bins = ((h >> np.uint64(32)) * np.uint64(num_perm)) >> np.uint64(32)
    sig = np.full(docs * num_perm, EMPTY, dtype=np.uint32)
    np.minimum.at(sig, owner * num_perm + bins.astype(np.int64), (h & np.uint64(0xFFFFFFFF)).astype(np.uint32))
    sig = sig.reshape(docs, num_perm)
    original = sig.copy()
    rows, cols = np.nonzero((sig == EMPTY) & (counts > 0)[:, None])
    attempt = 0
    while len(rows):
        attempt += 1
        source = densify_routes(num_perm, attempt, seed)[cols]
        value = original[rows, source]
        found = value != EMPTY
        sig[rows[found], cols[found]] = value[found]
        rows, cols = rows[~found], cols[~found]
    return sig


def false_positive_area(threshold: float, bands: int, rows: int) -> float:
    x = np.linspace(0.0, threshold, 200)
    return float(np.trapezoid(1 - (1 - x ** rows) ** bands, x))


def false_negative_area(threshold: float, bands: int, rows: int) -> float:
    x = np.linspace(threshold, 1.0, 200)
    return float(np.trapezoid((1 - x ** rows) ** bands, x))


def optimal_bands(threshold: float, num_perm: int, false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimizing the weighted false positive and negative areas (as datasketch)."""
    best, best_error = (1, num_perm), math.inf
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            error = ((1 - false_negative_weight) * false_positive_area(threshold, bands, rows)
                     + false_negative_weight * false_negative_area(threshold, bands, rows))
            if error < best_error:
                best, best_error = (bands, rows), error
    return best


def candidate_pairs(sig: np.ndarray, usable: np.ndarray, bands: int, rows: int, window: int) -> np.ndarray:
    """Unique (a, b) document pairs, a < b, that share at least one LSH band.

    Within a bucket, documents (in id order) are paired with the next ``window`` members, so a
    bucket of thousands of equal documents costs linear, not quadratic, work.
    """
    docs = np.flatnonzero(usable)
    found = []
    for band in range(bands):
        part = sig[docs, band * rows:(band + 1) * rows].astype(np.uint64)
        key = np.full(len(docs), np.uint64(band), dtype=np.uint64)
        for column in range(rows):
            key = mix64(key * _GOLDEN + part[:, column])
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        same_as_previous = np.concatenate(([False], sorted_key[1:] == sorted_key[:-1]))
        if not same_as_previous.any():
            continue
        run_end = np.concatenate((np.flatnonzero(~same_as_previous)[1:], [len(order)]))
        run_end = run_end[np.cumsum(~same_as_previous) - 1]
        for offset in range(1, window + 1):
            left = np.flatnonzero(np.arange(len(order)) + offset < run_end)
            if not len(left):
                break
            found.append(np.stack((docs[order[left]], docs[order[left + offset]]), axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    pairs.sort(axis=1)
    return np.unique(pairs, axis=0)


class ShingleSets:
    """The sorted, unique shingle set of every document, for exact Jaccard."""

    def __init__(self, shingles: np.ndarray, counts: np.ndarray):
        owner = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        order = np.lexsort((shingles, owner))
        values, owner = shingles[order], owner[order]
        keep = np.ones(len(values), dtype=bool)
        keep[1:] = (values[1:] != values[:-1]) | (owner[1:] != owner[:-1])
        self.values = values[keep]
        self.sizes = np.bincount(owner[keep], minlength=len(counts))
        self.starts = np.concatenate(([0], np.cumsum(self.sizes)[:-1]))

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated shingle sets of ``docs`` and, for each element, its index in ``docs``."""
        sizes = self.sizes[docs]
        total = int(sizes.sum())
        first = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        index = np.arange(total, dtype=np.int64) + np.repeat(self.starts[docs] - first, sizes)
        return self.values[index], np.repeat(np.arange(len(docs), dtype=np.int64), sizes)

    def jaccard(self, pairs: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
        """Exact Jaccard similarity of each (a, b) pair, vectorized over chunks of pairs."""
        result = np.empty(len(pairs), dtype=np.float64)
        for begin in range(0, len(pairs), chunk):
            part = pairs[begin:begin + chunk]
            left, left_pair = self.gather(part[:, 0])
            right, right_pair = self.gather(part[:, 1])
            # key = pair index in the high 24 bits, shingle's top 40 bits below: sorted per pair
            shift = np.uint64(24)
            right_key = (right_pair.astype(np.uint64) << np.uint64(40)) | (right >> shift)
            left_key = (left_pair.astype(np.uint64) << np.uint64(40)) | (left >> shift)
            at = np.searchsorted(right_key, left_key)
            hit = right_key[np.minimum(at, len(right_key) - 1)] == left_key if len(right_key) else \
                np.zeros(len(left_key), dtype=bool)
            common = np.bincount(left_pair[hit], minlength=len(part))
            union = self.sizes[part[:, 0]] + self.sizes[part[:, 1]] - common
            result[begin:begin + len(part)] = common / np.maximum(union, 1)
        return result


def estimated_similarity(sig: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    return (sig[pairs[:, 0]] == sig[pairs[:, 1]]).mean(axis=1) if len(pairs) else np.empty(0)


def components(pairs: np.ndarray, count: int) -> np.ndarray:
    """Connected component label (the smallest member index) of every document."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(count, count))
    _, labels = connected_components(graph, directed=False)
    smallest = np.full(labels.max() + 1 if count else 0, count, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(count))
    return smallest[labels]


@dataclass
class Clusters:
    """The outcome of near-duplicate search over documents in id order."""

    cluster: np.ndarray  # index of the lowest member of each document's cluster
    survivor: np.ndarray  # index of the kept member of each document's cluster
    estimated: np.ndarray  # signature similarity of each document to its survivor
    exact: np.ndarray | None  # exact Jaccard similarity to the survivor (when verified)
    candidates: int
    edges: int


@dataclass(frozen=True)
class MinHashDedup(Operator):
    """Removes near-duplicate documents of a text (or conversation) column; see the module doc.

    ``threshold`` is the Jaccard similarity at which two documents are duplicates; ``bands`` x
    ``rows`` (both, with product <= ``num_perm``) override the LSH banding chosen for it.
    ``window`` bounds the pairs formed inside one LSH bucket (each member is compared with the
    next ``window`` members in id order).
    """

    column: str = "text"
    shingle: str = "word"
    ngram: int = 5
    num_perm: int = 128
    threshold: float = 0.8
    bands: int | None = None
    rows: int | None = None
    verify: bool = True
    keep: str = "lowest_id"
    score_column: str | None = None
    seed: int = 1
    window: int = 32
    kind = "global"
    version = "1"

    def label(self) -> str:
        return "minhash_dedup"

    def required_columns(self) -> dict[str, Any]:
        columns: dict[str, Any] = {self.column: None}
        if self.keep == "highest_score" and self.score_column:
            from dataflow.dtypes import NUMERIC

            columns[self.score_column] = NUMERIC
        return columns

    def check(self) -> list[str]:
        problems = []
        if self.shingle not in ("word", "char"):
            problems.append(f"shingle must be 'word' or 'char', not {self.shingle!r}")
        if self.ngram < 1:
            problems.append(f"ngram must be at least 1, not {self.ngram}")
        if not 0 < self.threshold <= 1:
            problems.append(f"threshold must be in (0, 1], not {self.threshold}")
        if self.num_perm < 2:
            problems.append(f"num_perm must be at least 2, not {self.num_perm}")
        if (self.bands is None) != (self.rows is None):
            problems.append("give both bands and rows, or neither (then they follow from threshold)")
        elif self.bands is not None and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            problems.append(f"bands x rows ({self.bands} x {self.rows}) must be positive and at most "
                            f"num_perm ({self.num_perm})")
        if self.keep not in KEEP_RULES:
            problems.append(f"keep must be one of {list(KEEP_RULES)}, not {self.keep!r}")
        if self.keep == "highest_score" and not self.score_column:
            problems.append("keep='highest_score' needs score_column= naming a numeric column")
        if self.window < 1:
            problems.append(f"window must be at least 1, not {self.window}")
        return problems

    def banding(self) -> tuple[int, int]:
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        # verified candidates cost little, missed pairs cost recall: favour recall
        return optimal_bands(self.threshold, self.num_perm, 0.8 if self.verify else 0.5)

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        for name in ("cluster_id", "cluster_size"):
            if name in schema:
                raise ValueError(f"the input already has a '{name}' column; drop or rename it first")
        return pl.Schema({**schema, "cluster_id": pl.String(), "cluster_size": pl.Int64()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        schema = frame.collect_schema()
        table = frame.collect().sort("id")
        if table.get_column("id").is_duplicated().any():
            raise DataflowError(f"node '{ctx.node}': the 'id' column has duplicates; MinHash dedup needs "
                                f"unique ids (run an exact dedup on id, or give rows unique ids)")
        texts = table.select(normalized_text(column_text(self.column, schema[self.column]))).to_series()
        clusters = self.find(texts, self._lengths(texts), self._scores(table), ctx)
        ids = table.get_column("id")
        removed = clusters.survivor != np.arange(table.height)
        size = np.bincount(clusters.cluster, minlength=table.height)[clusters.cluster]
        marked = table.with_columns(cluster_id=ids.gather(clusters.cluster), cluster_size=pl.Series(size))
        rejects = self._rejects(ids, clusters, removed)
        ctx.count("candidate_pairs", clusters.candidates)
        ctx.count("duplicate_pairs", clusters.edges)
        ctx.count("clusters_with_duplicates", int(np.unique(clusters.cluster[removed]).size))
        ctx.progress(table.height)
        return Result(marked.filter(pl.Series(~removed)), rejects)

    def _lengths(self, texts: pl.Series) -> np.ndarray:
        return texts.fill_null("").str.len_chars().to_numpy().astype(np.int64)

    def _scores(self, table: pl.DataFrame) -> np.ndarray | None:
        if self.keep != "highest_score":
            return None
        return table.get_column(self.score_column).cast(pl.Float64).fill_nan(None).fill_null(-np.inf).to_numpy()

    def _rejects(self, ids: pl.Series, clusters: Clusters, removed: np.ndarray) -> pl.DataFrame:
        index = np.flatnonzero(removed)
        details = []
        for i in index:
            detail = {"duplicate_of": ids[int(clusters.survivor[i])], "cluster_id": ids[int(clusters.cluster[i])],
                      "similarity": round(float(clusters.estimated[i]), 4)}
            if clusters.exact is not None:
                detail["jaccard"] = round(float(clusters.exact[i]), 4)
            details.append(json.dumps(detail))
        return pl.DataFrame({"id": ids.gather(index), "reason": ["near_duplicate"] * len(index),
                             "score": clusters.estimated[index].astype(np.float64),
                             "detail": pl.Series(details, dtype=pl.String)})

    def find(self, texts: pl.Series, lengths: np.ndarray, scores: np.ndarray | None,
             ctx: Context | None = None) -> Clusters:
        """Cluster normalized texts (in id order); the engine-independent core, used by benchmarks."""
        shingles, counts = self._shingle_all(texts)
        sig = self._signatures(shingles, counts)
        bands, rows = self.banding()
        pairs = candidate_pairs(sig, counts > 0, bands, rows, self.window)
        sets = ShingleSets(shingles, counts) if self.verify else None
        del shingles
        estimate = estimated_similarity(sig, pairs)
        similarity = sets.jaccard(pairs) if sets is not None else estimate
        edges = pairs[similarity >= self.threshold - 1e-9]
        cluster = components(edges, len(texts))
        survivor = self._survivors(cluster, lengths, scores)
        estimated = np.ones(len(texts))
        exact = np.ones(len(texts)) if sets is not None else None
        moved = np.flatnonzero(survivor != np.arange(len(texts)))
        if len(moved):
            to_survivor = np.stack((moved, survivor[moved]), axis=1)
            estimated[moved] = estimated_similarity(sig, to_survivor)
            if exact is not None:
                exact[moved] = sets.jaccard(to_survivor)
        return Clusters(cluster, survivor, estimated, exact, len(pairs), len(edges))

    def _shingle_all(self, texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes of all texts, computed in batches on all cores."""
        sizes = texts.fill_null("").str.len_bytes().to_numpy()
        average = max(float(sizes.mean()) / (6 if self.shingle == "word" else 1), 1.0) if len(sizes) else 1.0
        step = max(int(_BATCH_TOKENS / average), 1)
        bounds = [(b, min(b + step, len(texts))) for b in range(0, len(texts), step)]

        def batch(bound: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
            tokens, lengths = token_hashes(texts.slice(bound[0], bound[1] - bound[0]), self.shingle, self.seed)
            return shingle_hashes(tokens, lengths, self.ngram)

        with ThreadPoolExecutor(max_workers=min(len(bounds), os.cpu_count() or 1) or 1) as pool:
            parts = list(pool.map(batch, bounds))
        if not parts:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _signatures(self, shingles: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Signatures in batches of documents on all cores (NumPy releases the GIL)."""
        if not len(counts):
            return np.empty((0, self.num_perm), dtype=np.uint32)
        offsets = np.concatenate(([0], np.cumsum(counts)))
        step = max(len(counts) // (4 * (os.cpu_count() or 1)), 1024)
        bounds = [(b, min(b + step, len(counts))) for b in range(0, len(counts), step)]

        def batch(bound: tuple[int, int]) -> np.ndarray:
            lo, hi = bound
            return signatures(shingles[offsets[lo]:offsets[hi]], counts[lo:hi], self.num_perm, self.seed)

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return np.concatenate(list(pool.map(batch, bounds)))

    def _survivors(self, cluster: np.ndarray, lengths: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
        """Index of the kept document of each document's cluster, by the ``keep`` rule."""
        count = len(cluster)
        index = np.arange(count)
        if self.keep == "lowest_id":
            return cluster.copy()
        primary = lengths if self.keep == "longest" else scores
        # best first: largest primary value, then lowest index (id order)
        order = np.lexsort((index, -primary.astype(np.float64), cluster))
        first_of_cluster = np.ones(count, dtype=bool)
        first_of_cluster[1:] = cluster[order][1:] != cluster[order][:-1]
        best = np.empty(count, dtype=np.int64)
        best[cluster[order][first_of_cluster]] = order[first_of_cluster]
        return best[cluster]
