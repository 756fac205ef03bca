"""Constitutional revision (Bai et al. 2022): a response is critiqued against a sampled principle,
then revised where the critique finds a violation. The revision is an SFT response and, with the
original, a preference pair (revision chosen); principle and critique are columns."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operator import Context, Rejection, Result, rejects_frame
from dataflow.operators.generation.base import Ask, Reply, prompt_text, reject_row
from dataflow.operators.generation.replies import (
    BOOLEAN,
    OneModel,
    empty_field,
    object_schema,
    reply_json,
    string_field,
)

PRINCIPLES = (
    "The response must not help with anything illegal, dangerous or harmful, and must say why it declines.",
    "The response must not contain insults, stereotypes or demeaning language about any person or group.",
    "The response must be honest: no invented facts, and uncertainty stated where it exists.",
    "The response must answer what was asked, completely, without unnecessary content.",
    "The response must respect privacy: no personal data about real people beyond what the user gave.",
    "The response must not manipulate or pressure the user, and must respect their autonomy.",
)
CRITIQUE = """Critique an AI assistant's response against one principle.

Principle: {principle}

[Request]
{prompt}

[Response]
{response}

Does the response violate the principle? If it does, say specifically how.
Reply with JSON: "violates" (true or false), then "critique" (what is wrong, or why it is fine)."""
REVISE = """Rewrite an AI assistant's response so that it follows the principle and fixes what the \
critique found, while still helping with the request as far as the principle allows.

Principle: {principle}

[Request]
{prompt}

[Response]
{response}

[Critique]
{critique}

Reply with JSON: "revision", the rewritten response."""


@dataclass(frozen=True, kw_only=True)
class ConstitutionalRevision(OneModel):
    """Critiques each row's ``response`` to ``prompt`` against one principle, drawn (seeded, per
    row) from ``principles`` (the built-in list ``PRINCIPLES``, plus ``extra_principles``), and
    revises it where the critique finds a violation. Output columns: ``principle``, ``critique``,
    ``violates``, ``revision`` (the revised response; the original where nothing was violated)
    and ``revised``. SFT rows: prompt + ``revision``; preference pairs: the ``revised`` rows with
    ``revision`` chosen and ``response`` rejected (``ToPreference(chosen="revision",
    rejected="response")``). A critique or revision that fails (a revision that repeats the response
    included) is a reject with its stage; so is a row with an empty prompt or response (``empty_field``).
    """

    prompt: str = "prompt"
    response: str = "response"
    principles: tuple[str, ...] = PRINCIPLES
    extra_principles: tuple[str, ...] = ()
    temperature: float = 0.3
    max_tokens: int = 400

    def label(self) -> str:
        return "constitutional_revision"

    def check(self) -> list[str]:
        problems = super().check()
        given = [*self.principles, *self.extra_principles]
        if isinstance(self.principles, str) or isinstance(self.extra_principles, str):
            problems.append("principles and extra_principles are tuples of texts, e.g. ('Be kind.',), not a string")
        elif not given or not all(isinstance(p, str) and p.strip() for p in given):
            problems.append(f"give at least one principle, each a non-empty text, not {given!r}")
        return problems

    def all_principles(self) -> tuple[str, ...]:
        return tuple(self.principles) + tuple(self.extra_principles)

    def required_columns(self) -> dict[str, Any]:
        return {self.prompt: None, self.response: str}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        made = {"principle": pl.String(), "critique": pl.String(), "violates": pl.Boolean(), "revision": pl.String(),
                "revised": pl.Boolean()}
        return pl.Schema({**{k: v for k, v in schema.items() if k not in made}, **made})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        ctx.record("model", self.model)
        rows, rejects = {}, []
        for row in table.iter_rows(named=True):
            request = prompt_text(row[self.prompt])
            empty = empty_field(row["id"], {self.prompt: request, self.response: row[self.response]})
            if empty:
                rejects.append(empty)
                continue
            rows[row["id"]] = {**row, "request": request,
                               "principle": random.Random(f"{self.seed}/{row['id']}").choice(self.all_principles())}
        critiques = self.ask({(row_id, ""): Ask((("user", CRITIQUE.format(
            principle=row["principle"], prompt=row["request"], response=row[self.response])),),
            json_schema=object_schema(violates=BOOLEAN, critique=string_field(1500)))
            for row_id, row in rows.items()}, rows, ctx, parse=_critique, progress=False)
        done = {}
        for row_id, row in rows.items():
            try:
                done[row_id] = {"principle": row["principle"], **critiques.replies(row_id)[0]}
            except Rejection as rejection:
                rejects.append(reject_row(row_id, Rejection(rejection.reason, f"critique: {rejection.detail}")))
        violating = {row_id: rows[row_id] for row_id, made in done.items() if made["violates"]}
        revisions = self.ask({(row_id, ""): Ask((("user", REVISE.format(
            principle=row["principle"], prompt=row["request"], response=row[self.response],
            critique=done[row_id]["critique"])),), json_schema=object_schema(revision=string_field(4000, min_length=1)))
            for row_id, row in violating.items()}, violating, ctx,
            parse=lambda reply, row: _revision(reply, row[self.response]), progress=False)
        for row_id in list(done):
            if row_id not in violating:
                done[row_id].update(revision=rows[row_id][self.response], revised=False)
                continue
            try:
                done[row_id].update(revision=revisions.replies(row_id)[0]["revision"], revised=True)
            except Rejection as rejection:
                rejects.append(reject_row(row_id, Rejection(rejection.reason, f"revision: {rejection.detail}")))
                del done[row_id]
        ctx.record("revised", sum(made["revised"] for made in done.values()))
        ctx.progress(table.height)
        new = pl.DataFrame([{"id": row_id, **made} for row_id, made in done.items()],
                           schema={"id": pl.String(), "principle": pl.String(), "critique": pl.String(),
                                   "violates": pl.Boolean(), "revision": pl.String(), "revised": pl.Boolean()})
        schema = self.output_schema(table.schema)
        kept = table.drop([c for c in new.columns if c != "id" and c in table.columns])
        output = kept.join(new, on="id", how="inner", maintain_order="left").select(list(schema))
        return Result(output, rejects_frame(rejects))


def _critique(reply: Reply, row: dict) -> dict[str, Any]:
    violates, critique = reply_json(reply, "violates"), reply_json(reply, "critique")
    if not isinstance(violates, bool) or not isinstance(critique, str):
        raise Rejection("bad_critique", f"the critique is not in form: {reply.text[:300]!r}")
    return {"violates": violates, "critique": critique.strip()}


def _revision(reply: Reply, original: str) -> dict[str, Any]:
    revision = reply_json(reply, "revision")
    if not isinstance(revision, str) or not revision.strip():
        raise Rejection("empty_revision", f"the revision is empty: {reply.text[:300]!r}")
    if revision.strip() == original.strip():
        raise Rejection("unchanged_revision", "the revision repeats the response it was to fix")
    return {"revision": revision.strip()}
