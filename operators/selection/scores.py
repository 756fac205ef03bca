"""Scores as selection reads them: one column, or a weighted sum of several."""

from __future__ import annotations

from typing import Any

import polars as pl

from dataflow.dtypes import NUMERIC

SCORE = "selection_score"


def combined_score(score: str | dict[str, float]) -> pl.Expr:
    """One score column, or a weighted sum such as {"relevance": 0.4, "fluency": 0.6}."""
    if isinstance(score, str):
        return pl.col(score).cast(pl.Float64)
    return pl.sum_horizontal(pl.col(c).cast(pl.Float64) * w for c, w in score.items())


def score_columns(score: str | dict[str, float]) -> dict[str, Any]:
    return {score: NUMERIC} if isinstance(score, str) else dict.fromkeys(score, NUMERIC)
