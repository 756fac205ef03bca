"""Validation of rows against a canonical record schema (``dataflow.schemas``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operator import Context, Kind, Operator, Result, on_error_problems
from dataflow.operators.core.functions import RowFunction
from dataflow.schemas import SCHEMAS, get_schema


@dataclass(frozen=True)
class Validate(Operator):
    """Checks rows against a canonical schema (``conversation``, ``sft``, ``preference`` or
    ``prompt``); invalid rows go to rejects naming the field, or fail the build with
    ``on_error='raise'``."""

    schema: str
    on_error: str = "reject"
    kind = Kind.ROW

    def label(self) -> str:
        return f"validate_{self.schema}"

    def check(self) -> list[str]:
        try:
            get_schema(self.schema)
        except KeyError as exc:
            return [str(exc.args[0])]
        return on_error_problems(self.on_error)

    def required_columns(self) -> dict[str, Any]:
        return dict(get_schema(self.schema).columns) if self.schema in SCHEMAS else {}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return schema

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        validate = get_schema(self.schema).validate
        columns = list(get_schema(self.schema).columns) + [
            c for c in ("chosen_score", "rejected_score", "margin") if c in frame.collect_schema()]
        check = RowFunction(_validator(validate), dict.fromkeys(columns), {"__valid": bool}, on_error=self.on_error)
        result = check.apply(frame, ctx=ctx)
        return Result(result.output.drop("__valid"), result.rejects)


def _validator(validate):
    def run(row: dict) -> dict:
        validate(row)
        return {"__valid": True}
    return run
