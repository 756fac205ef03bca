"""Exact near-duplicate ground truth: every pair of documents with Jaccard >= threshold.

Shingle sets (word 5-grams, see ``minhash.word_shingles``) become rows of a sparse binary matrix.
Candidate pairs come from the prefix filter (Chaudhuri et al. 2006; Xiao et al. 2008, "PPJoin"):
with shingles ordered rarest first, two sets with Jaccard >= t must share a shingle among the
first ``|s| - ceil(t * |s|) + 1`` of each, so the filter misses no pair. Every candidate's
Jaccard is then computed exactly from the matrix rows, and pairs at or above ``t`` are joined
into connected components.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
from scipy.sparse import csr_matrix, triu
from scipy.sparse.csgraph import connected_components

from minhash import word_shingles


def shingle_matrix(texts: list[str]) -> csr_matrix:
    """Documents x shingles, binary; columns numbered by shingle frequency, rarest first."""
    vocabulary: dict[str, int] = {}
    indptr, indices = [0], []
    for text in texts:
        for shingle in word_shingles(text):
            indices.append(vocabulary.setdefault(shingle, len(vocabulary)))
        indptr.append(len(indices))
    indices = np.asarray(indices, dtype=np.int64)
    frequency = np.bincount(indices, minlength=len(vocabulary))
    rank = np.empty(len(vocabulary), dtype=np.int64)
    rank[np.lexsort((np.arange(len(vocabulary)), frequency))] = np.arange(len(vocabulary))
    matrix = csr_matrix((np.ones(len(indices), dtype=np.int32), rank[indices], np.asarray(indptr)),
                        shape=(len(texts), len(vocabulary)))
    matrix.sort_indices()
    return matrix


def prefix_matrix(matrix: csr_matrix, threshold: float) -> csr_matrix:
    """Each row's first ``|s| - ceil(t |s|) + 1`` columns (its rarest shingles)."""
    sizes = np.diff(matrix.indptr)
    keep = np.array([s - math.ceil(threshold * s - 1e-9) + 1 if s else 0 for s in sizes], dtype=np.int64)
    position = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], sizes)
    mask = position < np.repeat(keep, sizes)
    rows = np.repeat(np.arange(matrix.shape[0]), sizes)[mask]
    return csr_matrix((np.ones(mask.sum(), dtype=np.int32), (rows, matrix.indices[mask])), shape=matrix.shape)


def ground_truth(path: Path, threshold: float) -> np.ndarray:
    """Connected component label of every document under 'Jaccard >= threshold'."""
    texts = pl.read_parquet(path).get_column("text").to_list()
    matrix = shingle_matrix(texts)
    prefix = prefix_matrix(matrix, threshold)
    candidates = triu(prefix @ prefix.T, k=1).tocoo()
    a, b = candidates.row.astype(np.int64), candidates.col.astype(np.int64)
    sizes = np.diff(matrix.indptr)
    plausible = np.minimum(sizes[a], sizes[b]) >= threshold * np.maximum(sizes[a], sizes[b]) - 1e-9
    a, b = a[plausible], b[plausible]
    common = np.empty(len(a), dtype=np.int64)
    chunk = 200_000
    for begin in range(0, len(a), chunk):
        left, right = matrix[a[begin:begin + chunk]], matrix[b[begin:begin + chunk]]
        common[begin:begin + chunk] = np.asarray(left.multiply(right).sum(axis=1)).ravel()
    jaccard = common / (sizes[a] + sizes[b] - common)
    edges = jaccard >= threshold - 1e-9
    graph = csr_matrix((np.ones(edges.sum()), (a[edges], b[edges])), shape=(len(texts), len(texts)))
    return connected_components(graph, directed=False)[1]
