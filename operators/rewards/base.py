"""The verifier base: each verifier writes a reward column (1.0 / 0.0, or a float) and a detail
column saying why a reward is zero. Nothing here fails a build on bad input: an unparseable answer,
a crash, a timeout or a blocked action is a zero reward with its reason."""

from __future__ import annotations

import polars as pl

from dataflow.operator import Context, Kind, Operator, Result


class Verifier(Operator):
    """Base: ``check_rows`` turns input rows into (reward, detail) pairs, batch by batch."""

    kind = Kind.BATCH
    output: str

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, self.output: pl.Float64(), f"{self.output}_detail": pl.String()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        schema = self.output_schema(frame.collect_schema())
        return Result(frame.map_batches(lambda df: self._run(df, ctx), schema=schema, streamable=True))

    def _run(self, df: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        results = self.check_rows(df.select(list(self.required_columns())).to_dicts()) if df.height else []
        rewards = [r for r, _ in results]
        ctx.count("passed", sum(r > 0 for r in rewards))
        ctx.count("verified", len(rewards))
        ctx.progress(df.height)
        return df.with_columns(pl.Series(self.output, rewards, dtype=pl.Float64),
                               pl.Series(f"{self.output}_detail", [d for _, d in results], dtype=pl.String))

    def check_rows(self, rows: list[dict]) -> list[tuple[float, str]]:
        raise NotImplementedError
