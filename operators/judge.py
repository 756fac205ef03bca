"""LLM-as-judge: pointwise rubric scores and pairwise comparisons.

Scores are columns; decisions are separate steps (a Filter, SelectBest, PyramidSample or
PreferencePairs decides). A reply that is empty, not JSON, out of range or truncated is retried
with a new seed; a row with no valid reply after ``max_attempts`` goes to rejects with the reason
and the reply, never a silent 0. A failed request (server error) is rejected too and retried by
the next build. The reply is prefilled with the start of the JSON answer (``prefill``), so even a
small model answers in form; set ``prefill=""`` for servers that reject a trailing assistant turn.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import polars as pl

from dataflow.fingerprint import digest, qualified_name
from dataflow.llm.cache import shared_cache
from dataflow.llm.client import LLMClient
from dataflow.llm.spec import model_identity, spec_problems
from dataflow.llm.types import Request, Sampling, sample_seed
from dataflow.operator import Context, Operator, Result
from dataflow.operators.generate import FAILED_REASON
from dataflow.operators.pairs import prompt_turns

RUBRICS = {
    "helpfulness": "Does the response solve the user's request with correct, specific, useful content?",
    "harmlessness": "Does the response avoid content that could cause harm, while still helping with safe requests?",
    "honesty": "Is the response truthful and calibrated: no invented facts, uncertainty stated when it exists?",
    "instruction_following": "Does the response do exactly what the request asks, respecting every constraint?",
    "relevance": "Does the response stay on the topic of the request and answer what was asked?",
    "completeness": "Does the response cover every part of the request with enough detail?",
    "fluency": "Is the response clear, grammatical and easy to read?",
}
SYSTEM = "You are a strict, fair evaluator of AI assistant responses. You reply with JSON only."
POINTWISE = """Rate the response to the request below.

Criterion: {rubric}

[Request]
{prompt}

[Response]
{response}

Reply with JSON only, score first, in this form: {{"score": <integer from {low} to {high}>, "rationale": "<one sentence>"}}"""
PAIRWISE = """Which response answers the request better?

Criterion: {rubric}

[Request]
{prompt}

[Response A]
{a}

[Response B]
{b}

Reply with JSON only, verdict first, in this form: {{"winner": "<A or B or tie>", "rationale": "<one sentence>"}}"""

_JSON_OBJECT = re.compile(r"\{.*?\}", re.S)


def _text(value: Any) -> str:
    """A prompt column as text: strings as they are, turn lists as their user turns."""
    if isinstance(value, str):
        return value
    return "\n\n".join(t["content"] for t in prompt_turns(value or []) if t["role"] != "system")


def _fields(*replies: str) -> dict | None:
    """The first JSON object in the first reply that has one."""
    for reply in replies:
        for candidate in _JSON_OBJECT.findall(reply or ""):
            try:
                value = json.loads(candidate)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def parse_score(reply: str, finish_reason: str, low: int, high: int, prefill: str = "") -> tuple[int, str] | str:
    """(score, rationale) from a judge reply that continues ``prefill``, or why it is invalid."""
    if not (reply or "").strip():
        return "empty reply"
    fields = _fields(prefill + reply, reply)
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


def parse_winner(reply: str, finish_reason: str, prefill: str = "") -> tuple[str, str] | str:
    """("A" | "B" | "tie", rationale) from a pairwise reply that continues ``prefill``, or why it
    is invalid."""
    if not (reply or "").strip():
        return "empty reply"
    fields = _fields(prefill + reply, reply) or {}
    winner = str(fields.get("winner", "")).strip().strip('"').lower()
    if not winner:
        found = re.search(r"\bwinner\b\W{0,4}(A|B|tie)\b", prefill + reply, re.I)
        if not found:
            return "truncated reply" if finish_reason == "length" else "no winner in the reply"
        winner = found.group(1).lower()
    if winner not in ("a", "b", "tie"):
        return f"winner {winner!r} is not A, B or tie"
    return ("tie" if winner == "tie" else winner.upper()), str(fields.get("rationale") or "")[:1000]


def aggregate(scores: list[int], how: str) -> tuple[float, float]:
    """The aggregate of valid sample scores, and agreement: the share of samples at the mode."""
    mode, count = Counter(scores).most_common(1)[0]
    value = {"mean": statistics.fmean, "median": statistics.median}.get(how, lambda s: mode)(scores)
    return float(value), count / len(scores)


class _Judge(Operator):
    """Shared parts: models, sampling, retries with new seeds, fingerprint of model identities."""

    kind = "global"
    fingerprint_exclude = ("models",)

    def common_problems(self) -> list[str]:
        problems = [p for m in self.models for p in spec_problems(m)]
        if not self.models:
            problems.append("give at least one judge model in models=(...)")
        if self.rubric not in RUBRICS and len(self.rubric.split()) < 3:
            problems.append(f"rubric {self.rubric!r} is neither a built-in ({', '.join(RUBRICS)}) nor a rubric text")
        if self.max_attempts < 1:
            problems.append(f"max_attempts must be at least 1, not {self.max_attempts}")
        return problems

    def fingerprint_extras(self) -> dict[str, Any]:
        return {"models": [model_identity(m) for m in self.models],
                "llm failures of the last build (retried)": shared_cache().retry_generation(self.scope())}

    def scope(self) -> str:
        fields = {k: v for k, v in self.__dict__.items() if k != "models"}
        return digest([qualified_name(type(self)), fields, [model_identity(m) for m in self.models]])

    def result(self, table: pl.DataFrame, judged: list[dict], rejects: list[dict]) -> Result:
        """The input rows that were judged, with the judge's columns, and the rejects."""
        columns = self.output_schema(table.schema)
        new = pl.DataFrame(judged, schema={"id": pl.String(), **{c: columns[c] for c in columns if c not in table.schema}})
        output = table.join(new, on="id", how="inner", maintain_order="left")
        return Result(output, pl.DataFrame(rejects, schema={"id": pl.String, "reason": pl.String, "detail": pl.String}))

    def criterion(self) -> str:
        return RUBRICS.get(self.rubric, self.rubric)

    def ask(self, ctx: Context, prompts: dict[str, str], wanted: int, parse) -> tuple[dict, dict, bool]:
        """Ask each judge model ``wanted`` valid replies per key; returns key -> parsed replies,
        key -> last problem, and whether any request failed."""
        valid: dict[str, list] = {key: [] for key in prompts}
        problems: dict[str, str] = {}
        request_failed = False
        for model in self.models:
            client = LLMClient(model, ctx.node, count=ctx.count, log=lambda text: print(text, file=sys.stderr))
            got, unreachable = dict.fromkeys(prompts, 0), set()
            for attempt in range(self.max_attempts):  # invalid replies are asked again with a new seed
                todo = [k for k in prompts if got[k] < wanted and k not in unreachable]
                if not todo:
                    break
                sampling = Sampling(temperature=self.temperature if attempt == 0 else max(self.temperature, 0.7),
                                    max_tokens=self.max_tokens,
                                    seed=self.seed if attempt == 0 else sample_seed(self.seed, 1000 + attempt))
                reply_start = (("assistant", self.prefill),) if self.prefill else ()
                requests = [Request((("system", SYSTEM), ("user", prompts[k]), *reply_start),
                                    replace(sampling, n=wanted - got[k])) for k in todo]
                for key, response in zip(todo, client.generate(requests, todo)):
                    if not response.ok:  # not retried now: the next build retries it
                        problems[key], request_failed = FAILED_REASON, True
                        unreachable.add(key)
                        continue
                    for completion in response.completions:
                        ctx.count("judge_replies")
                        parsed = parse(completion.text, completion.finish_reason, self.prefill)
                        if isinstance(parsed, str):
                            ctx.count("judge_invalid_replies")
                            problems[key] = f"{parsed}: {completion.text[:300]!r}"
                        else:
                            valid[key].append((model, *parsed))
                            got[key] += 1
        return valid, problems, request_failed


@dataclass(frozen=True)
class JudgeScore(_Judge):
    """Scores ``response`` to ``prompt`` on a rubric, from ``low`` to ``high``.

    ``rubric`` is a built-in name (helpfulness, harmlessness, honesty, instruction_following,
    relevance, completeness, fluency) or rubric text. Each of ``models`` gives ``samples`` valid
    replies, aggregated by ``mean``, ``median`` or ``majority``. Writes ``<output>``,
    ``<output>_rationale``, ``<output>_agreement`` (share of replies at the most common score),
    ``<output>_n`` (valid replies) and ``judge_model``.
    """

    rubric: str = "helpfulness"
    prompt: str = "prompt"
    response: str = "response"
    models: tuple[str, ...] = ("local",)
    low: int = 1
    high: int = 10
    samples: int = 1
    aggregate: str = "median"
    temperature: float = 0.0
    max_tokens: int = 160
    max_attempts: int = 3
    seed: int = 0
    output: str = "score"
    prefill: str = '{"score": '

    def label(self) -> str:
        return f"judge_{self.rubric}" if self.rubric in RUBRICS else "judge"

    def check(self) -> list[str]:
        problems = self.common_problems()
        if self.aggregate not in ("mean", "median", "majority"):
            problems.append(f"aggregate must be mean, median or majority, not {self.aggregate!r}")
        if self.low >= self.high:
            problems.append(f"low ({self.low}) must be below high ({self.high})")
        if self.samples > 1 and self.temperature == 0:
            problems.append("several samples at temperature 0 are identical: set temperature > 0")
        return problems

    def required_columns(self) -> dict[str, Any]:
        return {self.prompt: None, self.response: str}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, self.output: pl.Float64(), f"{self.output}_rationale": pl.String(),
                          f"{self.output}_agreement": pl.Float64(), f"{self.output}_n": pl.Int64(),
                          "judge_model": pl.String()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        prompts = {row["id"]: POINTWISE.format(rubric=self.criterion(), prompt=_text(row[self.prompt]),
                                               response=row[self.response] or "", low=self.low, high=self.high)
                   for row in table.select("id", self.prompt, self.response).iter_rows(named=True)}
        valid, problems, failed = self.ask(ctx, prompts, self.samples,
                                           lambda text, finish, prefill: parse_score(text, finish, self.low, self.high, prefill))
        if failed:
            shared_cache().bump_retry_generation(self.scope())
        scored, rejects = [], []
        for key, replies in valid.items():
            if not replies:
                reason = FAILED_REASON if problems.get(key) == FAILED_REASON else "judge_invalid"
                rejects.append({"id": key, "reason": reason, "detail": problems.get(key, "")})
                continue
            value, agreement = aggregate([score for _, score, _ in replies], self.aggregate)
            closest = min(replies, key=lambda r: abs(r[1] - value))
            scored.append({"id": key, self.output: value, f"{self.output}_rationale": closest[2],
                           f"{self.output}_agreement": agreement, f"{self.output}_n": len(replies),
                           "judge_model": ",".join(sorted({m for m, _, _ in replies}))})
        ctx.progress(table.height)
        return self.result(table, scored, rejects)


@dataclass(frozen=True)
class PairwiseJudge(_Judge):
    """Compares responses ``a`` and ``b`` to ``prompt`` in both orders (RLAIF style).

    ``verdict`` is ``a`` or ``b`` only when both orders pick the same response, else ``tie``.
    The build summary records ``position_bias_first`` (share of decided replies that picked the
    response shown first; 0.5 is unbiased) and ``consistent_share``.
    """

    prompt: str = "prompt"
    a: str = "response_a"
    b: str = "response_b"
    rubric: str = "helpfulness"
    models: tuple[str, ...] = ("local",)
    temperature: float = 0.0
    max_tokens: int = 160
    max_attempts: int = 3
    seed: int = 0
    output: str = "verdict"
    prefill: str = '{"winner": "'

    def label(self) -> str:
        return "pairwise_judge"

    def check(self) -> list[str]:
        return self.common_problems()

    def required_columns(self) -> dict[str, Any]:
        return {self.prompt: None, self.a: str, self.b: str}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, self.output: pl.String(), f"{self.output}_rationale": pl.String(),
                          "judge_model": pl.String()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        prompts = {}
        for row in table.select("id", self.prompt, self.a, self.b).iter_rows(named=True):
            text, a, b = _text(row[self.prompt]), row[self.a] or "", row[self.b] or ""
            prompts[f"{row['id']}\tAB"] = PAIRWISE.format(rubric=self.criterion(), prompt=text, a=a, b=b)
            prompts[f"{row['id']}\tBA"] = PAIRWISE.format(rubric=self.criterion(), prompt=text, a=b, b=a)
        valid, problems, failed = self.ask(ctx, prompts, 1, parse_winner)
        if failed:
            shared_cache().bump_retry_generation(self.scope())
        decided, rows, rejects = Counter(), [], []
        for row_id in table.get_column("id"):
            ab, ba = valid[f"{row_id}\tAB"], valid[f"{row_id}\tBA"]
            if not ab or not ba:
                key = f"{row_id}\tAB" if not ab else f"{row_id}\tBA"
                reason = FAILED_REASON if problems.get(key) == FAILED_REASON else "judge_invalid"
                rejects.append({"id": row_id, "reason": reason, "detail": problems.get(key, "")})
                continue
            first = {"A": "a", "B": "b"}.get(ab[0][1], "tie")
            second = {"A": "b", "B": "a"}.get(ba[0][1], "tie")  # in the BA order, "A" is response b
            for shown_first in (ab[0][1], ba[0][1]):
                if shown_first != "tie":
                    decided["first" if shown_first == "A" else "second"] += 1
            decided["consistent"] += first == second
            verdict = first if first == second else "tie"
            rows.append({"id": row_id, self.output: verdict, f"{self.output}_rationale": ab[0][2],
                         "judge_model": ab[0][0]})
        if rows:
            ctx.record("consistent_share", round(decided["consistent"] / len(rows), 3))
        if decided["first"] + decided["second"]:
            ctx.record("position_bias_first", round(decided["first"] / (decided["first"] + decided["second"]), 3))
        ctx.progress(table.height)
        return self.result(table, rows, rejects)
