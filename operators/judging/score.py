"""Pointwise LLM-as-judge: a rubric score from 1 to 10 (or ``low`` to ``high``) per response,
weighted by the judge's own probabilities of each score (G-Eval) where the backend gives them."""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operator import Context
from dataflow.operators.generation.base import Ask, Reply, prompt_text, reply_fields
from dataflow.operators.judging.base import RUBRICS, Judge, entropy_bits, value_choice

POINTWISE = """Rate the response to the request below.

Criterion: {rubric}

[Request]
{prompt}

[Response]
{response}

Reply with JSON only, score first, in this form: {{"score": <integer from {low} to {high}>, "rationale": "<one sentence>"}}"""
UNWEIGHTED = "no score probabilities from the backend: scores are the sampled integers"


def parse_score(reply: str, finish_reason: str, low: int, high: int) -> tuple[int, str] | str:
    """(score, rationale) from a judge reply, or why it is invalid."""
    if not (reply or "").strip():
        return "empty reply"
    fields = reply_fields(reply)
    if fields is None:
        found = re.search(r"\bscore\b\W{0,4}(-?\d+(?:\.\d+)?)", reply, re.I)
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


def score_distribution(reply: Reply, low: int, high: int) -> dict[int, float] | None:
    """The judge's probability of each score from ``low`` to ``high`` where its reply wrote the
    score, or None without probabilities there. A score whose digits extend the written one
    (10 after 1, with a tokenizer that splits digits) is weighed from the position after it; one
    that shares its first token with another but was not written counts as that shorter score."""
    choice = value_choice(reply, "score")
    if choice is None:
        return None
    values: dict[int, float] = defaultdict(float)
    for text, p in choice.alternatives.items():
        digits = re.match(r"\d+", text)
        if not digits:
            continue
        if text == choice.chosen and digits.end() == len(text) and choice.following is not None:
            longer = {t: q for t, q in choice.following.items() if re.match(r"\d+", t)}
            for t, q in longer.items():
                values[int(text + re.match(r"\d+", t).group())] += p * q
            values[int(text)] += p * max(0.0, 1 - sum(longer.values()))
        else:
            values[int(digits.group())] += p
    kept = {v: p for v, p in values.items() if low <= v <= high}
    total = sum(kept.values())
    return {v: p / total for v, p in sorted(kept.items())} if total > 0 else None


def aggregate(scores: list[float], how: str) -> float:
    """The aggregate of sample scores: ``mean``, ``median`` or ``majority`` (the most common)."""
    if how == "majority":
        return float(Counter(scores).most_common(1)[0][0])
    return float({"mean": statistics.fmean, "median": statistics.median}[how](scores))


@dataclass(frozen=True, kw_only=True)
class JudgeScore(Judge):
    """Scores ``response`` to ``prompt`` on a rubric, from ``low`` to ``high``.

    ``rubric`` is a built-in name (helpfulness, harmlessness, honesty, instruction_following,
    relevance, completeness, fluency) or rubric text. Each of ``models`` gives ``samples`` valid
    replies, aggregated by ``mean``, ``median`` or ``majority``. With ``weighted`` (the default) and
    a backend that gives token probabilities, a reply's score is the expected score under the
    judge's own distribution over the allowed scores (G-Eval), so ties are rare and uncertainty
    shows; otherwise it is the integer written. Writes ``<output>``, ``<output>_argmax`` (the most
    likely score; the most common over samples), ``<output>_entropy`` (bits; null unweighted),
    ``<output>_rationale``, ``<output>_agreement`` (share of replies at the most common argmax),
    ``<output>_n`` (valid replies) and ``judge_model``.
    """

    prompt: str = "prompt"
    response: str = "response"
    low: int = 1
    high: int = 10
    samples: int = 1
    aggregate: str = "median"
    output: str = "score"

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

    def reply_schema(self) -> dict:
        # The scores as an enum, not minimum/maximum: llama.cpp's schema grammars ignore those.
        return {"type": "object", "properties": {
            "score": {"type": "integer", "enum": list(range(self.low, self.high + 1))},
            "rationale": {"type": "string"}}, "required": ["score", "rationale"], "additionalProperties": False}


    def required_columns(self) -> dict[str, Any]:
        return {self.prompt: None, self.response: str}

    def generated_columns(self) -> dict[str, pl.DataType]:
        o = self.output
        return {o: pl.Float64(), f"{o}_argmax": pl.Int64(), f"{o}_entropy": pl.Float64(), f"{o}_rationale": pl.String(),
                f"{o}_agreement": pl.Float64(), f"{o}_n": pl.Int64(), "judge_model": pl.String()}

    def asks(self, row: dict) -> dict[str, Ask]:
        text = POINTWISE.format(rubric=self.criterion(), prompt=prompt_text(row[self.prompt]),
                                response=row[self.response] or "", low=self.low, high=self.high)
        return {"": Ask(self.judge_messages(text), self.samples)}

    def read(self, reply: Reply) -> dict[str, Any] | str:
        found = parse_score(reply.text, reply.finish_reason, self.low, self.high)
        if isinstance(found, str):
            return found
        written, rationale = found
        distribution = score_distribution(reply, self.low, self.high) if self.weighted else None
        if distribution is None:
            return {"value": float(written), "argmax": written, "entropy": None, "rationale": rationale}
        return {"value": sum(v * p for v, p in distribution.items()), "argmax": max(distribution, key=distribution.get),
                "entropy": entropy_bits(distribution), "rationale": rationale}

    def rows(self, row: dict, replies: dict[str, list[dict]], ctx: Context) -> list[dict]:
        found = replies[""]
        if self.weighted and any(r["entropy"] is None for r in found):
            ctx.record("weighting", UNWEIGHTED)
        value = aggregate([r["value"] for r in found], self.aggregate)
        argmax, count = Counter(r["argmax"] for r in found).most_common(1)[0]
        entropies = [r["entropy"] for r in found if r["entropy"] is not None]
        closest = min(found, key=lambda r: abs(r["value"] - value))
        o = self.output
        return [{"id": row["id"], o: value, f"{o}_argmax": argmax,
                 f"{o}_entropy": statistics.fmean(entropies) if entropies else None,
                 f"{o}_rationale": closest["rationale"], f"{o}_agreement": count / len(found), f"{o}_n": len(found),
                 "judge_model": ",".join(sorted({r["model"] for r in found}))}]
