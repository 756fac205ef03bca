"""Canonical post-training record types and their validators.

- ``conversation``: ``messages``, a list of ``{role, content}`` turns.
- ``sft``: a conversation with at least one user turn that ends with an assistant turn.
- ``preference``: ``prompt``, ``chosen``, ``rejected`` as turn lists (TRL's conversational DPO
  format), plus optional ``chosen_score``, ``rejected_score`` and ``margin``.
- ``prompt``: ``prompt`` (turn list) and the gold ``answer`` a GRPO reward function reads,
  with optional ``verifier`` naming how the answer is checked.

``prompt_turns`` turns a prompt column (text or turns) into the turn list of these records.

A validator raises :class:`~dataflow.operator.Rejection` naming the field at fault, e.g.
``messages[2].content: empty``; the operator running it adds the row id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import polars as pl

from dataflow.operator import Rejection

TURN = pl.Struct({"role": pl.String, "content": pl.String})
MESSAGES = pl.List(TURN)
ROLES = ("system", "user", "assistant", "tool")


def check_turns(turns: Any, field: str, *, last_role: str | None = None) -> None:
    """Validate a turn list; ``last_role`` requires the final turn's role."""
    if not isinstance(turns, list) or not turns:
        raise Rejection(f"invalid_{field}", f"{field}: expected a non-empty list of turns")
    for i, turn in enumerate(turns):
        where = f"{field}[{i}]"
        if not isinstance(turn, dict):
            raise Rejection(f"invalid_{field}", f"{where}: expected {{role, content}}, got {type(turn).__name__}")
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            raise Rejection(f"invalid_{field}", f"{where}.role: unknown role {role!r}; expected one of {ROLES}")
        if role == "system" and i != 0:
            raise Rejection(f"invalid_{field}", f"{where}.role: a system turn may only come first")
        if not isinstance(content, str) or not content.strip():
            raise Rejection(f"invalid_{field}", f"{where}.content: empty or not a string")
    if last_role and turns[-1]["role"] != last_role:
        raise Rejection(f"invalid_{field}", f"{field}[{len(turns) - 1}].role: the last turn must be "
                                            f"{last_role}, not {turns[-1]['role']}")


def prompt_turns(prompt: Any) -> list[dict]:
    """A prompt as turns: a string becomes one user turn; a conversation keeps all but the
    trailing assistant turns."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    turns = [{"role": t["role"], "content": t["content"]} for t in prompt]
    while turns and turns[-1]["role"] == "assistant":
        turns.pop()
    return turns


def _conversation(row: dict) -> None:
    check_turns(row.get("messages"), "messages")


def _sft(row: dict) -> None:
    check_turns(row.get("messages"), "messages", last_role="assistant")
    if not any(t["role"] == "user" for t in row["messages"]):
        raise Rejection("invalid_messages", "messages: no user turn")


def _score(row: dict, name: str) -> None:
    value = row.get(name)
    if value is not None and not isinstance(value, (int, float)):
        raise Rejection(f"invalid_{name}", f"{name}: expected a number, got {type(value).__name__}")


def _preference(row: dict) -> None:
    check_turns(row.get("prompt"), "prompt", last_role="user")
    check_turns(row.get("chosen"), "chosen", last_role="assistant")
    check_turns(row.get("rejected"), "rejected", last_role="assistant")
    if row["chosen"] == row["rejected"]:
        raise Rejection("invalid_pair", "chosen: identical to rejected")
    for name in ("chosen_score", "rejected_score", "margin"):
        _score(row, name)


def _prompt(row: dict) -> None:
    check_turns(row.get("prompt"), "prompt", last_role="user")
    answer = row.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise Rejection("invalid_answer", "answer: empty or not a string")


@dataclass(frozen=True)
class RecordSchema:
    """A canonical record type: required columns with types, and a per-row validator."""

    name: str
    columns: dict[str, pl.DataType]
    validate: Callable[[dict], None]


SCHEMAS = {
    "conversation": RecordSchema("conversation", {"messages": MESSAGES}, _conversation),
    "sft": RecordSchema("sft", {"messages": MESSAGES}, _sft),
    "preference": RecordSchema("preference", {"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES},
                               _preference),
    "prompt": RecordSchema("prompt", {"prompt": MESSAGES, "answer": pl.String()}, _prompt),
}


def get_schema(name: str) -> RecordSchema:
    if name not in SCHEMAS:
        raise KeyError(f"unknown schema {name!r}; choose from {sorted(SCHEMAS)}")
    return SCHEMAS[name]
