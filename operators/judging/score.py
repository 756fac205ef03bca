"""Pointwise LLM-as-judge: a rubric score from 1 to 10 (or ``low`` to ``high``) per response."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operator import Context
from dataflow.operators.generation.base import Ask, Reply
from dataflow.operators.judging.base import RUBRICS, Judge, prompt_text, reply_fields

POINTWISE = """Rate the response to the request below.

Criterion: {rubric}

[Request]
{prompt}

[Response]
{response}

Reply with JSON only, score first, in this form: {{"score": <integer from {low} to {high}>, "rationale": "<one sentence>"}}"""
def parse_score(reply: str, finish_reason: str, low: int, high: int, prefill: str = "") -> tuple[int, str] | str:
    """(score, rationale) from a judge reply that continues ``prefill``, or why it is invalid."""
    if not (reply or "").strip():
        return "empty reply"
    fields = reply_fields(prefill + reply, reply)
    if fields is None:
        found = re.search(r"\bscore\b\W{0,4}(-?\d+(?:\.\d+)?)", prefill + reply, re.I)
        if not found:
            return "truncated reply" if finish_reason == "length" else "no JSON score in the reply"
        fields = {"score": found.group(1), "rationale": reply.strip()}
    try:
        score = float(fields.get("score"))
    except (TypeError, ValueError):
        return f"score is not a number: {fields.get('score')!r}"
    if score != int(score) or not low <= score <= high:
        return f"score {fields.get('score')} is not an integer from {low} to {high}"
    return int(score), str(fields.get("rationale") or "")[:1000]


def aggregate(scores: list[int], how: str) -> tuple[float, float]:
    """The aggregate of valid sample scores, and agreement: the share of samples at the mode."""
    mode, count = Counter(scores).most_common(1)[0]
    value = {"mean": statistics.fmean, "median": statistics.median}.get(how, lambda s: mode)(scores)
    return float(value), count / len(scores)


@dataclass(frozen=True, kw_only=True)
class JudgeScore(Judge):
    """Scores ``response`` to ``prompt`` on a rubric, from ``low`` to ``high``.

    ``rubric`` is a built-in name (helpfulness, harmlessness, honesty, instruction_following,
    relevance, completeness, fluency) or rubric text. Each of ``models`` gives ``samples`` valid
    replies, aggregated by ``mean``, ``median`` or ``majority``. Writes ``<output>``,
    ``<output>_rationale``, ``<output>_agreement`` (share of replies at the most common score),
    ``<output>_n`` (valid replies) and ``judge_model``.
    """

    prompt: str = "prompt"
    response: str = "response"
    low: int = 1
    high: int = 10
    samples: int = 1
    aggregate: str = "median"
    output: str = "score"
    prefill: str = '{"score": '

    def label(self) -> str:
        return f"judge_{self.rubric}" if self.rubric in RUBRICS else "judge"

    def check(self) -> list[str]:
        problems = super().check()
        if self.aggregate not in ("mean", "median", "majority"):
            problems.append(f"aggregate must be mean, median or majority, not {self.aggregate!r}")
        if self.low >= self.high:
            problems.append(f"low ({self.low}) must be below high ({self.high})")
        if self.samples > 1 and self.temperature == 0:
            problems.append("several samples at temperature 0 are identical: set temperature > 0")
        return problems

    def required_columns(self) -> dict[str, Any]:
        return {self.prompt: None, self.response: str}

    def generated_columns(self) -> dict[str, pl.DataType]:
        return {self.output: pl.Float64(), f"{self.output}_rationale": pl.String(),
                f"{self.output}_agreement": pl.Float64(), f"{self.output}_n": pl.Int64(), "judge_model": pl.String()}

    def asks(self, row: dict) -> dict[str, Ask]:
        text = POINTWISE.format(rubric=self.criterion(), prompt=prompt_text(row[self.prompt]),
                                response=row[self.response] or "", low=self.low, high=self.high)
        return {"": Ask(self.judge_messages(text), self.samples)}

    def read(self, reply: Reply) -> tuple[int, str] | str:
        return parse_score(reply.text, reply.finish_reason, self.low, self.high, self.prefill)

    def rows(self, row: dict, replies: dict[str, list[dict]], ctx: Context) -> list[dict]:
        found = replies[""]
        value, agreement = aggregate([r["value"] for r in found], self.aggregate)
        closest = min(found, key=lambda r: abs(r["value"] - value))
        return [{"id": row["id"], self.output: value, f"{self.output}_rationale": closest["rationale"],
                 f"{self.output}_agreement": agreement, f"{self.output}_n": len(found),
                 "judge_model": ",".join(sorted({r["model"] for r in found}))}]
