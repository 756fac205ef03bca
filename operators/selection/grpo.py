"""GRPO prompt sets: pass rates from K verified samples per prompt, and the learnable band."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.dtypes import NUMERIC
from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.core.basic import Filter
from dataflow.operators.selection.scores import CutOffCandidates


@dataclass(frozen=True)
class PassRate(CutOffCandidates, Operator):
    """One row per prompt from its K verified samples: ``pass_rate`` (share of the scored samples
    with ``reward >= threshold``; null when none is scored), ``n_samples`` (those samples) and the
    prompt-level columns in ``carry``. A null or NaN reward is unscored: left out of the rate and
    counted in the metric ``unscored``. A sample cut off at ``max_tokens`` never passes, whatever
    its reward (``response_finish_reason`` is ``length`` where the input has it; metric
    ``truncated``; see ``CutOffCandidates``). The row's id and ``prompt_id`` are the prompt's id
    (``group``), as in the preference pairs."""

    group: str = "prompt_id"
    reward: str = "reward"
    threshold: float = 1.0
    carry: tuple[str, ...] = ("prompt", "answer")
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "pass_rate"

    def required_columns(self) -> dict[str, Any]:
        return {self.group: None, self.reward: NUMERIC, **dict.fromkeys(self.carry), **self.finish_reason_columns()}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({"id": pl.String(), "prompt_id": pl.String(), **{c: schema[c] for c in self.carry},
                          "pass_rate": pl.Float64(), "n_samples": pl.UInt32()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        schema = frame.collect_schema()
        cut_off = self.cut_off(schema)
        reward = pl.col(self.reward).cast(pl.Float64).fill_nan(None)
        passed = pl.when(cut_off).then(False).otherwise(reward >= self.threshold)
        table = frame.collect()
        ctx.record("unscored", table.select(passed.null_count()).item())
        if self.finish_reason_column(schema):
            ctx.record("truncated", table.select(cut_off.sum()).item())
        prompt = pl.col(self.group).cast(pl.String)
        out = (table.group_by(self.group, maintain_order=True)
               .agg(*[pl.col(c).first() for c in self.carry],
                    pass_rate=passed.mean().cast(pl.Float64), n_samples=passed.count())
               .select(prompt.alias("id"), prompt.alias("prompt_id"), *self.carry, "pass_rate", "n_samples"))
        return Result(out)


def learnable_band(low: float = 0.0, high: float = 1.0) -> Filter:
    """Keeps prompts with ``low < pass_rate < high``: the model sometimes, not always, solves them."""
    return Filter((pl.col("pass_rate") > low) & (pl.col("pass_rate") < high),
                  reason=f"pass rate outside the learnable band ({low:g}, {high:g})", score="pass_rate")
