"""Cheap vectorized operators: filter and map by polars expression, select, rename, cast, limit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.dtypes import NUMERIC, to_dtype
from dataflow.operator import Context, Kind, Operator, Result, ViewOperator


@dataclass(frozen=True)
class Filter(ViewOperator):
    """Keeps rows where ``predicate`` is true; the others (null included) go to rejects.

    ``score`` names a column copied into the rejects' score, e.g. the quality value that failed.
    The output is stored as its rejects only: it is its input minus those rows. The executor
    fuses a chain of filters into one pass that evaluates each predicate once; it stores the
    rejects' ids and scores per row and the labels once per node.
    """

    predicate: pl.Expr
    reason: str = ""
    score: str | None = None

    def check(self) -> list[str]:
        if not isinstance(self.predicate, pl.Expr):
            return [f"predicate must be a polars expression, not {type(self.predicate).__name__} "
                    f"(for a Python function use node.filter(fn))"]
        return []

    def required_columns(self) -> dict[str, Any]:
        return {self.score: NUMERIC} if self.score else {}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        kind = pl.LazyFrame(schema=schema).select(self.predicate).collect().schema  # type errors show here
        dtype = next(iter(kind.values()))
        if dtype != pl.Boolean():
            raise TypeError(f"the predicate {self.predicate} gives {dtype}, not a boolean")
        return schema

    def keep(self) -> pl.Expr:
        """True for rows that pass (a null predicate fails)."""
        return self.predicate.fill_null(False)

    def reject_score(self) -> pl.Expr | None:
        return pl.col(self.score).cast(pl.Float64) if self.score else None

    def reject_labels(self) -> dict[str, str]:
        return {"reason": self.reason or f"failed {self.predicate}", "detail": str(self.predicate)}


@dataclass(frozen=True)
class WithColumns(Operator):
    """Adds or replaces columns computed by polars expressions: ``WithColumns({"n": expr})``."""

    columns: dict[str, pl.Expr]
    kind = Kind.ROW

    def label(self) -> str:
        return "map"

    def check(self) -> list[str]:
        if "id" in self.columns:
            return ["the 'id' column is managed by dataflow and cannot be replaced by a map"]
        return [f"column '{name}': expected a polars expression, not {type(e).__name__}"
                for name, e in self.columns.items() if not isinstance(e, pl.Expr)]

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        return Result(frame.with_columns(**self.columns))


@dataclass(frozen=True)
class Select(Operator):
    """Keeps the named columns (``id`` is always kept)."""

    columns: tuple[str, ...]
    kind = Kind.ROW

    def required_columns(self) -> dict[str, Any]:
        return dict.fromkeys(self.columns)

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        return Result(frame.select(["id", *[c for c in self.columns if c != "id"]]))


@dataclass(frozen=True)
class Drop(Operator):
    """Removes the named columns."""

    columns: tuple[str, ...]
    kind = Kind.ROW

    def check(self) -> list[str]:
        return ["the 'id' column cannot be dropped"] if "id" in self.columns else []

    def required_columns(self) -> dict[str, Any]:
        return dict.fromkeys(self.columns)

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        return Result(frame.drop(self.columns))


@dataclass(frozen=True)
class Rename(Operator):
    """Renames columns: ``Rename({"old": "new"})``."""

    mapping: dict[str, str]
    kind = Kind.ROW

    def check(self) -> list[str]:
        if "id" in self.mapping or "id" in self.mapping.values():
            return ["the 'id' column cannot be renamed or overwritten"]
        return []

    def required_columns(self) -> dict[str, Any]:
        return dict.fromkeys(self.mapping)

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        return Result(frame.rename(self.mapping))


@dataclass(frozen=True)
class Cast(Operator):
    """Casts columns to types: ``Cast({"score": float})``; a value that does not convert fails."""

    dtypes: dict[str, Any]
    kind = Kind.ROW

    def check(self) -> list[str]:
        problems = []
        for column, spec in self.dtypes.items():
            try:
                to_dtype(spec)
            except TypeError as exc:
                problems.append(f"column '{column}': {exc}")
        return problems

    def required_columns(self) -> dict[str, Any]:
        return dict.fromkeys(self.dtypes)

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        return Result(frame.with_columns(pl.col(c).cast(to_dtype(t), strict=True) for c, t in self.dtypes.items()))


@dataclass(frozen=True)
class Limit(Operator):
    """Keeps the first ``n`` rows in input order."""

    n: int
    kind = Kind.GLOBAL

    def check(self) -> list[str]:
        return [] if isinstance(self.n, int) and self.n >= 0 else [f"n must be a non-negative int, not {self.n!r}"]

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        return Result(frame.head(self.n))
