"""Pairwise LLM-as-judge: which of two responses is better, asked in both orders, with the
judge's probability of each where the backend gives token probabilities."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operator import Context, Result
from dataflow.operators.generation.base import Ask, Reply, prompt_text, reply_fields
from dataflow.operators.judging.base import Judge, value_choice

PAIRWISE = """Which response answers the request better?

Criterion: {rubric}

[Request]
{prompt}

[Response A]
{a}

[Response B]
{b}

Reply with JSON only, verdict first, in this form: {{"winner": "<A or B or tie>", "rationale": "<one sentence>"}}"""


def parse_winner(reply: str, finish_reason: str) -> tuple[str, str] | str:
    """("A" | "B" | "tie", rationale) from a pairwise reply, or why it is invalid."""
    if not (reply or "").strip():
        return "empty reply"
    fields = reply_fields(reply) or {}
    winner = str(fields.get("winner", "")).strip().strip('"').lower()
    if not winner:
        found = re.search(r"\bwinner\b\W{0,4}(A|B|tie)\b", reply, re.I)
        if not found:
            return "truncated reply" if finish_reason == "length" else "no winner in the reply"
        winner = found.group(1).lower()
    if winner not in ("a", "b", "tie"):
        return f"winner {winner!r} is not A, B or tie"
    return ("tie" if winner == "tie" else winner.upper()), str(fields.get("rationale") or "")[:1000]


def first_shown_wins(reply: Reply) -> float | None:
    """The judge's probability that the response shown first (A) is the better one, against the
    second (B), where its reply wrote the winner; None without probabilities there."""
    choice = value_choice(reply, "winner")
    if choice is None:
        return None
    a = sum(p for text, p in choice.alternatives.items() if text.startswith("A"))
    b = sum(p for text, p in choice.alternatives.items() if text.startswith("B"))
    return a / (a + b) if a + b > 0 else None


_COUNTS = ("__first_shown_won", "__second_shown_won", "__orders_agree", "__pairs_judged")


@dataclass(frozen=True, kw_only=True)
class PairwiseJudge(Judge):
    """Compares responses ``a`` and ``b`` to ``prompt`` in both orders (RLAIF style).

    ``verdict`` is ``a`` or ``b`` only when both orders pick the same response, else ``tie``.
    With ``weighted`` and token probabilities from the backend, ``<output>_p_a_first`` and
    ``<output>_p_a_second`` are the judge's probability that ``a`` is better with ``a`` shown first
    and second, and ``<output>_p_a`` their mean (position bias cancels out); null otherwise. The
    build summary records ``position_bias_first`` (share of decided replies that picked the
    response shown first; 0.5 is unbiased) and ``consistent_share``.
    """

    prompt: str = "prompt"
    a: str = "response_a"
    b: str = "response_b"
    output: str = "verdict"

    def label(self) -> str:
        return "pairwise_judge"

    def reply_schema(self) -> dict:
        return {"type": "object", "properties": {"winner": {"enum": ["A", "B", "tie"]},
                                                 "rationale": {"type": "string"}},
                "required": ["winner", "rationale"], "additionalProperties": False}


    def required_columns(self) -> dict[str, Any]:
        return {self.prompt: None, self.a: str, self.b: str}

    def generated_columns(self) -> dict[str, pl.DataType]:
        o = self.output
        return {o: pl.String(), f"{o}_p_a": pl.Float64(), f"{o}_p_a_first": pl.Float64(),
                f"{o}_p_a_second": pl.Float64(), f"{o}_rationale": pl.String(), "judge_model": pl.String()}

    def asks(self, row: dict) -> dict[str, Ask]:
        text, a, b = prompt_text(row[self.prompt]), row[self.a] or "", row[self.b] or ""
        return {"AB": Ask(self.judge_messages(PAIRWISE.format(rubric=self.criterion(), prompt=text, a=a, b=b))),
                "BA": Ask(self.judge_messages(PAIRWISE.format(rubric=self.criterion(), prompt=text, a=b, b=a)))}

    def read(self, reply: Reply) -> dict[str, Any] | str:
        found = parse_winner(reply.text, reply.finish_reason)
        if isinstance(found, str):
            return found
        return {"value": found[0], "rationale": found[1],
                "first_wins": first_shown_wins(reply) if self.weighted else None}

    def rows(self, row: dict, replies: dict[str, list[dict]], ctx: Context) -> list[dict]:
        ab, ba = replies["AB"][0], replies["BA"][0]
        first = {"A": "a", "B": "b"}.get(ab["value"], "tie")
        second = {"A": "b", "B": "a"}.get(ba["value"], "tie")  # in the BA order, "A" is response b
        for shown_first in (ab["value"], ba["value"]):
            if shown_first != "tie":
                ctx.count(_COUNTS[0] if shown_first == "A" else _COUNTS[1])
        ctx.count(_COUNTS[2], int(first == second))
        ctx.count(_COUNTS[3])
        p_first = ab["first_wins"]
        p_second = None if ba["first_wins"] is None else 1 - ba["first_wins"]
        both = None if p_first is None or p_second is None else (p_first + p_second) / 2
        o = self.output
        return [{"id": row["id"], o: first if first == second else "tie", f"{o}_p_a": both,
                 f"{o}_p_a_first": p_first, f"{o}_p_a_second": p_second,
                 f"{o}_rationale": ab["rationale"], "judge_model": ab["model"]}]

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        result = super().apply(frame, ctx)
        first, second, agree, judged = (ctx.metrics.pop(name, 0) for name in _COUNTS)
        if judged:
            ctx.record("consistent_share", round(agree / judged, 3))
        if first + second:
            ctx.record("position_bias_first", round(first / (first + second), 3))
        return result
