"""Seeded sampling and train/eval splits.

Rows are chosen by a seeded hash of their id, so the choice does not depend on input order and
a row's membership barely moves when other rows are added.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import polars as pl

from dataflow.operator import Context, Kind, Operator, Result

_RANK = "__dataflow_rank"


def _hash_rank(seed: int, over: str | None) -> pl.Expr:
    rank = pl.col("id").hash(seed).rank("ordinal")
    return rank.over(over) if over else rank


def _seed_problems(seed: Any) -> list[str]:
    """A seed polars can hash with: a non-negative int."""
    return [] if isinstance(seed, int) and seed >= 0 else [f"seed must be an int >= 0, not {seed!r}"]


def _fraction_problems(fraction: float | None, size: int | None, what: str) -> list[str]:
    if (fraction is None) == (size is None):
        return [f"give exactly one of {what}_fraction or {what}_size"] if what else \
            ["give exactly one of n or fraction"]
    if fraction is not None and not 0 <= fraction <= 1:
        return [f"fraction must be between 0 and 1, not {fraction}"]
    if size is not None and (not isinstance(size, int) or size < 0):
        return [f"size must be a non-negative int, not {size!r}"]
    return []


def exact(number: float | int | Fraction) -> Fraction:
    """``number`` as the decimal it is written as (0.07 is 7/100, not the float next to it)."""
    return Fraction(repr(number)) if isinstance(number, float) else Fraction(number)


def largest_remainder(shares: dict[str, float | Fraction], size: int) -> dict[str, int]:
    """Whole quotas of ``size`` in proportion to ``shares``, adding up to ``size``: each tier gets
    the floor of its share, then the tiers with the largest remainders one more (ties: tier order),
    in exact arithmetic (a float's rounding error decides no tie)."""
    exact_quotas = {tier: exact(share) * size for tier, share in shares.items()}
    quotas = {tier: int(value) for tier, value in exact_quotas.items()}
    by_remainder = sorted(exact_quotas, key=lambda tier: -(exact_quotas[tier] - quotas[tier]))
    for tier in by_remainder[:max(0, size - sum(quotas.values()))]:
        quotas[tier] += 1
    return quotas


@dataclass(frozen=True)
class Sample(Operator):
    """A seeded random sample of ``n`` rows or a ``fraction`` of rows, in input order."""

    n: int | None = None
    fraction: float | None = None
    seed: int = 0
    kind = Kind.GLOBAL

    def check(self) -> list[str]:
        return _fraction_problems(self.fraction, self.n, "") + _seed_problems(self.seed)

    def fingerprint_extras(self) -> dict[str, Any]:
        return {"polars": pl.__version__}  # polars' hash may change between versions

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        count = pl.len() if self.n is None else pl.lit(self.n)
        k = (pl.len() * self.fraction).round() if self.fraction is not None else count
        return Result(frame.filter(_hash_rank(self.seed, None) <= k))


@dataclass(frozen=True)
class SplitPart(Operator):
    """One part ('train' or 'eval') of a seeded split, optionally stratified by a column.

    Within each stratum the ``round(eval_fraction * rows)`` rows (or the stratum's share of
    ``eval_size``) with the lowest seeded hash of their id form the eval part.
    """

    part: str
    eval_fraction: float | None = None
    eval_size: int | None = None
    seed: int = 0
    stratify: str | None = None
    kind = Kind.GLOBAL

    def label(self) -> str:
        return self.part

    def check(self) -> list[str]:
        problems = _fraction_problems(self.eval_fraction, self.eval_size, "eval") + _seed_problems(self.seed)
        if self.part not in ("train", "eval"):
            problems.append(f"part must be 'train' or 'eval', not {self.part!r}")
        return problems

    def required_columns(self) -> dict[str, Any]:
        return {self.stratify: None} if self.stratify else {}

    def fingerprint_extras(self) -> dict[str, Any]:
        return {"polars": pl.__version__}

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        group_rows = pl.len().over(self.stratify) if self.stratify else pl.len()
        if self.eval_fraction is not None:
            k = (group_rows * self.eval_fraction).round()
        else:
            k = (group_rows * self.eval_size / pl.len()).round()
        is_eval = _hash_rank(self.seed, self.stratify) <= k
        return Result(frame.filter(is_eval if self.part == "eval" else ~is_eval))
