"""Novelty by ROUGE-L, as Self-Instruct (Wang et al. 2022) filters its generated instructions: a text
is kept only when no text kept before it (seeds included) is too similar.

    seeds = p.read_jsonl("seed_tasks.jsonl")
    novel = generated.apply(NoveltyFilter(column="instruction", threshold=0.7), seeds)

Scores are exactly those of the ``rouge-score`` package, which the paper's code uses
(``RougeScorer(["rougeL"], use_stemmer=False)``, ``score(new, old)["rougeL"].fmeasure``): its
tokens (lower case, runs of ASCII letters and digits) and its floating-point F. A row is rejected
when its F against some kept text is strictly above ``threshold`` and kept when it is at most
``threshold``, as in the paper's code (``if max(rouge_scores) > 0.7: continue``; the paper's text
says "less than 0.7"). The comparisons are not pairwise: ``NoveltyIndex`` in the text kernel
(``operators/text.py``) prunes, provably without a miss, the texts that cannot reach the threshold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operator import Context, Kind, Operator, Result, rejects_frame
from dataflow.operators.columns import column_text
from dataflow.operators.text import NoveltyIndex, rouge_tokens

_DETAIL_CHARS = 100


@dataclass(frozen=True)
class NoveltyFilter(Operator):
    """Keeps a row when its ``column`` has ROUGE-L F at most ``threshold`` against every text of the
    pool and every row kept before it; the others go to rejects (reason ``not_novel``).

    The pool is an optional second input: its ``pool_column`` (default: ``column``), e.g. the seed
    tasks. Pool texts are not filtered among themselves. Rows are taken in the order of their ids
    (the result does not depend on the input's row order); kept rows leave in their input order.
    A reject's score is its ROUGE-L F to the most similar kept text (the earliest among equals:
    pool first, in id order, then kept rows in id order); its detail names that text (``similar_to``:
    its id, ``from``: ``pool`` or ``input``, ``text``: its first 100 characters) and the F rounded
    (``rouge_l``). Null and empty texts, and texts without an ASCII letter or digit, have no token:
    their F with anything is 0, so they are kept (counted in the metric ``no_tokens``).
    """

    column: str = "instruction"
    threshold: float = 0.7
    pool_column: str | None = None
    inputs_count = -1
    kind = Kind.GLOBAL

    def required_columns(self) -> dict[str, Any]:
        return {self.column: None}

    def check(self) -> list[str]:
        return [] if 0 < self.threshold < 1 else [f"threshold must be between 0 and 1, not {self.threshold}"]

    def output_schema(self, schema: pl.Schema, *pool: pl.Schema) -> pl.Schema:
        if len(pool) > 1:
            raise ValueError(f"takes the rows and at most one pool node, was given {1 + len(pool)} inputs")
        column = self.pool_column or self.column
        if pool and column not in pool[0]:
            raise KeyError(f"pool column '{column}' not found in the second input (the pool); it has: "
                           f"{', '.join(pool[0])}. Set pool_column= to one of them")
        return schema

    def apply(self, frame: pl.LazyFrame, *pool: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        rows = texts_by_id(table, self.column)
        pool_rows = texts_by_id(pool[0].collect(), self.pool_column or self.column) if pool else []
        index = NoveltyIndex(self.threshold, corpus=[text for _, text in pool_rows + rows])
        origins: list[tuple[str, str]] = []  # (id, "pool" or "input") of each index position
        for id_, text in pool_rows:
            index.add(text)
            origins.append((id_, "pool"))
        rejects: list[dict[str, Any]] = []
        for done, (id_, text) in enumerate(rows, 1):
            match = index.too_similar(text)
            if match is not None:
                similar_id, origin = origins[match.index]
                rejects.append({"id": id_, "reason": "not_novel", "score": match.score, "detail": json.dumps(
                    {"similar_to": similar_id, "from": origin, "text": shortened(match.text),
                     "rouge_l": round(match.score, 4)}, ensure_ascii=False)})
            else:
                index.add(text)
                origins.append((id_, "input"))
            if done % 1000 == 0:
                ctx.progress(1000)
        ctx.progress(table.height % 1000)
        ctx.record("pool_size", len(pool_rows))
        ctx.record("no_tokens", sum(1 for _, text in rows if not rouge_tokens(text)))
        ctx.record("candidates_checked", index.candidates_checked)
        rejected = pl.Series([r["id"] for r in rejects], dtype=pl.String)
        return Result(table.filter(~pl.col("id").is_in(rejected.implode())), rejects_frame(rejects))


def texts_by_id(table: pl.DataFrame, column: str) -> list[tuple[str, str]]:
    """(id, text view of ``column``, nulls as empty) of every row, in id order."""
    return table.select("id", column_text(column, table.schema[column]).fill_null("")).sort("id").rows()


def shortened(text: str) -> str:
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS - 3] + "..."
