"""Operators from user functions: per row, per batch, or over the whole table.

    @row_op(inputs={"text": str}, outputs={"n_words": int})
    def count_words(row):
        return {"n_words": len(row["text"].split())}

    words = docs.apply(count_words)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import polars as pl

from dataflow.dtypes import to_dtype
from dataflow.errors import DataflowError, RowError
from dataflow.operator import Context, Kind, Operator, Rejection, Result, on_error_problems, with_rejects_split

ERROR_COLUMN = "__dataflow_error"
PROGRESS_EVERY = 100  # rows between progress reports of per-row functions


def _outputs_schema(outputs: dict[str, Any]) -> dict[str, pl.DataType]:
    return {name: to_dtype(spec) for name, spec in outputs.items()}


def visible_columns(df: pl.DataFrame, inputs: dict[str, Any]) -> list[str]:
    """``id`` and the declared input columns; every column when none are declared."""
    return ["id", *[c for c in inputs if c != "id"]] if inputs else df.columns


def _error_text(error: BaseException) -> str:
    if isinstance(error, Rejection):
        return f"{error.reason}\t{error.detail}"
    return f"error\t{type(error).__name__}: {error}"


def fits(values: list, dtype: pl.DataType) -> bool:
    """Whether a column of ``dtype`` holds ``values`` as they are."""
    try:
        pl.Series(values, dtype=dtype, strict=True)
    except (TypeError, pl.exceptions.PolarsError):
        return False
    return True


def build_series(node: str, name: str, values: list, dtype: pl.DataType, ids: list[str]) -> pl.Series:
    """A typed column from function results; a wrong value is reported with its row id."""
    try:
        return pl.Series(name, values, dtype=dtype, strict=True)
    except (TypeError, pl.exceptions.PolarsError) as exc:
        for value, row_id in zip(values, ids):
            if not fits([value], dtype):
                raise DataflowError(
                    f"node '{node}': the function returned {type(value).__name__} {str(value)[:80]!r} for "
                    f"column '{name}' (declared {dtype}) on row id={row_id}; return a {dtype} value or "
                    f"change the declared output type"
                ) from exc
        raise


@dataclass(frozen=True)
class RowFunction(Operator):
    """Calls ``fn(row) -> dict`` per row; the dict's keys are the declared output columns.

    ``row`` holds ``id`` and the declared input columns. With ``on_error='reject'`` a row whose
    call raises goes to rejects (reason ``error``, or the reason of a raised ``Rejection``).
    """

    fn: Callable[[dict], dict]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    on_error: str = "raise"
    name: str = ""
    kind = Kind.ROW

    def label(self) -> str:
        return self.name or getattr(self.fn, "__name__", "map")

    def required_columns(self) -> dict[str, Any]:
        return dict(self.inputs)

    def check(self) -> list[str]:
        problems = on_error_problems(self.on_error)
        if not self.outputs:
            problems.append("declare at least one output column, e.g. outputs={'n_words': int}")
        return problems

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, **_outputs_schema(self.outputs)})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        schema = self.output_schema(frame.collect_schema())
        if self.on_error == "reject":
            schema = pl.Schema({**schema, ERROR_COLUMN: pl.String()})
        mapped = frame.map_batches(lambda df: self._run(df, ctx), schema=schema, streamable=True)
        if self.on_error == "reject":
            return with_rejects_split(mapped, ERROR_COLUMN)
        return Result(mapped)

    def _run(self, df: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        columns = {name: [] for name in self.outputs}
        errors: list[str | None] = []
        ids = df.get_column("id").to_list()
        for n, row in enumerate(df.select(visible_columns(df, self.inputs)).iter_rows(named=True), 1):
            if n % PROGRESS_EVERY == 0:
                ctx.progress(PROGRESS_EVERY)
            try:
                values = self.fn(row)
                if not isinstance(values, dict) or values.keys() != columns.keys():
                    got = sorted(values) if isinstance(values, dict) else type(values).__name__
                    raise TypeError(f"expected a dict with keys {sorted(columns)}, got {got}")
                errors.append(None)
            except Exception as exc:
                if self.on_error == "raise":
                    raise RowError(ctx.node, row["id"], exc) from exc
                values = dict.fromkeys(columns)
                errors.append(_error_text(exc))
            for name, value in values.items():
                columns[name].append(value)
        dtypes = _outputs_schema(self.outputs)
        if self.on_error == "reject":  # a value of the wrong type rejects its row, as an exception would
            for name, values in columns.items():
                if fits(values, dtypes[name]):
                    continue
                for i, value in enumerate(values):
                    if errors[i] is None and not fits([value], dtypes[name]):
                        errors[i] = (f"wrong_type\tcolumn '{name}': {type(value).__name__} {str(value)[:80]!r} is "
                                     f"not {dtypes[name]}")
                        for column in columns.values():
                            column[i] = None
        out = df.with_columns(build_series(ctx.node, n, v, dtypes[n], ids) for n, v in columns.items())
        if self.on_error == "reject":
            out = out.with_columns(pl.Series(ERROR_COLUMN, errors, dtype=pl.String))
        ctx.progress(df.height % PROGRESS_EVERY)
        return out


@dataclass(frozen=True)
class RowFilter(Operator):
    """Keeps rows where ``fn(row)`` is true; the others go to rejects with ``reason``."""

    fn: Callable[[dict], bool]
    inputs: dict[str, Any]
    reason: str = ""
    kind = Kind.ROW

    def label(self) -> str:
        return getattr(self.fn, "__name__", "filter").replace("<lambda>", "filter")

    def required_columns(self) -> dict[str, Any]:
        return dict(self.inputs)

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return schema

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        reason = self.reason or f"failed {self.label()}"
        schema = pl.Schema({**frame.collect_schema(), ERROR_COLUMN: pl.String()})
        marked = frame.map_batches(lambda df: self._mark(df, ctx, reason), schema=schema, streamable=True)
        return with_rejects_split(marked, ERROR_COLUMN)

    def _mark(self, df: pl.DataFrame, ctx: Context, reason: str) -> pl.DataFrame:
        marks = []
        for n, row in enumerate(df.select(visible_columns(df, self.inputs)).iter_rows(named=True), 1):
            if n % PROGRESS_EVERY == 0:
                ctx.progress(PROGRESS_EVERY)
            try:
                keep = self.fn(row)
            except Exception as exc:
                raise RowError(ctx.node, row["id"], exc) from exc
            marks.append(None if keep else f"{reason}\t")
        ctx.progress(df.height % PROGRESS_EVERY)
        return df.with_columns(pl.Series(ERROR_COLUMN, marks, dtype=pl.String))


@dataclass(frozen=True)
class BatchFunction(Operator):
    """Calls ``fn(batch: pl.DataFrame) -> pl.DataFrame`` per record batch.

    The returned frame has one row per input row and the declared output columns.
    """

    fn: Callable[[pl.DataFrame], pl.DataFrame]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    name: str = ""
    kind = Kind.BATCH

    def label(self) -> str:
        return self.name or getattr(self.fn, "__name__", "map_batches")

    def required_columns(self) -> dict[str, Any]:
        return dict(self.inputs)

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, **_outputs_schema(self.outputs)})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        schema = self.output_schema(frame.collect_schema())
        return Result(frame.map_batches(lambda df: self._run(df, ctx), schema=schema, streamable=True))

    def _run(self, df: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        ids = df.get_column("id")
        try:
            result = self.fn(df.select(visible_columns(df, self.inputs)))
        except Exception as exc:
            first, last = ids[0], ids[-1]
            raise RowError(ctx.node, f"{first} .. {last} (a batch of {df.height})", exc) from exc
        _check_frame(ctx.node, result, self.outputs, df.height)
        dtypes = _outputs_schema(self.outputs)
        out = df.with_columns(result.select(pl.col(n).cast(t) for n, t in dtypes.items()))
        ctx.progress(df.height)
        return out


def _check_frame(node: str, result: Any, outputs: dict[str, Any], height: int | None) -> None:
    if not isinstance(result, pl.DataFrame):
        raise DataflowError(f"node '{node}': the function must return a polars DataFrame, "
                            f"not {type(result).__name__}")
    absent = [c for c in outputs if c not in result.columns]
    if absent:
        raise DataflowError(f"node '{node}': the function's result lacks declared output column(s) "
                            f"{absent}; it has {result.columns}")
    if height is not None and result.height != height:
        raise DataflowError(f"node '{node}': the function returned {result.height} rows for {height} "
                            f"input rows; a batch function returns one row per input row "
                            f"(drop rows with .filter(...))")


@dataclass(frozen=True)
class GlobalFunction(Operator):
    """Calls ``fn(table: pl.DataFrame)`` once on the whole input.

    It returns the output frame (with ``id``, unique, and the declared output columns), or a pair
    ``(output, rejects)`` where ``rejects`` has ``id`` and ``reason`` columns.
    """

    fn: Callable[[pl.DataFrame], Any]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    name: str = ""
    kind = Kind.GLOBAL

    def label(self) -> str:
        return self.name or getattr(self.fn, "__name__", "global")

    def required_columns(self) -> dict[str, Any]:
        return dict(self.inputs)

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, **_outputs_schema(self.outputs)})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        try:
            returned = self.fn(table)
        except Exception as exc:
            raise RowError(ctx.node, f"(whole table of {table.height} rows)", exc) from exc
        output, rejects = returned if isinstance(returned, tuple) else (returned, None)
        _check_frame(ctx.node, output, ["id", *self.outputs], None)
        repeated = output.filter(pl.col("id").is_duplicated()).get_column("id").unique().sort().head(3).to_list()
        if repeated:
            raise DataflowError(f"node '{ctx.node}': the function's result repeats ids, e.g. {repeated}; ids "
                                f"must stay unique (a later filter or dedup drops rows by id): give each row its own "
                                f"id, e.g. the id and a counter")
        expected = self.output_schema(table.schema)
        output = output.select(pl.col(c).cast(expected[c]) if c in expected else pl.col(c)
                               for c in output.columns)
        ctx.progress(table.height)
        return Result(output, rejects)


def row_op(inputs: dict[str, Any], outputs: dict[str, Any], on_error: str = "raise"):
    """Decorator: a ``fn(row) -> dict`` becomes a row operator (see :class:`RowFunction`)."""
    return lambda fn: RowFunction(fn, inputs, outputs, on_error)


def batch_op(inputs: dict[str, Any], outputs: dict[str, Any]):
    """Decorator: a ``fn(batch) -> DataFrame`` becomes a batch operator."""
    return lambda fn: BatchFunction(fn, inputs, outputs)


def global_op(inputs: dict[str, Any], outputs: dict[str, Any] | None = None):
    """Decorator: a ``fn(table) -> DataFrame | (DataFrame, rejects)`` becomes a global operator."""
    return lambda fn: GlobalFunction(fn, inputs, outputs or {})


