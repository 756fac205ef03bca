"""The best of K candidates per prompt. Rows not selected go to rejects with the rule that left
them out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.selection.scores import CUT, SCORE, CutOffCandidates, combined_score, score_columns

_RANK = "__dataflow_rank"


@dataclass(frozen=True)
class SelectBest(CutOffCandidates, Operator):
    """Keeps the ``keep`` best candidates of each ``group`` by ``score`` (a column or weights).

    Ties are broken by id; an unscored candidate (null or NaN) is never selected, nor one cut off
    at ``max_tokens`` (``response_finish_reason`` is ``length`` where the input has it; see
    ``CutOffCandidates``), and its group's best other candidates still are. The combined score is
    written to ``selection_score``; the counts of unscored and cut-off candidates are the metrics
    ``unscored`` and ``truncated``.
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
        return {self.group: None, **score_columns(self.score), **self.finish_reason_columns()}

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        schema = frame.collect_schema()
        unscored = pl.col(SCORE).is_null()
        best_first = pl.struct(unscored=unscored, cut_off=CUT, worse=pl.col(SCORE).neg().fill_null(0), id="id")
        ranked = (frame.with_columns(combined_score(self.score).alias(SCORE), self.cut_off(schema).alias(CUT))
                  .with_columns(best_first.rank("ordinal").over(self.group).alias(_RANK))
                  .collect())
        ctx.record("unscored", ranked.get_column(SCORE).null_count())
        if self.finish_reason_column(schema):
            ctx.record("truncated", ranked.get_column(CUT).sum())
        chosen = (pl.col(_RANK) <= self.keep) & ~unscored & ~pl.col(CUT)
        reason = (pl.when(unscored).then(pl.lit("no score")).when(CUT).then(pl.lit("cut off at max_tokens"))
                  .otherwise(pl.lit("not best of K")))
        rejects = ranked.filter(~chosen).select(
            "id", score=SCORE, reason=reason,
            detail=pl.struct(group=pl.col(self.group).cast(pl.String), rank=_RANK).struct.json_encode())
        return Result(ranked.filter(chosen).drop(_RANK, CUT), rejects)
