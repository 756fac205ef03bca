"""Operators over several upstream nodes: concatenation and key joins."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from dataflow.errors import DataflowError
from dataflow.operator import Context, Kind, Operator, Result


@dataclass(frozen=True)
class Concat(Operator):
    """Rows of all inputs, one after another; columns missing from an input are null."""

    inputs_count = -1
    kind = Kind.GLOBAL

    def apply(self, *frames: pl.LazyFrame, ctx: Context) -> Result:
        table = pl.concat(frames, how="diagonal_relaxed").collect()
        repeated = table.filter(pl.col("id").is_duplicated()).get_column("id").unique().head(3).to_list()
        if repeated:
            raise DataflowError(f"node '{ctx.node}': ids repeat across the concatenated inputs, e.g. {repeated}; "
                                f"ids must stay unique: give the sources different names, or derive new ids "
                                f"with a map before concatenating")
        return Result(table)


@dataclass(frozen=True)
class Join(Operator):
    """Joins the left input with the right one on key columns; the left row's id is kept.

    The right row's id becomes ``id<suffix>``. A left row that matches several right rows gives one row
    for each, with the id ``<left id>+<right id>`` (ids stay unique). With ``how='inner'`` left rows
    without a match go to rejects (reason ``no_match``).
    """

    on: tuple[str, ...]
    how: str = "inner"
    suffix: str = "_right"
    inputs_count = 2
    kind = Kind.GLOBAL

    def check(self) -> list[str]:
        problems = [] if self.on else ["name at least one key column in on=..."]
        if self.how not in ("inner", "left"):
            problems.append(f"how must be 'inner' or 'left', not {self.how!r}")
        if "id" in self.on:
            problems.append("join on 'id' is not supported: ids are per source; join on a data column")
        return problems

    def output_schema(self, left: pl.Schema, right: pl.Schema) -> pl.Schema:
        missing = [f"'{c}' (right input)" for c in self.on if c not in right]
        missing += [f"'{c}' (left input)" for c in self.on if c not in left]
        if missing:
            raise KeyError(f"join key column(s) {', '.join(missing)} not found")
        return super().output_schema(left, right)

    def apply(self, left: pl.LazyFrame, right: pl.LazyFrame, ctx: Context) -> Result:
        joined = left.join(right, on=list(self.on), how=self.how, suffix=self.suffix, maintain_order="left")
        repeated = pl.len().over("id") > 1
        joined = joined.with_columns(pl.when(repeated).then(pl.col("id") + "+" + pl.col(f"id{self.suffix}"))
                                     .otherwise(pl.col("id")).alias("id"))
        rejects = None
        if self.how == "inner":
            rejects = left.join(right, on=list(self.on), how="anti").select(
                "id", reason=pl.lit("no_match"), detail=pl.lit(f"no row of the right input has equal {list(self.on)}"))
        return Result(joined, rejects)
