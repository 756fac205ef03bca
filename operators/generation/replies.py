"""What the synthesis operators share: the JSON schemas of their replies (constrained decoding
makes every reply match), reading a field of a reply, and the diversity of what they generated."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dataflow.llm.types import schema_text
from dataflow.operator import Context, Rejection, identity_field
from dataflow.operators.generation.base import LLMOperator, Reply, json_objects
from dataflow.operators.generation.generate import schema_validator
from dataflow.operators.text import distinct_metrics

BOOLEAN = {"type": "boolean"}


@dataclass(frozen=True, kw_only=True)
class OneModel(LLMOperator):
    """An LLM operator that asks one model, ``model`` (a spec; see ``dataflow.llm.spec``)."""

    model: str = identity_field("local")

    def model_specs(self) -> tuple[str, ...]:
        return (self.model,)


SENTENCE = "^[A-Z]"  # a pattern: starts with a capital letter (a small model may else start anywhere)


def string_field(max_length: int, min_length: int = 0, pattern: str | None = None) -> dict:
    """A string field of at most ``max_length`` characters (and at least ``min_length``) that
    matches ``pattern`` (a regex searched in it, as in JSON Schema)."""
    return {"type": "string", "maxLength": max_length, **({"minLength": min_length} if min_length else {}),
            **({"pattern": pattern} if pattern else {})}


def object_schema(**properties: dict) -> dict:
    """An object with these required properties, in this order (the order they are written in)."""
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def reply_json(reply: Reply, key: str, schema: dict | None = None) -> Any:
    """Field ``key`` of a JSON reply (or of the first JSON object in the reply's text that holds ``key``);
    a Rejection saying why when there is none, or when the reply breaks ``schema`` (the ask's: a backend
    without constrained decoding may)."""
    try:
        value = json.loads(reply.text)
    except json.JSONDecodeError:
        value = next((found for found in json_objects(reply.text) if key in found), None)
    if not isinstance(value, dict) or key not in value:
        reason = "truncated" if reply.finish_reason == "length" else "no_json"
        raise Rejection(reason, f"no JSON field '{key}' in the reply: {reply.text[:300]!r}")
    broken = next(schema_validator(schema_text(schema)).iter_errors(value), None) if schema else None
    if broken is not None:
        raise Rejection("schema_mismatch", f"{broken.message[:200]}: {reply.text[:300]!r}")
    return value[key]


def empty_field(row_id: str, texts: dict[str, Any]) -> dict | None:
    """The ``empty_field`` reject of a row whose ``texts`` (column -> value) hold an empty or null
    one; None when every one is text."""
    empty = [column for column, text in texts.items() if not (text or "").strip()]
    return {"id": row_id, "reason": "empty_field", "detail": f"{', '.join(empty)} empty"} if empty else None


def whole_answer(reply: Reply, limit: str) -> str:
    """A free-text answer's text; a Rejection when it is empty or was cut by the token limit
    (the parameter named ``limit``, e.g. "response_tokens (256)"): a cut answer is no SFT target."""
    text = reply.text.strip()
    if not text:
        raise Rejection("empty_response", "the model's answer is empty")
    if reply.finish_reason == "length":
        raise Rejection("truncated_response", f"the answer did not end within {limit} tokens (raise it): "
                                              f"{text[-200:]!r}")
    return text


def record_diversity(ctx: Context, texts: list[str]) -> None:
    """distinct-1/2 of generated texts, as node metrics."""
    for name, value in distinct_metrics(texts).items():
        ctx.record(name, value)
