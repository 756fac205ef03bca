"""Quality-pyramid sampling and topic-balanced sampling.

Sampling is seeded by a hash of each row's id, so it does not depend on input order. Rows not
selected go to rejects with the rule that left them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.core.sampling import exact, largest_remainder
from dataflow.operators.selection.scores import SCORE, combined_score, score_columns

_HASH, _RANK = "__dataflow_hash", "__dataflow_rank"
LOWER = "lower"  # the tier of rows below every other tier, sampled by PyramidSample.keep_lower


def tier_expression(score: pl.Expr, thresholds: dict[str, float | None]) -> pl.Expr:
    """The first tier (in order) whose minimum the score reaches; None as a minimum takes the rest."""
    expr = None
    for tier, minimum in thresholds.items():
        test = score.is_not_null() if minimum is None else score >= minimum
        expr = (pl.when(test) if expr is None else expr.when(test)).then(pl.lit(tier))
    return expr.otherwise(None)


def balanced_order(seed: int, balance_by: str | None, within: list[str]) -> list[pl.Expr]:
    """Columns that order rows by seeded hash, round-robin across ``balance_by`` groups."""
    h = pl.col("id").hash(seed).alias(_HASH)
    if balance_by is None:
        return [h]
    return [h.rank("ordinal").over([*within, balance_by]).alias(_RANK), h]


@dataclass(frozen=True)
class PyramidSample(Operator):
    """Quality-pyramid sampling: rows fall into tiers by score, each tier fills its share of
    ``size`` by seeded sampling (round-robin across ``balance_by`` when given).

    Tiers are ``thresholds`` (tier -> minimum score, in order, best first; ``None`` takes the
    rest) or ``quantiles`` (tier -> minimum quantile of the score). Quotas are the shares of
    ``size`` by largest remainder, so they add up to ``size`` exactly. A tier with fewer rows than
    its quota gives all it has; its shortfall is a metric (``<tier>_shortfall``, and ``shortfall``
    in all), not filled from other tiers. Unscored rows (null or NaN) are in no tier (metric
    ``unscored``; rejects with reason ``unscored``). The tier is written to ``tier``.

    ``keep_lower`` (e.g. 0.15, against over-cleaning) fills that share of ``size`` with scored rows
    in no tier (below every minimum), sampled the same way, as tier ``lower``; the tiers share the rest
    (shares scaled by ``1 - keep_lower``, quotas by largest remainder, the ``lower`` tier last). Metrics:
    ``lower_available``, ``lower_selected``, ``lower_shortfall`` and ``lower_share`` of the sample.
    """

    score: str | dict[str, float]
    shares: dict[str, float]
    size: int
    thresholds: dict[str, float | None] | None = None
    quantiles: dict[str, float | None] | None = None
    balance_by: str | None = None
    seed: int = 0
    keep_lower: float = 0.0
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "pyramid"

    def check(self) -> list[str]:
        problems = []
        tiers = self.thresholds if self.thresholds is not None else self.quantiles
        if (self.thresholds is None) == (self.quantiles is None):
            problems.append("give exactly one of thresholds= or quantiles=")
        elif set(tiers) != set(self.shares):
            problems.append(f"shares name tiers {sorted(self.shares)} but the tiers are {sorted(tiers)}")
        if abs(sum(self.shares.values()) - 1) > 1e-6:
            problems.append(f"shares must add up to 1, not {sum(self.shares.values()):g}")
        if self.size < 0:
            problems.append(f"size must be non-negative, not {self.size}")
        return problems + self._keep_lower_problems(tiers or {})

    def _keep_lower_problems(self, tiers: dict[str, float | None]) -> list[str]:
        if not 0 <= self.keep_lower < 1:
            return [f"keep_lower must be a share from 0 up to 1 (excluded), not {self.keep_lower}"]
        if self.keep_lower and LOWER in tiers:
            return [f"keep_lower samples a tier named '{LOWER}': rename your tier '{LOWER}'"]
        last = list(tiers)[-1] if tiers else None
        if self.keep_lower and last is not None and tiers[last] is None:
            return [(f"keep_lower takes rows below the last tier, but the last tier '{last}' has no minimum "
                     "(None) and takes them all: give it a minimum, or raise its share instead")]
        return []

    def _tier_shares(self) -> dict[str, float]:
        """The shares of ``size`` by tier, with ``keep_lower`` as the ``lower`` tier's when it is set."""
        if not self.keep_lower:
            return self.shares
        return {**{tier: exact(share) * (1 - exact(self.keep_lower)) for tier, share in self.shares.items()},
                LOWER: exact(self.keep_lower)}

    def required_columns(self) -> dict[str, Any]:
        return {**score_columns(self.score), **({self.balance_by: None} if self.balance_by else {})}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, SCORE: pl.Float64(), "tier": pl.String()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.with_columns(combined_score(self.score).alias(SCORE)).collect()
        minimums = self.thresholds or {
            tier: None if q is None else table.get_column(SCORE).quantile(q, "nearest")
            for tier, q in self.quantiles.items()}
        if self.keep_lower:
            minimums = {**minimums, LOWER: None}
        table = table.with_columns(tier_expression(pl.col(SCORE), minimums).alias("tier"))
        quotas = largest_remainder(self._tier_shares(), self.size)
        ctx.record("unscored", table.get_column(SCORE).null_count())
        order = balanced_order(self.seed, self.balance_by, ["tier"])
        ranked = table.with_columns(order).sort([e.meta.output_name() for e in order])
        ranked = ranked.with_columns(pl.int_range(pl.len()).over("tier").alias("__position"))
        quota = pl.col("tier").replace_strict(quotas, default=0, return_dtype=pl.Int64)
        chosen = pl.col("tier").is_not_null() & (pl.col("__position") < quota)
        ranked = ranked.with_columns(chosen.alias("__chosen"))
        for tier, wanted in quotas.items():
            available = ranked.filter(pl.col("tier") == tier).height
            selected = ranked.filter(pl.col("__chosen") & (pl.col("tier") == tier)).height
            ctx.record(f"{tier}_available", available)
            ctx.record(f"{tier}_selected", selected)
            if selected < wanted:
                ctx.record(f"{tier}_shortfall", wanted - selected)
                ctx.count("shortfall", wanted - selected)
        helper = [c for c in ranked.columns if c.startswith("__")]
        rejects = ranked.filter(~pl.col("__chosen")).select(
            "id", score=SCORE,
            reason=pl.when(pl.col(SCORE).is_null()).then(pl.lit("unscored"))
            .when(pl.col("tier").is_null()).then(pl.lit("below every tier")).otherwise(pl.lit("pyramid tier full")),
            detail=pl.struct("tier").struct.json_encode())
        kept = ranked.filter(pl.col("__chosen")).sort("__position").drop(helper)
        if self.keep_lower:
            ctx.record("lower_share", kept.filter(pl.col("tier") == LOWER).height / max(1, kept.height))
        return Result(kept, rejects)


@dataclass(frozen=True)
class BalancedSample(Operator):
    """``n`` rows spread evenly across the values of ``by`` (round-robin, seeded)."""

    by: str
    n: int
    seed: int = 0
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "balanced_sample"

    def required_columns(self) -> dict[str, Any]:
        return {self.by: None}

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        order = balanced_order(self.seed, self.by, [])
        ranked = frame.with_columns(order).sort([e.meta.output_name() for e in order]).with_row_index("__position")
        table = ranked.collect()
        kept = table.filter(pl.col("__position") < self.n)
        rejects = table.filter(pl.col("__position") >= self.n).select("id", reason=pl.lit("balanced sample full"))
        return Result(kept.drop("__position", _RANK, _HASH), rejects)
