"""The best of K candidates per prompt. Rows not selected go to rejects with the rule that left
them out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.selection.scores import SCORE, combined_score, score_columns

_RANK = "__dataflow_rank"


@dataclass(frozen=True)
class SelectBest(Operator):
    """Keeps the ``keep`` best candidates of each ``group`` by ``score`` (a column or weights).

    Ties are broken by id; an unscored candidate (null or NaN) is never selected, and its group's
    best scored candidates still are. The combined score is written to ``selection_score``; the
    count of unscored candidates is the metric ``unscored``.
    """

    score: str | dict[str, float] = "score"
    group: str = "prompt_id"
    keep: int = 1
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "best_of_k"

    def check(self) -> list[str]:
        return [] if self.keep >= 1 else [f"keep must be at least 1, not {self.keep}"]

    def required_columns(self) -> dict[str, Any]:
        return {self.group: None, **score_columns(self.score)}

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        best_first = pl.struct(unscored=pl.col(SCORE).is_null(), worse=pl.col(SCORE).neg().fill_null(0), id="id")
        ranked = (frame.with_columns(combined_score(self.score).alias(SCORE))
                  .with_columns(best_first.rank("ordinal").over(self.group).alias(_RANK))
                  .collect())
        ctx.record("unscored", ranked.get_column(SCORE).null_count())
        chosen = (pl.col(_RANK) <= self.keep) & pl.col(SCORE).is_not_null()
        rejects = ranked.filter(~chosen).select(
            "id", score=SCORE,
            reason=pl.when(pl.col(SCORE).is_null()).then(pl.lit("no score")).otherwise(pl.lit("not best of K")),
            detail=pl.struct(group=pl.col(self.group).cast(pl.String), rank=_RANK).struct.json_encode())
        return Result(ranked.filter(chosen).drop(_RANK), rejects)
