"""Magpie (Xu et al. 2024): an aligned model given only its chat template's text before a user
turn writes a user query itself; a second pass answers it. Queries are deduplicated (exact after
normalization, and ROUGE-L near duplicates) between the passes, so no answer is paid for twice."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.errors import DataflowError
from dataflow.fingerprint import digest
from dataflow.llm import pre_query_text, resolve_spec
from dataflow.llm.backends.registry import backend_type
from dataflow.operator import Context, Rejection, Result, rejects_frame
from dataflow.operators.generation.base import Ask, Reply, reject_row
from dataflow.operators.generation.replies import OneModel, record_diversity, whole_answer
from dataflow.operators.text import NoveltyIndex
from dataflow.schemas import MESSAGES

TEMPLATE_TEXT = re.compile(r"<\|[a-z_]+\|>|\[/?INST\]|</s>|<s>")  # chat-template markup: a query that ran past its turn
PRE_QUERY_HELP = ("give pre_query: the text the model's chat template writes before a user's message, e.g. "
                  "'<|im_start|>user\\n' for ChatML models")


@dataclass(frozen=True, kw_only=True)
class Magpie(OneModel):
    """Instructions and responses with no seed data: each input row asks ``per_row`` queries.

    Pass 1 sends the raw pre-query text (``pre_query``, else the model's own chat template with the
    row's ``system`` column, when given, as the system turn) and samples ``per_row`` completions
    at ``temperature`` (seeded per row, so rows that send the same text get other queries): each
    is a user query. Queries that are empty, shorter than ``min_words``, cut by ``max_tokens`` or
    holding chat-template markup (``<|im_end|>``: the model wrote past its turn) are asked again;
    a row's samples still invalid after ``max_attempts`` are rejects with the last reason. So are
    duplicates of an earlier query (exact after normalization: ``duplicate``; ROUGE-L above
    ``near_threshold``: ``near_duplicate``, the detail naming the earlier one). Pass 2 answers each
    query at ``response_temperature``; an answer that is empty or cut by ``response_tokens`` is
    asked again, then rejected. Output: ``instruction``, ``response``, ``messages`` (the SFT
    conversation), ``source_id``; id ``<row id>/<k>``.
    """

    per_row: int = 4
    system: str | None = None
    pre_query: str | None = None
    temperature: float = 1.0
    max_tokens: int = 128
    response_temperature: float = 0.7
    response_tokens: int = 256
    min_words: int = 3
    near_threshold: float = 0.7

    def label(self) -> str:
        return "magpie"

    def check(self) -> list[str]:
        problems = super().check()
        if self.pre_query is None and not problems and backend_type(resolve_spec(self.model)).model_dir is None:
            problems.append(f"the model {self.model!r} has no chat template here (a server): {PRE_QUERY_HELP}")
        problems += self.not_positive("per_row", "response_tokens")
        if not 0 < self.near_threshold <= 1:
            problems.append(f"near_threshold must be in (0, 1] (a ROUGE-L F), not {self.near_threshold}")
        if not 0 <= self.response_temperature <= 5:
            problems.append(f"response_temperature must be between 0 and 5, not {self.response_temperature}")
        problems += self.negative("min_words")
        if self.pre_query is not None and not self.pre_query:
            problems.append(f"pre_query is empty: {PRE_QUERY_HELP}, or leave it out to use the model's template")
        return problems

    def required_columns(self) -> dict[str, Any]:
        return {self.system: str} if self.system else {}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({"id": pl.String(), "instruction": pl.String(), "response": pl.String(), "messages": MESSAGES,
                          "source_id": pl.String()})

    def prefix(self, system: str | None) -> str:
        """The raw text pass 1 continues."""
        if self.pre_query is not None:
            return self.pre_query
        text = pre_query_text(self.model, system)
        if text is None:
            raise DataflowError(f"Magpie: {PRE_QUERY_HELP}")
        return text

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        ctx.record("model", self.model)
        rows = {row["id"]: row for row in table.iter_rows(named=True)}
        asks = {(row_id, ""): Ask((), self.per_row, prompt=self.prefix(row.get(self.system) if self.system else None),
                                  seed=int(digest([self.seed, row_id], 8), 16) >> 1)
                for row_id, row in rows.items()}
        queried = self.ask(asks, rows, ctx, parse=self._query, progress=False)
        rejects, queries = [], []
        seen: dict[str, str] = {}
        index, kept_ids = NoveltyIndex(self.near_threshold), []
        for row_id in rows:
            try:
                found = queried.replies(row_id)
            except Rejection as rejection:
                rejects.append(reject_row(row_id, rejection))
                continue
            problem = queried.problems.get((row_id, ""), Rejection("no_reply", "too few completions came back"))
            rejects += [reject_row(f"{row_id}/{k}", problem) for k in range(len(found), self.per_row)]
            for k, query in enumerate(found):
                query_id, text = f"{row_id}/{k}", query["instruction"]
                key = " ".join(re.findall(r"\w+", text.lower()))
                similar = None if key in seen else index.too_similar(text)
                if key in seen:
                    rejects.append({"id": query_id, "reason": "duplicate", "detail": f"the same query as {seen[key]}"})
                elif similar is not None:
                    rejects.append({"id": query_id, "reason": "near_duplicate", "detail": json.dumps(
                        {"most_similar": kept_ids[similar.index], "rouge_l": round(similar.score, 4)})})
                else:
                    seen[key] = query_id
                    index.add(text)
                    kept_ids.append(query_id)
                    queries.append({"id": query_id, "instruction": text, "source_id": row_id,
                                    "system": rows[row_id].get(self.system) if self.system else None})
        ctx.record("queries_kept", len(queries))
        by_id = {q["id"]: q for q in queries}
        answered = self.ask({(q["id"], ""): Ask(self._turns(q), temperature=self.response_temperature,
                                                max_tokens=self.response_tokens) for q in queries}, by_id, ctx,
                            parse=self._response)
        made = []
        for q in queries:
            try:
                response = answered.replies(q["id"])[0]["response"]
            except Rejection as rejection:
                rejects.append(reject_row(q["id"], rejection))
                continue
            turns = [{"role": r, "content": c} for r, c in (*self._turns(q), ("assistant", response))]
            made.append({"id": q["id"], "instruction": q["instruction"], "response": response, "messages": turns,
                         "source_id": q["source_id"]})
        record_diversity(ctx, [m["instruction"] for m in made])
        return Result(pl.DataFrame(made, schema=self.output_schema(table.schema)), rejects_frame(rejects))

    def _turns(self, query: dict) -> tuple[tuple[str, str], ...]:
        system = (("system", query["system"]),) if query["system"] else ()
        return (*system, ("user", query["instruction"]))

    def _response(self, reply: Reply, row: dict) -> dict[str, Any]:
        return {"response": whole_answer(reply, f"response_tokens ({self.response_tokens})")}

    def _query(self, reply: Reply, row: dict) -> dict[str, Any]:
        text = reply.text.strip()
        if reply.finish_reason == "length":
            raise Rejection("truncated_query", f"the query did not end within {self.max_tokens} tokens: {text[:200]!r}")
        if len(text.split()) < self.min_words:
            raise Rejection("bad_query", f"fewer than {self.min_words} words: {text[:200]!r}")
        markup = TEMPLATE_TEXT.search(text)
        if markup:
            raise Rejection("template_text", f"the query holds chat-template markup {markup.group()!r} (the model "
                                             f"wrote past its turn): {text[:200]!r}")
        return {"instruction": text}
