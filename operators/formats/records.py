"""The canonical preference (DPO) and prompt (GRPO) records from text columns, and the prompt of a
conversation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operator import Context, Kind, Operator, Rejection, Result
from dataflow.operators.core.functions import RowFunction
from dataflow.schemas import MESSAGES


def _turns(text: Any, role: str, field: str) -> list[dict]:
    if not isinstance(text, str) or not text.strip():
        raise Rejection(f"invalid_{field}", f"{field}: empty or not a string")
    return [{"role": role, "content": text.strip()}]


def _with_system(turns: list[dict], system: str | None) -> list[dict]:
    """``turns`` led by a ``system`` turn, unless they have one."""
    if system and turns[0]["role"] != "system":
        return [{"role": "system", "content": system}, *turns]
    return turns


def _system_problems(system: Any) -> list[str]:
    if system is None or (isinstance(system, str) and system.strip()):
        return []
    return [f"system must be a non-empty string or None, not {system!r}"]


@dataclass(frozen=True)
class ToPreference(Operator):
    """Builds the canonical preference record from text columns (prompt, chosen, rejected)."""

    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    kind = Kind.ROW

    def label(self) -> str:
        return "to_preference"

    def required_columns(self) -> dict[str, Any]:
        return {self.prompt: str, self.chosen: str, self.rejected: str}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        kept = {k: v for k, v in schema.items() if k not in (self.prompt, self.chosen, self.rejected)}
        return pl.Schema({**kept, "prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        names = {self.prompt: "__p", self.chosen: "__c", self.rejected: "__r"}
        convert = RowFunction(self._convert, dict.fromkeys(names.values()),
                              {"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES}, on_error="reject")
        result = convert.apply(frame.rename(names), ctx=ctx)
        return Result(result.output.drop(list(names.values())), result.rejects)

    @staticmethod
    def _convert(row: dict) -> dict:
        record = {"prompt": _turns(row["__p"], "user", "prompt"),
                  "chosen": _turns(row["__c"], "assistant", "chosen"),
                  "rejected": _turns(row["__r"], "assistant", "rejected")}
        if record["chosen"] == record["rejected"]:
            raise Rejection("invalid_pair", "chosen: identical to rejected")
        return record


@dataclass(frozen=True)
class ToPrompt(Operator):
    """Builds the canonical GRPO prompt record from a question and a gold answer column.

    ``system`` is an instruction put first in ``prompt`` (a system turn): generate the samples
    from ``prompt`` as it is (``BestOfK(conversation="prompt")``), so the pass rates are measured
    on exactly the prompt a trainer sees.
    """

    question: str = "question"
    answer: str = "answer"
    verifier: str | None = None
    system: str | None = None
    kind = Kind.ROW

    def label(self) -> str:
        return "to_prompt"

    def check(self) -> list[str]:
        return _system_problems(self.system)

    def required_columns(self) -> dict[str, Any]:
        return {self.question: str, self.answer: None}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        kept = {k: v for k, v in schema.items() if k not in (self.question, self.answer)}
        extra = {"verifier": pl.String()} if self.verifier else {}
        return pl.Schema({**kept, "prompt": MESSAGES, "answer": pl.String(), **extra})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        names = {self.question: "__q", self.answer: "__a"}
        convert = RowFunction(self._convert, {"__q": None, "__a": None},
                              {"prompt": MESSAGES, "answer": str}, on_error="reject")
        result = convert.apply(frame.rename(names), ctx=ctx)
        output = result.output.drop("__q", "__a")
        if self.verifier:
            output = output.with_columns(verifier=pl.lit(self.verifier))
        return Result(output, result.rejects)

    def _convert(self, row: dict) -> dict:
        answer = row["__a"]
        if answer is None or not str(answer).strip():
            raise Rejection("invalid_answer", "answer: empty")
        return {"prompt": _with_system(_turns(row["__q"], "user", "prompt"), self.system),
                "answer": str(answer).strip()}


@dataclass(frozen=True)
class ConversationPrompt(Operator):
    """Splits a ``conversation`` column of chat turns (``ToConversation``'s ``messages``) into
    ``prompt``, its turns up to the last user turn, and ``reference_answer``, the source's own
    reply after it (null when there is none), so the source's answer is not carried beside
    generated candidates as a conversation that looks like theirs. ``system`` is put first in the
    prompt when the conversation has no system turn, so the prompt is exactly what a model is
    asked and what a trainer sees. The conversation column is dropped; a row without a user turn
    is rejected."""

    conversation: str = "messages"
    system: str | None = None
    kind = Kind.ROW

    def label(self) -> str:
        return "conversation_prompt"

    def check(self) -> list[str]:
        return _system_problems(self.system)

    def required_columns(self) -> dict[str, Any]:
        return {self.conversation: MESSAGES}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        kept = {k: v for k, v in schema.items() if k not in (self.conversation, "prompt", "reference_answer")}
        return pl.Schema({**kept, "prompt": MESSAGES, "reference_answer": pl.String()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        convert = RowFunction(self._convert, {"__c": None}, {"prompt": MESSAGES, "reference_answer": str},
                              on_error="reject")
        result = convert.apply(frame.rename({self.conversation: "__c"}), ctx=ctx)
        return Result(result.output.drop("__c"), result.rejects)

    def _convert(self, row: dict) -> dict:
        turns = [{"role": t["role"], "content": t["content"]} for t in row["__c"] or []]
        users = [i for i, t in enumerate(turns) if t["role"] == "user"]
        if not users:
            raise Rejection("invalid_conversation", f"{self.conversation}: no user turn")
        reply = turns[users[-1] + 1:users[-1] + 2]
        return {"prompt": _with_system(turns[:users[-1] + 1], self.system),
                "reference_answer": reply[0]["content"] if reply and reply[0]["role"] == "assistant" else None}
