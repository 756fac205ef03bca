"""What the LLM judges share: rubrics, the judge's system prompt, the probabilities of a reply's
field values, and the Judge base (models, rubric, the reply's JSON schema, invalid replies retried
then rejected).

Scores are columns; decisions are separate steps (a Filter, SelectBest, PyramidSample or
PreferencePairs decides). Every judge asks for its reply's JSON schema: the in-process backends
and vLLM constrain decoding to it, OpenAI-compatible servers get ``response_format``, so even a
small model answers in form. What still fails (a server without ``response_format``, a reply cut
at ``max_tokens`` before its verdict) is retried with a new seed; a row with no valid reply after
``max_attempts`` goes to rejects (reason ``judge_invalid``) with the reason and the reply, never a
silent 0. A failed request (server error) is rejected too and retried by the next build.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from dataflow.llm.types import Sampling, schema_text
from dataflow.operator import Rejection, identity_field
from dataflow.operators.generation.base import LLMOperator, Messages, Reply

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
# Alternatives per position for a weighted verdict: the OpenAI limit, since servers give them
# before the schema's mask, where other tokens may outrank the verdict's.
ALTERNATIVES = 20


@dataclass(frozen=True)
class ValueChoice:
    """What a judge could have written where a JSON field's value starts: each alternative text
    (from that point) with its probability, the text it did write, and the probabilities at the
    position after it (None at the end of the reply)."""

    alternatives: dict[str, float]
    chosen: str
    following: dict[str, float] | None


def value_choice(reply: Reply, key: str) -> ValueChoice | None:
    """The alternatives at the start of field ``key``'s value (a string's first character),
    from the reply's top log-probabilities; None when the reply has none or lacks the field."""
    if not reply.tokens or not reply.top_logprobs:
        return None
    joined = "".join(reply.tokens)
    found = re.search(rf'"{re.escape(key)}"\s*:\s*"?', joined)
    if not found:
        return None
    offset = 0
    for i, token in enumerate(reply.tokens):
        if offset + len(token) > found.end():  # token i holds the value's first character
            prefix = joined[offset:found.end()]
            alternatives = {text[len(prefix):]: math.exp(lp) for text, lp in reply.top_logprobs[i].items()
                            if text.startswith(prefix) and len(text) > len(prefix)}
            following = ({text: math.exp(lp) for text, lp in reply.top_logprobs[i + 1].items()}
                         if i + 1 < len(reply.top_logprobs) else None)
            return ValueChoice(alternatives, token[len(prefix):], following)
        offset += len(token)
    return None


def entropy_bits(distribution: dict[Any, float]) -> float:
    return -sum(p * math.log2(p) for p in distribution.values() if p > 0)


@dataclass(frozen=True, kw_only=True)
class Judge(LLMOperator):
    """Shared fields and rules of the judges: each of ``models`` judges every row on ``rubric``
    (a built-in name or rubric text) in the JSON form of ``reply_schema``; with ``weighted``, the
    verdict's token probabilities are asked too (``logprobs``) and weigh the verdict."""

    rubric: str = "helpfulness"
    models: tuple[str, ...] = identity_field(("local",))
    temperature: float = 0.0
    max_tokens: int = 160
    weighted: bool = True
    reply_metrics = "judge"

    def model_specs(self) -> tuple[str, ...]:
        return tuple(self.models)

    def check(self) -> list[str]:
        problems = super().check()
        if self.rubric not in RUBRICS and len(self.rubric.split()) < 3:
            problems.append(f"rubric {self.rubric!r} is neither a built-in ({', '.join(RUBRICS)}) nor a rubric text")
        return problems

    def criterion(self) -> str:
        return RUBRICS.get(self.rubric, self.rubric)

    def reply_schema(self) -> dict:
        """The JSON schema of a reply: the verdict first, then a rationale."""
        raise NotImplementedError

    def sampling(self, **changes: Any) -> Sampling:
        return super().sampling(json_schema=schema_text(self.reply_schema()),
                                logprobs=ALTERNATIVES if self.weighted else 0, **changes)

    def judge_messages(self, text: str) -> Messages:
        return (("system", SYSTEM), ("user", text))

    def read(self, reply: Reply) -> dict[str, Any] | str:
        """The verdict of a reply (``value``, ``rationale`` and what else the judge keeps), or why
        it is invalid."""
        raise NotImplementedError

    def parse(self, reply: Reply, row: dict) -> dict[str, Any]:
        found = self.read(reply)
        if isinstance(found, str):
            raise Rejection("judge_invalid", f"{found}: {reply.text[:300]!r}")
        return {"model": reply.model, **found}
