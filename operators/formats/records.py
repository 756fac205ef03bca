"""The canonical preference (DPO) and prompt (GRPO) records from text columns."""

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
    """Builds the canonical GRPO prompt record from a question and a gold answer column."""

    question: str = "question"
    answer: str = "answer"
    verifier: str | None = None
    kind = Kind.ROW

    def label(self) -> str:
        return "to_prompt"

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

    @staticmethod
    def _convert(row: dict) -> dict:
        answer = row["__a"]
        if answer is None or not str(answer).strip():
            raise Rejection("invalid_answer", "answer: empty")
        return {"prompt": _turns(row["__q"], "user", "prompt"), "answer": str(answer).strip()}
