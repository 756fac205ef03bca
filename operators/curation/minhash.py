"""MinHash near-duplicate removal: exact copies, shingles, one-permutation MinHash, LSH, exact check, clusters.

How it works (every step vectorized over a batch of documents with NumPy/Polars):

1. Text is normalized (NFKC, lower case, whitespace collapsed) and split into tokens: words
   (``shingle="word"``) or characters (``shingle="char"``). Tokens are hashed by Polars.
   Before that, exact copies are collapsed: documents whose normalized texts share a 128-bit key
   (two independent 64-bit hashes: a collision among n texts has odds of about n^2 / 2^129, out of
   the question in practice) form a group, and only its first document in id order, the
   representative, goes through steps 2-5; the others join its cluster in step 6. Documents
   without a shingle are not grouped.
2. Shingles are hashes of ``ngram`` consecutive tokens, computed with ``ngram`` array passes
   over the flat token array of the whole batch. A document with fewer tokens than ``ngram``
   becomes one shingle holding all its tokens ("shingled as a whole"); a document with no token
   (empty, whitespace only, or a null) has no shingle and is never a duplicate.
3. Signatures use one-permutation hashing (Li et al. 2012): each shingle hash picks one of
   ``num_perm`` bins and keeps the minimum there. Empty bins borrow along a fixed route the
   same for every document: two pseudo-random bins first (optimal densification, Shrivastava
   2017), then the next non-empty bin to the right (rotation). Either way the collision
   probability of two signatures at one position is their Jaccard similarity, as with
   ``num_perm`` permutations, at the cost of one hash per shingle.
4. LSH splits signatures into ``bands`` x ``rows``; documents equal on a band are candidates.
   With ``verify=True`` the banding favours recall (a pair exactly at the threshold is caught
   with probability >= 0.97), since false candidates are removed by the check that follows.
5. Candidates are verified by exact Jaccard of their shingle sets (``verify=True``), or by
   the signature estimate (``verify=False``); pairs at or above ``threshold`` are edges. Pairs
   whose set sizes rule the threshold out, or whose estimate is more than three standard
   deviations below it, are not checked; a pair whose documents are already connected by
   checked edges is not checked either (it cannot change a cluster).
6. Connected components of the edges, with every exact copy linked to its representative
   (union-find), are clusters; one survivor per cluster is kept
   by ``keep``: ``"lowest_id"``, ``"longest"`` (most characters) or ``"highest_score"`` (the
   largest ``score_column`` value; ties and nulls fall back to the lowest id).

Documents are processed in the order of their ids, so the result does not depend on the row
order of the input; kept rows leave in their input order. Every kept row gets ``cluster_id``
(lowest id in its cluster) and ``cluster_size``; removed rows go to rejects with the survivor's
id, the estimated similarity (score) and, when verified, the exact Jaccard similarity to it;
their reason is ``exact_duplicate`` when their normalized text equals the survivor's (similarity
and Jaccard 1.0), else ``near_duplicate``. Texts of any length and script are fine; for
scripts written without spaces (Chinese, Japanese) use ``shingle="char"``.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from dataflow.errors import DataflowError
from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.columns import column_text
from dataflow.operators.text import (GOLDEN, KEEP_RULES, choose_survivors, components, mix64, ngram_hashes,
                                     prepared_texts, starts_of, token_hashes)

EMPTY = np.uint32(0xFFFFFFFF)
_ROUTE_ATTEMPTS = 2  # optimal-densification attempts before rotation
_ROW = "__dataflow_row"
_CHECK_ALL_BELOW = 1 << 15  # open pairs left that are checked at once
_SIGMAS = 3  # how far below the threshold a signature estimate may be and still get checked
_BATCH_TOKENS = 4_000_000  # tokens hashed per batch: bounds the temporary arrays (~200 MB)
TEXT_KEYS = ("text_key_1", "text_key_2")
_TEXT_SEEDS = (0x5EED1, 0x5EED2)


def text_keys(texts: pl.Series) -> pl.DataFrame:
    """A 128-bit key of each (prepared) text with its runs of spaces collapsed (prepared English text
    keeps them: its word tokens do not see them): two 64-bit hashes with independent seeds (columns
    ``text_key_1``, ``text_key_2``). Two different texts share a key with odds of about n^2 / 2^129."""
    texts = texts.str.replace_all(" {2,}", " ").str.strip_chars(" ")
    return pl.DataFrame({TEXT_KEYS[0]: texts.hash(seed=_TEXT_SEEDS[0]), TEXT_KEYS[1]: texts.hash(seed=_TEXT_SEEDS[1])})


def exact_copies(texts: pl.Series) -> np.ndarray:
    """For each text, the index of the first text (in order) with the same 128-bit key: itself when
    it is the first."""
    keyed = text_keys(texts).with_row_index(_ROW)
    return keyed.select(pl.col(_ROW).first().over(TEXT_KEYS)).to_series().to_numpy().astype(np.int64)


def without_blank_groups(representative: np.ndarray, blank: np.ndarray) -> np.ndarray:
    """``representative`` with the copies of the ``blank`` representatives (no shingle) made their own
    representatives: documents without shingles are never duplicates."""
    is_blank = np.zeros(len(representative), dtype=bool)
    is_blank[blank] = True
    ungrouped = is_blank[representative]
    return np.where(ungrouped, np.arange(len(representative)), representative)


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
    borrowed, empty = np.empty_like(sig), np.empty(sig.shape, dtype=bool)
    for attempt in range(1, _ROUTE_ATTEMPTS + 1):
        np.equal(sig, EMPTY, out=empty)
        if not empty.any():
            break
        np.take(original, densify_routes(num_perm, attempt, seed), axis=1, out=borrowed)
        np.copyto(sig, borrowed, where=empty)
    empty = (sig == EMPTY) & (counts > 0)[:, None]
    if empty.any():  # then the next non-empty bin to the right (circular), also doc-independent
        docs = np.flatnonzero(empty.any(axis=1))
        small = np.int16 if 3 * num_perm < np.iinfo(np.int16).max else np.int32
        filled = original[docs] != EMPTY
        index = np.where(filled, np.arange(num_perm, dtype=small), small(2 * num_perm))
        index = np.concatenate((index, index + small(num_perm)), axis=1)
        following = np.minimum.accumulate(index[:, ::-1], axis=1)[:, ::-1][:, 1:num_perm + 1] % num_perm
        part = sig[docs]
        np.copyto(part, np.take_along_axis(original[docs], following, axis=1), where=empty[docs])
        sig[docs] = part
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


def recall_bands(threshold: float, num_perm: int, recall: float = 0.97) -> tuple[int, int]:
    """(bands, rows) with the fewest false positives among those that make a pair exactly at the
    threshold a candidate with probability >= ``recall`` (candidates are verified afterwards)."""
    best, best_area = (num_perm, 1), math.inf
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1 - (1 - threshold ** rows) ** bands >= recall:
            area = false_positive_area(threshold, bands, rows)
            if area < best_area:
                best, best_area = (bands, rows), area
    return best


def band_pairs(sig: np.ndarray, docs: np.ndarray, band: int, rows: int, window: int) -> list[np.ndarray]:
    """Pairs of ``docs`` equal on one LSH band: each bucket member with the next ``window`` ones."""
    return bucket_pairs(band_keys(sig, docs, band, rows), docs, window)


def band_keys(sig: np.ndarray, docs: np.ndarray, band: int, rows: int) -> np.ndarray:
    """The LSH bucket of each of ``docs`` on one band: a hash of the band index and the band's values."""
    part = sig[docs, band * rows:(band + 1) * rows].astype(np.uint64)
    key = np.full(len(docs), np.uint64(band), dtype=np.uint64)
    for column in range(rows):
        key = mix64(key * GOLDEN + part[:, column])
    return key


def bucket_pairs(key: np.ndarray, docs: np.ndarray, window: int) -> list[np.ndarray]:
    """Pairs of ``docs`` (in id order) with equal ``key``: each bucket member with the next ``window`` ones."""
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    shared = np.zeros(len(order), dtype=bool)
    shared[1:] = sorted_key[1:] == sorted_key[:-1]
    shared[:-1] |= shared[1:].copy()
    members, member_key = order[shared], sorted_key[shared]  # still grouped by bucket
    new_run = np.ones(len(members), dtype=bool)
    new_run[1:] = member_key[1:] != member_key[:-1]
    run_end = np.append(np.flatnonzero(new_run)[1:], len(members))[np.cumsum(new_run) - 1]
    position = np.arange(len(members))
    found = []
    for offset in range(1, window + 1):
        left = np.flatnonzero(position + offset < run_end)
        if not len(left):
            break
        found.append(np.stack((docs[members[left]], docs[members[left + offset]]), axis=1))
    return found


def candidate_pairs(sig: np.ndarray, usable: np.ndarray, bands: int, rows: int, window: int) -> np.ndarray:
    """Unique (a, b) document pairs, a < b, that share at least one LSH band (bands run on all cores).

    Within a bucket, documents (in id order) are paired with the next ``window`` members, so a
    bucket of thousands of equal documents costs linear, not quadratic, work.
    """
    docs = np.flatnonzero(usable)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        found = [p for part in pool.map(lambda band: band_pairs(sig, docs, band, rows, window), range(bands))
                 for p in part]
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    pairs.sort(axis=1)
    key = np.sort(pairs[:, 0] * np.int64(len(sig)) + pairs[:, 1])
    key = key[np.concatenate(([True], key[1:] != key[:-1]))]
    return np.stack((key // len(sig), key % len(sig)), axis=1)


class ShingleSets:
    """The sorted, unique shingle sets of some documents, for exact Jaccard.

    Shingles are compared on their top 40 bits (a false match inside one pair has odds of about
    size^2 / 2^41); the document index takes the 24 bits above, so one sort orders everything.
    """

    def __init__(self, shingles: np.ndarray, counts: np.ndarray, docs: np.ndarray):
        offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self.local = np.full(len(counts), -1, dtype=np.int64)
        self.local[docs] = np.arange(len(docs))
        sizes = counts[docs]
        first = starts_of(sizes)
        index = np.arange(int(sizes.sum()), dtype=np.int64) + np.repeat(offsets[docs] - first, sizes)
        owner = np.repeat(np.arange(len(docs), dtype=np.uint64), sizes)
        if len(docs) < 1 << 24:
            keys = np.sort((owner << np.uint64(40)) | (shingles[index] >> np.uint64(24)))
            owner, values = keys >> np.uint64(40), keys & np.uint64((1 << 40) - 1)
        else:
            values = shingles[index] >> np.uint64(24)
            order = np.lexsort((values, owner))
            owner, values = owner[order], values[order]
        keep = np.ones(len(values), dtype=bool)
        keep[1:] = (values[1:] != values[:-1]) | (owner[1:] != owner[:-1])
        self.values = values[keep]
        self.sizes = np.bincount(owner[keep].astype(np.int64), minlength=len(docs))
        self.starts = starts_of(self.sizes)

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated shingle sets of ``docs`` and, for each element, its index in ``docs``."""
        docs = self.local[docs]
        sizes = self.sizes[docs]
        total = int(sizes.sum())
        first = starts_of(sizes)
        index = np.arange(total, dtype=np.int64) + np.repeat(self.starts[docs] - first, sizes)
        return self.values[index], np.repeat(np.arange(len(docs), dtype=np.int64), sizes)

    def jaccard(self, pairs: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
        """Exact Jaccard similarity of each (a, b) pair, vectorized over chunks of pairs."""
        result = np.empty(len(pairs), dtype=np.float64)
        for begin in range(0, len(pairs), chunk):
            part = pairs[begin:begin + chunk]
            left, left_pair = self.gather(part[:, 0])
            right, right_pair = self.gather(part[:, 1])
            # key = pair index in the high 24 bits, the 40 shingle bits below: sorted per pair
            right_key = (right_pair.astype(np.uint64) << np.uint64(40)) | right
            left_key = (left_pair.astype(np.uint64) << np.uint64(40)) | left
            # both are sorted runs: a stable sort of their concatenation is a linear merge
            merged = np.concatenate((left_key, right_key))
            merged.sort(kind="stable")
            equal = merged[1:][merged[1:] == merged[:-1]]
            common = np.bincount((equal >> np.uint64(40)).astype(np.int64), minlength=len(part))
            union = self.sizes[self.local[part[:, 0]]] + self.sizes[self.local[part[:, 1]]] - common
            result[begin:begin + len(part)] = common / np.maximum(union, 1)
        return result


def _rank_in_group(group: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements share its group (0 for the first)."""
    order = np.argsort(group, kind="stable")
    ordered = group[order]
    starts = np.ones(len(group), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    position = np.arange(len(group))
    rank = np.empty(len(group), dtype=np.int64)
    rank[order] = position - np.maximum.accumulate(np.where(starts, position, 0))
    return rank


def estimated_similarity(sig: np.ndarray, pairs: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Share of equal signature positions of each pair (the MinHash Jaccard estimate)."""
    result = np.empty(len(pairs), dtype=np.float64)
    for begin in range(0, len(pairs), chunk):
        part = pairs[begin:begin + chunk]
        result[begin:begin + len(part)] = np.count_nonzero(sig[part[:, 0]] == sig[part[:, 1]], axis=1)
    return result / sig.shape[1]


@dataclass
class Clusters:
    """The outcome of near-duplicate search over documents in id order."""

    cluster: np.ndarray  # index of the lowest member of each document's cluster
    survivor: np.ndarray  # index of the kept member of each document's cluster
    representative: np.ndarray  # index of the first document with the same prepared text (exact copies)
    estimated: np.ndarray  # signature similarity of each document to its survivor
    exact: np.ndarray | None  # exact Jaccard similarity to the survivor (when verified)
    candidates: int  # pairs sharing an LSH band
    verified: int  # pairs whose exact Jaccard was computed
    edges: int  # pairs of representatives found at or above the threshold

    def exact_duplicates(self) -> int:
        """Documents collapsed into an earlier exact copy before signatures."""
        return int(np.count_nonzero(self.representative != np.arange(len(self.representative))))

    def reasons(self, index: np.ndarray) -> pl.Series:
        """The reject reason of removed documents: ``exact_duplicate`` when the text equals the survivor's."""
        same = self.representative[index] == self.representative[self.survivor[index]]
        return pl.Series(np.where(same, "exact_duplicate", "near_duplicate"), dtype=pl.String)


@dataclass(frozen=True)
class MinHashDedup(Operator):
    """Removes near-duplicate documents of a text (or conversation) column; see the module doc.

    ``threshold`` is the Jaccard similarity at which two documents are duplicates; ``bands`` x
    ``rows`` (both, with product <= ``num_perm``) override the LSH banding chosen for it.
    ``window`` bounds the pairs formed inside one LSH bucket (each representative is compared with
    the next ``window`` representatives in id order; exact copies are collapsed before LSH and are
    never paired). Metrics: ``candidate_pairs``, ``verified_pairs`` and ``duplicate_pairs`` count
    pairs of representatives, ``exact_duplicates`` the documents collapsed into an earlier exact copy.
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
    kind = Kind.GLOBAL
    version = "2"

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
        if self.verify:  # verified candidates cost little, missed pairs cost recall
            return recall_bands(self.threshold, self.num_perm)
        return optimal_bands(self.threshold, self.num_perm)

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        for name in ("cluster_id", "cluster_size"):
            if name in schema:
                raise ValueError(f"the input already has a '{name}' column; drop or rename it first")
        return pl.Schema({**schema, "cluster_id": pl.String(), "cluster_size": pl.Int64()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        schema = frame.collect_schema()
        table = frame.collect().with_row_index(_ROW).sort("id")  # id order; output in input order
        if table.get_column("id").is_duplicated().any():
            raise DataflowError(f"node '{ctx.node}': the 'id' column has duplicates; MinHash dedup needs "
                                f"unique ids (run an exact dedup on id, or give rows unique ids)")
        raw = table.select(column_text(self.column, schema[self.column])).to_series()
        lengths = raw.fill_null("").str.len_chars().to_numpy().astype(np.int64)
        clusters = self.find(prepared_texts(raw, self.shingle), lengths, self._scores(table))
        ids = table.get_column("id")
        removed = clusters.survivor != np.arange(table.height)
        size = np.bincount(clusters.cluster, minlength=table.height)[clusters.cluster]
        marked = table.with_columns(cluster_id=ids.gather(clusters.cluster), cluster_size=pl.Series(size))
        rejects = self._rejects(ids, clusters, removed)
        ctx.count("candidate_pairs", clusters.candidates)
        ctx.count("verified_pairs", clusters.verified)
        ctx.count("duplicate_pairs", clusters.edges)
        ctx.count("exact_duplicates", clusters.exact_duplicates())
        ctx.count("clusters_with_duplicates", int(np.unique(clusters.cluster[removed]).size))
        ctx.progress(table.height)
        return Result(marked.filter(pl.Series(~removed)).sort(_ROW).drop(_ROW), rejects)

    def _scores(self, table: pl.DataFrame) -> np.ndarray | None:
        if self.keep != "highest_score":
            return None
        return table.get_column(self.score_column).cast(pl.Float64).fill_nan(None).fill_null(-np.inf).to_numpy()

    def _rejects(self, ids: pl.Series, clusters: Clusters, removed: np.ndarray) -> pl.DataFrame:
        index = np.flatnonzero(removed)
        detail = {"duplicate_of": ids.gather(clusters.survivor[index]),
                  "cluster_id": ids.gather(clusters.cluster[index]),
                  "similarity": np.round(clusters.estimated[index], 4)}
        if clusters.exact is not None:
            detail["jaccard"] = np.round(clusters.exact[index], 4)
        as_json = pl.DataFrame(detail).select(pl.struct(pl.all()).struct.json_encode()).to_series()
        return pl.DataFrame({"id": ids.gather(index), "reason": clusters.reasons(index),
                             "score": clusters.estimated[index].astype(np.float64), "detail": as_json})

    def find(self, texts: pl.Series, lengths: np.ndarray, scores: np.ndarray | None = None) -> Clusters:
        """Cluster texts prepared by ``prepared_texts`` (in id order); ``lengths`` and ``scores``
        serve the ``keep`` rule. The engine-independent core, also used by the benchmark."""
        representative = exact_copies(texts)
        reps = np.flatnonzero(representative == np.arange(len(texts)))
        shingles, counts = self._shingle_all(texts.gather(reps))
        representative = without_blank_groups(representative, reps[counts == 0])
        sig = self._signatures(shingles, counts)
        near, candidates, checked, sets = self._near_edges(shingles, counts, sig)
        copies = np.flatnonzero(representative != np.arange(len(texts)))
        edges = np.concatenate((reps[near], np.stack((representative[copies], copies), axis=1)))
        cluster = components(edges, len(texts))
        survivor = choose_survivors(cluster, self.keep, lengths, scores)
        estimated = np.ones(len(texts))
        exact = np.ones(len(texts)) if sets is not None else None
        moved = np.flatnonzero(representative != representative[survivor])  # removed, and not an exact copy
        if len(moved):
            as_rep = np.searchsorted(reps, representative)  # each document's representative among reps
            to_survivor = np.stack((as_rep[moved], as_rep[survivor[moved]]), axis=1)
            estimated[moved] = estimated_similarity(sig, to_survivor)
            if exact is not None:
                exact[moved] = sets.jaccard(to_survivor)
        return Clusters(cluster, survivor, representative, estimated, exact, len(candidates), checked, len(near))

    def _near_edges(self, shingles: np.ndarray, counts: np.ndarray,
                    sig: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, ShingleSets | None]:
        """Near-duplicate edges among documents given by their shingles and signatures; the candidate
        pairs, how many were verified and (when verifying) the shingle sets of those in candidates."""
        bands, rows = self.banding()
        candidates = candidate_pairs(sig, counts > 0, bands, rows, self.window)
        if not self.verify:
            return candidates[estimated_similarity(sig, candidates) >= self.threshold - 1e-9], candidates, 0, None
        involved = np.flatnonzero(np.bincount(candidates.ravel(), minlength=len(counts)))
        sets = ShingleSets(shingles, counts, involved)
        edges, checked = self._verified_edges(*self._worth_verifying(candidates, sig, sets), sets, len(counts))
        return edges, candidates, checked, sets

    def _worth_verifying(self, pairs: np.ndarray, sig: np.ndarray,
                         sets: ShingleSets) -> tuple[np.ndarray, np.ndarray]:
        """Candidates that may reach the threshold, with their estimates: set sizes within its ratio
        (exact, as Jaccard <= min/max size), then a signature estimate within ``_SIGMAS`` standard
        deviations of it (the deviation shrinks with the distinct values a signature holds,
        min(size, num_perm))."""
        sizes = np.sort(sets.sizes[sets.local[pairs]], axis=1)
        plausible = sizes[:, 0] >= self.threshold * sizes[:, 1] - 1e-9
        pairs, sizes = pairs[plausible], sizes[plausible]
        estimate = estimated_similarity(sig, pairs)
        spread = _SIGMAS * np.sqrt(self.threshold * (1 - self.threshold) / np.minimum(sizes[:, 0], self.num_perm))
        likely = estimate >= self.threshold - spread
        return pairs[likely], estimate[likely]

    def _verified_edges(self, pairs: np.ndarray, estimate: np.ndarray, sets: ShingleSets,
                        count: int) -> tuple[np.ndarray, int]:
        """Pairs at or above the threshold by exact Jaccard, enough of them to give the same
        components as checking every pair. In rounds (as Boruvka's algorithm): each cluster found
        so far checks its most similar open pair (all are checked once few are left); a pair whose documents are already
        connected is dropped unchecked, since it cannot change a component."""
        pool = pairs[np.argsort(-estimate, kind="stable")]
        edges, checked, per_cluster = [np.empty((0, 2), dtype=np.int64)], 0, 1
        while len(pool):
            labels = components(np.concatenate(edges), count)
            left, right = labels[pool[:, 0]], labels[pool[:, 1]]
            still_open = left != right
            pool, low = pool[still_open], np.minimum(left, right)[still_open]
            if not len(pool):
                break
            chosen = _rank_in_group(low) < per_cluster
            if len(pool) <= _CHECK_ALL_BELOW:
                chosen[:] = True
            batch, pool = pool[chosen], pool[~chosen]
            checked += len(batch)
            edges.append(batch[sets.jaccard(batch) >= self.threshold - 1e-9])
            per_cluster *= 2
        return np.concatenate(edges), checked

    def _shingle_all(self, texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes of all texts, computed in batches on all cores."""
        sizes = texts.fill_null("").str.len_bytes().to_numpy()
        average = max(float(sizes.mean()) / (6 if self.shingle == "word" else 1), 1.0) if len(sizes) else 1.0
        cores = os.cpu_count() or 1
        step = max(min(int(_BATCH_TOKENS / average), -(-len(texts) // cores)), 1)  # a batch per core at least
        bounds = [(b, min(b + step, len(texts))) for b in range(0, len(texts), step)]

        def batch(bound: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
            tokens, lengths = token_hashes(texts.slice(bound[0], bound[1] - bound[0]), self.shingle, self.seed)
            return ngram_hashes(tokens, lengths, self.ngram, short_as_whole=True)[:2]

        with ThreadPoolExecutor(max_workers=min(len(bounds), cores) or 1) as pool:
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
