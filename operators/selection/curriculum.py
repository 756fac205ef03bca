"""Curriculum order: rows sorted and staged by a difficulty column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.dtypes import NUMERIC
from dataflow.errors import DataflowError
from dataflow.operator import Context, Kind, Operator, Result

STAGE = "stage"
NULLS = ("error", "last")


@dataclass(frozen=True)
class Curriculum(Operator):
    """Rows in curriculum order: by the numeric column ``by``, ascending (``descending=True`` for a
    column where higher is easier, such as a pass rate), ties broken by seeded hash of the id (then
    the id), so the order does not depend on input order.

    ``stages`` equal-count stages follow that order: the row at position i of n is in stage
    ``i * stages // n`` (written to ``stage``, 0 the first). A null or NaN difficulty stops the build
    unless ``nulls='last'``, which puts those rows after all others (by seeded hash), in the last stages.
    The order only matters if the trainer keeps it: `dataflow train sft DATA --set order=sequential`.
    """

    by: str
    descending: bool = False
    stages: int = 1
    nulls: str = "error"
    seed: int = 0
    kind = Kind.GLOBAL

    def check(self) -> list[str]:
        problems = [] if self.nulls in NULLS else [f"nulls must be 'error' or 'last', not {self.nulls!r}"]
        if isinstance(self.stages, bool) or not isinstance(self.stages, int) or self.stages < 1:
            problems.append(f"stages must be an int of at least 1, not {self.stages!r}")
        return problems

    def required_columns(self) -> dict[str, Any]:
        return {self.by: NUMERIC}

    def fingerprint_extras(self) -> dict[str, Any]:
        return {"polars": pl.__version__}  # polars' hash may change between versions

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        difficulty = pl.col(self.by).cast(pl.Float64).fill_nan(None)
        missing = table.select(difficulty.null_count()).item()
        if missing and self.nulls == "error":
            raise DataflowError(f"node '{ctx.node}': column '{self.by}' is null or NaN in {missing} of "
                                f"{table.height} rows; fill or filter them first, or pass nulls='last' to put "
                                f"them after the other rows")
        ctx.record("null_difficulty", missing)
        ordered = table.sort(difficulty.is_null(), difficulty, pl.col("id").hash(self.seed), "id",
                             descending=[False, self.descending, False, False])
        return Result(ordered.with_columns((pl.int_range(pl.len()) * self.stages // pl.len()).alias(STAGE)))
