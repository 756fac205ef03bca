"""Exact deduplication on one or more columns after text normalization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.columns import column_text

NORMALIZATIONS = ("nfkc", "case", "punctuation", "whitespace")
_KEY = "__dataflow_key"


def normalized(text: pl.Expr, steps: tuple[str, ...]) -> pl.Expr:
    """Apply normalization steps (a subset of ``NORMALIZATIONS``) to a string expression."""
    if "nfkc" in steps:
        text = text.str.normalize("NFKC")
    if "case" in steps:
        text = text.str.to_lowercase()
    if "punctuation" in steps:
        text = text.str.replace_all(r"[\p{P}\p{S}]", "")
    if "whitespace" in steps:
        text = text.str.replace_all(r"\s+", " ").str.strip_chars()
    return text


def duplicate_detail(survivor: pl.Expr) -> pl.Expr:
    """A duplicate's reject detail, ``{"duplicate_of": <survivor id>}`` as JSON (any id, quotes included)."""
    return pl.struct(survivor.alias("duplicate_of")).struct.json_encode()


@dataclass(frozen=True)
class ExactDedup(Operator):
    """Drops rows whose key columns equal an earlier row's after normalization.

    ``normalize`` is ``True`` (all of NFKC, case, punctuation, whitespace), ``False``, or a
    tuple of those step names. For conversation columns, ``roles`` picks the turns compared
    (e.g. ``("user",)`` to deduplicate by prompt); by default every turn with its role counts.
    A null value counts as empty text. The first row of each group (input order) survives; the
    others go to rejects with reason ``duplicate`` and ``{"duplicate_of": <survivor id>}``.
    """

    columns: tuple[str, ...]
    normalize: bool | tuple[str, ...] = True
    roles: tuple[str, ...] = ()
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "dedup"

    def check(self) -> list[str]:
        problems = [] if self.columns else ["name at least one column to deduplicate on"]
        unknown = [s for s in self.steps() if s not in NORMALIZATIONS]
        if unknown:
            problems.append(f"unknown normalization step(s) {unknown}; choose from {list(NORMALIZATIONS)}")
        return problems

    def steps(self) -> tuple[str, ...]:
        if self.normalize is True:
            return NORMALIZATIONS
        return tuple(self.normalize or ())

    def required_columns(self) -> dict[str, Any]:
        return dict.fromkeys(self.columns)

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return schema

    def key(self, schema: pl.Schema) -> pl.Expr:
        """The normalized text rows are compared by (several key columns as one struct: no column's text
        can run into the next's)."""
        parts = [normalized(column_text(c, schema[c], self.roles).fill_null(""), self.steps()) for c in self.columns]
        return parts[0] if len(parts) == 1 else pl.struct([part.alias(f"k{i}") for i, part in enumerate(parts)])

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        keyed = frame.with_columns(self.key(frame.collect_schema()).alias(_KEY)).collect()
        survivor = pl.col("id").first().over(_KEY)
        marked = keyed.with_columns(survivor.alias("__survivor"))
        is_dup = pl.col("id") != pl.col("__survivor")
        rejects = marked.filter(is_dup).select(
            "id", reason=pl.lit("duplicate"),
            detail=duplicate_detail(pl.col("__survivor")),
        )
        return Result(marked.filter(~is_dup).drop(_KEY, "__survivor"), rejects)
