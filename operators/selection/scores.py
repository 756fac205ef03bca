"""Scores as selection reads them: one column, or a weighted sum of several. A null or NaN score
(or a weighted sum with one) is *unscored*: never selected as best, never paired, never in a tier.
A candidate cut off at ``max_tokens`` is never chosen by default (``CutOffCandidates``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from operator import add
from typing import Any

import polars as pl

from dataflow.dtypes import NUMERIC
from dataflow.llm.types import TRUNCATED

SCORE = "selection_score"
CUT = "__dataflow_cut_off"  # a working column: whether a candidate was cut off at max_tokens


def combined_score(score: str | dict[str, float]) -> pl.Expr:
    """One score column, or a weighted sum such as {"relevance": 0.4, "fluency": 0.6}; null when
    unscored (a null or NaN in any part)."""
    if isinstance(score, str):
        return pl.col(score).cast(pl.Float64).fill_nan(None)
    return reduce(add, [pl.col(c).cast(pl.Float64) * w for c, w in score.items()]).fill_nan(None)


def score_columns(score: str | dict[str, float]) -> dict[str, Any]:
    return {score: NUMERIC} if isinstance(score, str) else dict.fromkeys(score, NUMERIC)


@dataclass(frozen=True, kw_only=True)
class CutOffCandidates:
    """The finish-reason fields of a selection step: a candidate cut off at ``max_tokens`` (finish
    reason ``length``, as ``Generate`` and ``BestOfK`` write it) is never picked unless
    ``allow_truncated``. ``finish_reason`` names the column; by default ``default_finish_reason()``
    where the input has it (without one, no candidate counts as cut off)."""

    finish_reason: str | None = None
    allow_truncated: bool = False

    def default_finish_reason(self) -> str:
        return "response_finish_reason"

    def finish_reason_columns(self) -> dict[str, Any]:
        """The finish reason column when it is named, as a required input column."""
        return {self.finish_reason: str} if self.finish_reason and not self.allow_truncated else {}

    def finish_reason_column(self, schema: pl.Schema) -> str | None:
        """The column the step reads finish reasons from, or None."""
        if self.allow_truncated:
            return None
        if self.finish_reason:
            return self.finish_reason
        return self.default_finish_reason() if self.default_finish_reason() in schema else None

    def cut_off(self, schema: pl.Schema) -> pl.Expr:
        """True for a candidate cut off at ``max_tokens``."""
        column = self.finish_reason_column(schema)
        return pl.lit(False) if column is None else pl.col(column).eq(TRUNCATED).fill_null(False)
