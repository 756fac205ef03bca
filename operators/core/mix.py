"""Mixing several inputs by weights or exact counts, with an explicit oversampling rule."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from dataflow.errors import DataflowError
from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.core.sampling import exact, largest_remainder

SOURCE, SOURCE_ID, COPY = "source", "source_id", "source_copy"
OVERSAMPLE = ("error", "replace")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _weight(value: Any) -> bool:
    return _count(value) or isinstance(value, float) and 0 <= value < math.inf


def _mix_id(source: str, row_id: pl.Expr, copy: pl.Expr) -> pl.Expr:
    """``source:id`` for a row's first copy, ``source#k:id`` for copy k: unique, since a source name
    has neither ':' nor '#'."""
    suffix = pl.when(copy == 0).then(pl.lit("")).otherwise(pl.lit("#") + copy.cast(pl.String))
    return pl.lit(source) + suffix + pl.lit(":") + row_id


@dataclass(frozen=True)
class Mix(Operator):
    """Rows of several inputs, named by ``sources`` (in input order), in set proportions.

    Each input gives ``counts[source]`` rows, or its share of ``total`` by ``weights`` (normalized;
    whole counts by largest remainder, ties in source order). An input of n rows asked for c ranks
    its rows by seeded hash of ``source:id`` (then id) and takes the first c when c <= n. When
    c > n, ``oversample='error'`` stops the build; ``'replace'`` takes every row c // n times and
    the first c % n once more, so each row appears floor or ceil of c / n times.

    Output ids are ``source:id`` (copy 0) and ``source#k:id`` (copy k), unique even when inputs
    share ids (replayed rounds); the input's id is in ``source_id``, the copy number in
    ``source_copy`` and the input's name in ``source`` (an input that has a column of one of these
    names does not compile: rename it first). Columns missing from an input are null. Rows are
    ordered by seeded hash of their output id (then id), so sources interleave, whatever the
    input order.
    """

    sources: tuple[str, ...]
    weights: dict[str, float] | None = None
    counts: dict[str, int] | None = None
    total: int | None = None
    oversample: str = "error"
    seed: int = 0
    inputs_count = -1
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "mix"

    def check(self) -> list[str]:
        problems = [f"source name {s!r} is not an identifier (letters, digits, _): rename it"
                    for s in self.sources if not _IDENTIFIER.match(s)]
        if len(set(self.sources)) < len(self.sources):
            problems.append(f"source names repeat in {list(self.sources)}: give each input its own name")
        if self.oversample not in OVERSAMPLE:
            problems.append(f"oversample must be 'error' or 'replace', not {self.oversample!r}")
        if (self.weights is None) == (self.counts is None):
            problems.append("give exactly one of weights= (with total=) or counts=")
        elif self.counts is not None:
            problems += self._amount_problems("counts", self.counts, "non-negative ints", _count)
            if self.total is not None:
                problems.append("total= goes with weights=; counts= already fix the number of rows")
        else:
            problems += self._amount_problems("weights", self.weights, "non-negative finite numbers", _weight)
            if not _count(self.total):
                problems.append(f"weights= need total= as a non-negative int, not {self.total!r}")
            if all(map(_weight, self.weights.values())) and not sum(self.weights.values()) > 0:
                problems.append(f"weights must add up to a positive number, not {sum(self.weights.values())!r}")
        return problems

    def _amount_problems(self, what: str, given: dict[str, Any], kind: str, valid: Callable[[Any], bool]
                         ) -> list[str]:
        problems = []
        if unknown := sorted(set(given) - set(self.sources)):
            problems.append(f"{what} name unknown source(s) {unknown}; the sources are {list(self.sources)}")
        if missing := [s for s in self.sources if s not in given]:
            problems.append(f"{what} miss source(s) {missing}: give each source one (0 leaves it out)")
        if bad := {s: v for s, v in given.items() if not valid(v)}:
            problems.append(f"{what} must be {kind}, not {bad}")
        return problems

    def _asked(self) -> dict[str, int]:
        """Rows asked of each source."""
        if self.counts is not None:
            return dict(self.counts)
        weight = sum(exact(w) for w in self.weights.values())
        return largest_remainder({s: exact(self.weights[s]) / weight for s in self.sources}, self.total)

    def fingerprint_extras(self) -> dict[str, Any]:
        return {"polars": pl.__version__}  # polars' hash may change between versions

    def output_schema(self, *schemas: pl.Schema) -> pl.Schema:
        if len(schemas) != len(self.sources):
            raise ValueError(f"{len(self.sources)} source names {list(self.sources)} for {len(schemas)} inputs: "
                             f"name every input once")
        for source, schema in zip(self.sources, schemas):
            if taken := [c for c in (SOURCE, SOURCE_ID, COPY) if c in schema]:
                raise ValueError(f"input '{source}' already has column(s) {taken}, which the mix writes: rename or "
                                 f"drop them first, e.g. .rename({{'{taken[0]}': 'origin'}})")
        ctx = Context(node="<compile>", workdir=Path("."))
        empty = [pl.DataFrame(schema=s) for s in schemas]
        return self._mix(empty, dict.fromkeys(self.sources, 0), ctx).collect_schema()

    def apply(self, *frames: pl.LazyFrame, ctx: Context) -> Result:
        return Result(self._mix([frame.collect() for frame in frames], self._asked(), ctx).collect())

    def _mix(self, tables: list[pl.DataFrame], asked: dict[str, int], ctx: Context) -> pl.LazyFrame:
        parts = [self._take(table, source, asked[source], ctx).lazy() for table, source in zip(tables, self.sources)]
        mixed = pl.concat(parts, how="diagonal_relaxed").sort(pl.col("id").hash(self.seed), "id")
        return mixed.select(pl.exclude(SOURCE, SOURCE_ID, COPY), SOURCE, SOURCE_ID, COPY)

    def _take(self, table: pl.DataFrame, source: str, wanted: int, ctx: Context) -> pl.DataFrame:
        """``wanted`` rows of one input (copies as the oversampling rule says), with their mix columns."""
        available = table.height
        if wanted > available and (self.oversample == "error" or available == 0):
            fix = ("give it weight or count 0, or fix the step that makes it" if available == 0 else
                   "lower its weight or count, or pass oversample='replace' to repeat its rows")
            raise DataflowError(f"node '{ctx.node}': input '{source}' has {available} rows but the mix asks for "
                                f"{wanted}: {fix}")
        whole, extra = divmod(wanted, available) if available else (0, 0)
        taken = (table.sort((pl.lit(f"{source}:") + pl.col("id")).hash(self.seed), "id")
                 .with_columns((whole + (pl.int_range(pl.len()) < extra)).alias(COPY)).filter(pl.col(COPY) > 0)
                 .with_columns(pl.int_ranges(0, pl.col(COPY), dtype=pl.Int64).alias(COPY)).explode(COPY)
                 .with_columns(pl.col("id").alias(SOURCE_ID), pl.lit(source).alias(SOURCE))
                 .with_columns(_mix_id(source, pl.col(SOURCE_ID), pl.col(COPY)).alias("id")))
        for metric, value in (("asked", wanted), ("available", available), ("taken", taken.height),
                              ("oversampled", max(0, wanted - available))):
            ctx.record(f"{source}_{metric}", value)
        return taken

