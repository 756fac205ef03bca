"""What the LLM judges share: rubrics, the judge's system prompt, prompt text, the JSON in a
reply, and the Judge base (models, rubric, a prefilled reply, invalid replies retried then rejected).

Scores are columns; decisions are separate steps (a Filter, SelectBest, PyramidSample or
PreferencePairs decides). A reply that is empty, not JSON, out of range or truncated is retried
with a new seed; a row with no valid reply after ``max_attempts`` goes to rejects (reason
``judge_invalid``) with the reason and the reply, never a silent 0. A failed request (server error)
is rejected too and retried by the next build. The reply is prefilled with the start of the JSON
answer (``prefill``), so even a small model answers in form; set ``prefill=""`` for servers that
reject a trailing assistant turn.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from dataflow.operator import Rejection, identity_field
from dataflow.operators.generation.base import LLMOperator, Messages, Reply
from dataflow.schemas import prompt_turns

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
_JSON_OBJECT = re.compile(r"\{.*?\}", re.S)


def prompt_text(value: Any) -> str:
    """A prompt column as text: strings as they are, turn lists as their user turns."""
    if isinstance(value, str):
        return value
    return "\n\n".join(t["content"] for t in prompt_turns(value or []) if t["role"] != "system")


def reply_fields(*replies: str) -> dict | None:
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


@dataclass(frozen=True, kw_only=True)
class Judge(LLMOperator):
    """Shared fields and rules of the judges: each of ``models`` judges every row on ``rubric``
    (a built-in name or rubric text); the reply starts from ``prefill``."""

    rubric: str = "helpfulness"
    models: tuple[str, ...] = identity_field(("local",))
    temperature: float = 0.0
    max_tokens: int = 160
    prefill: str = ""
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

    def judge_messages(self, text: str) -> Messages:
        """The judge's turns for one prompt text, ending with the prefilled reply start."""
        reply_start = (("assistant", self.prefill),) if self.prefill else ()
        return (("system", SYSTEM), ("user", text), *reply_start)

    def read(self, reply: Reply) -> tuple[Any, str] | str:
        """(verdict, rationale) from a reply, or why it is invalid."""
        raise NotImplementedError

    def parse(self, reply: Reply, row: dict) -> dict[str, Any]:
        found = self.read(reply)
        if isinstance(found, str):
            raise Rejection("judge_invalid", f"{found}: {reply.text[:300]!r}")
        return {"model": reply.model, "value": found[0], "rationale": found[1]}
