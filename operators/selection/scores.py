"""Scores as selection reads them: one column, or a weighted sum of several. A null or NaN score
(or a weighted sum with one) is *unscored*: never selected as best, never paired, never in a tier."""

from __future__ import annotations

from functools import reduce
from operator import add
from typing import Any

import polars as pl

from dataflow.dtypes import NUMERIC

SCORE = "selection_score"


def combined_score(score: str | dict[str, float]) -> pl.Expr:
    """One score column, or a weighted sum such as {"relevance": 0.4, "fluency": 0.6}; null when
    unscored (a null or NaN in any part)."""
    if isinstance(score, str):
        return pl.col(score).cast(pl.Float64).fill_nan(None)
    return reduce(add, [pl.col(c).cast(pl.Float64) * w for c, w in score.items()]).fill_nan(None)


def score_columns(score: str | dict[str, float]) -> dict[str, Any]:
    return {score: NUMERIC} if isinstance(score, str) else dict.fromkeys(score, NUMERIC)
