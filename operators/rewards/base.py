"""The verifier base: each verifier writes a reward column (1.0 / 0.0, or a float) and a detail
column saying why a reward is zero. Nothing here fails a build on bad input: an unparseable answer,
a crash, a program past its time limit or a blocked action is a zero reward with its reason; a
check that could not finish (math-verify past its time bound) is a null reward with its reason."""

from __future__ import annotations

import polars as pl

from dataflow.errors import DataflowError
from dataflow.operator import Context, Kind, Operator, Result


class Verifier(Operator):
    """Base: ``check_rows`` turns input rows into (reward, detail) pairs, batch by batch, or into
    (reward, detail, *values) for a verifier with ``extra_columns``."""

    kind = Kind.BATCH
    output: str

    def extra_columns(self) -> dict[str, pl.DataType]:
        """Columns beyond the reward and its detail, named after ``output`` (e.g. tests passed)."""
        return {}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, self.output: pl.Float64(), f"{self.output}_detail": pl.String(),
                          **self.extra_columns()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        schema = self.output_schema(frame.collect_schema())
        return Result(frame.map_batches(lambda df: self._run(df, ctx), schema=schema, streamable=True))

    def _run(self, df: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        try:
            results = self.check_rows(df.select(list(self.required_columns())).to_dicts()) if df.height else []
        except DataflowError as exc:
            raise DataflowError(f"node '{ctx.node}': {exc}") from exc
        rewards = [r[0] for r in results]
        ctx.count("passed", sum(r > 0 for r in rewards if r is not None))
        ctx.count("verified", len(rewards))
        if None in rewards:  # checks that could not finish: no reward, not a zero one
            ctx.count("unverified", rewards.count(None))
        ctx.progress(df.height)
        columns = {self.output: pl.Float64(), f"{self.output}_detail": pl.String(), **self.extra_columns()}
        return df.with_columns(pl.Series(name, [r[i] for r in results], dtype=dtype)
                               for i, (name, dtype) in enumerate(columns.items()))

    def check_rows(self, rows: list[dict]) -> list[tuple[float, str]]:
        raise NotImplementedError
