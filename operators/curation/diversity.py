"""Diversity of a node's texts, recorded as node metrics (the summary, the manifest, ``nodes``).

``distinct_1`` / ``distinct_2``: distinct word unigrams / bigrams over all of them (lower case;
Li et al. 2016). ``mean_embedding_distance``: mean cosine distance (1 - cosine) over all pairs of
a seeded sample of ``sample`` texts, embedded by the packaged all-MiniLM-L6-v2 (see semantic.py).
Rows pass through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.columns import column_text
from dataflow.operators.text import distinct_n


def mean_pairwise_distance(vectors: np.ndarray) -> float | None:
    """Mean of 1 - cosine over all pairs of unit vectors; None for fewer than two."""
    count = len(vectors)
    if count < 2:
        return None
    total = vectors.sum(axis=0)
    similarity_sum = float(total @ total) - float(np.einsum("ij,ij->", vectors, vectors))
    return 1.0 - similarity_sum / (count * (count - 1))


@dataclass(frozen=True)
class DiversityMetrics(Operator):
    """Records ``distinct_1``, ``distinct_2`` and (with ``embeddings=True``) ``mean_embedding_distance``."""

    column: str = "text"
    roles: tuple[str, ...] = ()
    sample: int = 500
    seed: int = 0
    embeddings: bool = True
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "diversity"

    def required_columns(self) -> dict[str, Any]:
        return {self.column: None}

    def check(self) -> list[str]:
        return [] if self.sample >= 2 else [f"sample must be at least 2, not {self.sample}"]

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return schema

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        text = column_text(self.column, table.schema[self.column], self.roles)
        texts = table.sort("id").select(text.alias("t")).to_series()
        texts = texts.filter(texts.fill_null("").str.strip_chars().str.len_bytes() > 0)
        for n in (1, 2):
            value = distinct_n(texts, n)
            ctx.record(f"distinct_{n}", None if value is None else round(value, 4))
        if self.embeddings:
            from dataflow.operators.curation.semantic import embed

            chosen = texts.sample(min(self.sample, len(texts)), seed=self.seed) if len(texts) else texts
            distance = mean_pairwise_distance(embed(chosen.to_list()))
            ctx.record("mean_embedding_distance", None if distance is None else round(distance, 4))
        ctx.progress(table.height)
        return Result(table)
