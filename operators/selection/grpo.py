"""GRPO prompt sets: pass rates from K verified samples per prompt, and the learnable band."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.dtypes import NUMERIC
from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.core.basic import Filter


@dataclass(frozen=True)
class PassRate(Operator):
    """One row per prompt from its K verified samples: ``pass_rate`` (share of the scored samples
    with ``reward >= threshold``; null when none is scored), ``n_samples`` (scored samples) and the
    prompt-level columns in ``carry``. A null or NaN reward is unscored: left out of the rate and
    counted in the metric ``unscored``. The row's id is the prompt's id (``group``)."""

    group: str = "prompt_id"
    reward: str = "reward"
    threshold: float = 1.0
    carry: tuple[str, ...] = ("prompt", "answer")
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "pass_rate"

    def required_columns(self) -> dict[str, Any]:
        return {self.group: None, self.reward: NUMERIC, **dict.fromkeys(self.carry)}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({"id": pl.String(), **{c: schema[c] for c in self.carry},
                          "pass_rate": pl.Float64(), "n_samples": pl.UInt32()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        reward = pl.col(self.reward).cast(pl.Float64).fill_nan(None)
        table = frame.collect()
        ctx.record("unscored", table.select(reward.null_count()).item())
        out = (table.group_by(self.group, maintain_order=True)
               .agg(*[pl.col(c).first() for c in self.carry],
                    pass_rate=(reward >= self.threshold).mean().cast(pl.Float64), n_samples=reward.count())
               .rename({self.group: "id"}).with_columns(pl.col("id").cast(pl.String)))
        return Result(out)


def learnable_band(low: float = 0.0, high: float = 1.0) -> Filter:
    """Keeps prompts with ``low < pass_rate < high``: the model sometimes, not always, solves them."""
    return Filter((pl.col("pass_rate") > low) & (pl.col("pass_rate") < high),
                  reason=f"pass rate outside the learnable band ({low:g}, {high:g})", score="pass_rate")
