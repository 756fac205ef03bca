"""Conversion of common chat formats into the canonical conversation record.

Alpaca (``instruction``/``input``/``output``), ShareGPT (``conversations`` of ``{from, value}``)
and OpenAI (``messages`` of ``{role, content}``) rows become ``messages``; a row that does not
convert goes to rejects naming the field at fault.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from dataflow.operator import Context, Kind, Operator, Rejection, Result
from dataflow.schemas import MESSAGES, check_turns
from dataflow.operators.core.functions import RowFunction

ALPACA = ("instruction", "input", "output")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "system": "system"}
FORMAT_COLUMNS = {"alpaca": ALPACA, "sharegpt": ("conversations",), "messages": ("messages",)}


def from_alpaca(row: dict) -> list[dict]:
    instruction, extra, output = (row.get(k) for k in ALPACA)
    if not isinstance(instruction, str) or not instruction.strip():
        raise Rejection("invalid_alpaca", "instruction: missing or empty")
    if not isinstance(output, str) or not output.strip():
        raise Rejection("invalid_alpaca", "output: missing or empty")
    prompt = f"{instruction.strip()}\n\n{extra.strip()}" if isinstance(extra, str) and extra.strip() else instruction.strip()
    turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": output.strip()}]
    system = row.get("system")
    return ([{"role": "system", "content": system}] if isinstance(system, str) and system.strip() else []) + turns


def from_sharegpt(row: dict) -> list[dict]:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise Rejection("invalid_sharegpt", "conversations: missing or empty")
    converted = []
    for i, turn in enumerate(turns):
        speaker = (turn or {}).get("from")
        if speaker not in SHAREGPT_ROLES:
            raise Rejection("invalid_sharegpt", f"conversations[{i}].from: unknown speaker {speaker!r}")
        converted.append({"role": SHAREGPT_ROLES[speaker], "content": (turn.get("value") or "").strip()})
    return converted


def from_messages(row: dict) -> list[dict]:
    turns = row.get("messages")
    if not isinstance(turns, list):
        raise Rejection("invalid_messages", "messages: missing or not a list")
    return [{"role": (t or {}).get("role"), "content": ((t or {}).get("content") or "").strip()} for t in turns]


CONVERTERS = {"alpaca": from_alpaca, "sharegpt": from_sharegpt, "messages": from_messages}


def detect_format(row: dict) -> str:
    for name in ("messages", "sharegpt", "alpaca"):
        if any(row.get(c) is not None for c in FORMAT_COLUMNS[name]):
            return name
    raise Rejection("unknown_format", "none of messages, conversations, instruction/output is set")


@dataclass(frozen=True)
class ToConversation(Operator):
    """Converts Alpaca, ShareGPT or OpenAI-messages rows (or a mix, with ``format='auto'``) into
    a ``messages`` column that is a valid SFT conversation; the source columns are dropped."""

    format: str = "auto"
    kind = Kind.ROW

    def label(self) -> str:
        return "to_conversation"

    def check(self) -> list[str]:
        if self.format not in ("auto", *CONVERTERS):
            return [f"format must be one of {['auto', *CONVERTERS]}, not {self.format!r}"]
        return []

    def _columns(self, schema: pl.Schema) -> list[str]:
        formats = CONVERTERS if self.format == "auto" else [self.format]
        return [c for f in formats for c in FORMAT_COLUMNS[f] if c in schema] + \
            (["system"] if "system" in schema else [])

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        used = self._columns(schema)
        if not used:
            wanted = sorted({c for f in (CONVERTERS if self.format == "auto" else [self.format])
                             for c in FORMAT_COLUMNS[f]})
            raise KeyError(f"no input column of format '{self.format}' (looked for {wanted}; "
                           f"have {list(schema)})")
        kept = {k: v for k, v in schema.items() if k not in used}
        return pl.Schema({**kept, "messages": MESSAGES})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        used = self._columns(frame.collect_schema())
        if "messages" in used:  # the converted column takes the name of its source
            frame = frame.rename({"messages": "__source_messages"})
        inputs = ["__source_messages" if c == "messages" else c for c in used]
        convert = RowFunction(self._convert, dict.fromkeys(inputs), {"messages": MESSAGES}, on_error="reject")
        result = convert.apply(frame, ctx=ctx)
        return Result(result.output.drop(inputs), result.rejects)

    def _convert(self, row: dict) -> dict:
        if "__source_messages" in row:
            row = {**row, "messages": row["__source_messages"]}
        fmt = detect_format(row) if self.format == "auto" else self.format
        turns = CONVERTERS[fmt](row)
        check_turns(turns, "messages", last_role="assistant")
        return {"messages": turns}
