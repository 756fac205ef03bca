"""JSONL in the common chat formats, one line per record.

- ``openai``: fine-tuning lines ``{"messages": [...]}``; preference pairs in OpenAI's DPO format,
  ``{"input": {"messages": [...]}, "preferred_output": [reply], "non_preferred_output": [reply]}``.
- ``sharegpt``: ``{"conversations": [{"from": "human"|"gpt"|"system"|"observation", "value": ...}]}``; pairs add
  ``chosen`` and ``rejected`` as single ``{from, value}`` turns (LLaMA-Factory's ShareGPT preference layout).
- ``alpaca``: ``instruction``, ``input``, ``output``, ``system`` and ``history`` (earlier [user, assistant] pairs);
  pairs have ``chosen`` and ``rejected`` texts instead of ``output``.
- ``chatml``: ``{"text": "<|im_start|>role\\ncontent<|im_end|>\\n..."}``; pairs as ``prompt`` (ending with the
  assistant header), ``chosen`` and ``rejected`` texts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from dataflow.trainers.exports.records import TURNS_COLUMN, check_alternating, row_error, single_reply
from dataflow.trainers.exports.writing import ExportDir
from dataflow.trainers.inputs import BuildOutput

Row = dict[str, Any]
SHAREGPT_TAGS = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}


def openai_row(data: BuildOutput, row: Row) -> Row:
    """A fine-tuning line, checked as OpenAI checks the file: an assistant turn to learn, and no tool turn
    (OpenAI takes one only with the id of an assistant's tool call, which a record does not hold)."""
    column = TURNS_COLUMN[data.schema]
    tool = next((i for i, turn in enumerate(row[column]) if turn["role"] == "tool"), None)
    if tool is not None:
        raise row_error(data, row, f"{column}[{tool}]", "a tool turn, which OpenAI's fine-tuning format takes only "
                        "with the tool_call_id of an assistant's tool call", "drop or rewrite tool turns in the "
                        "pipeline and build again, or export with --format sharegpt")
    if data.schema != "preference":
        if not any(turn["role"] == "assistant" for turn in row["messages"]):
            raise row_error(data, row, "messages", "no assistant turn, so OpenAI's fine-tuning has nothing to learn",
                            "drop rows without a reply in the pipeline and build again")
        return {"messages": row["messages"]}
    return {"input": {"messages": row["prompt"]},
            "preferred_output": [single_reply(data, row, "chosen", "OpenAI's DPO format")],
            "non_preferred_output": [single_reply(data, row, "rejected", "OpenAI's DPO format")]}


def sharegpt_turns(turns: list[Row]) -> list[Row]:
    return [{"from": SHAREGPT_TAGS[t["role"]], "value": t["content"]} for t in turns]


def sharegpt_row(data: BuildOutput, row: Row) -> Row:
    if data.schema != "preference":
        return {"conversations": sharegpt_turns(row["messages"])}
    replies = [single_reply(data, row, column, "the ShareGPT preference layout") for column in ("chosen", "rejected")]
    chosen, rejected = sharegpt_turns(replies)
    return {"conversations": sharegpt_turns(row["prompt"]), "chosen": chosen, "rejected": rejected}


def alpaca_row(data: BuildOutput, row: Row) -> Row:
    """The last user turn as the instruction, the turns before it as history, a leading system turn as system."""
    pair = data.schema == "preference"
    column = TURNS_COLUMN[data.schema]
    check_alternating(data, row, column, "the Alpaca format", users=("user",), last="user" if pair else "assistant")
    turns = row[column]
    system = turns[0]["content"] if turns[0]["role"] == "system" else ""
    texts = [t["content"] for t in turns if t["role"] != "system"] + ([None] if pair else [])  # None: the reply
    earlier = texts[:-2]
    record = {"instruction": texts[-2], "input": "", "system": system,
              "history": [list(exchange) for exchange in zip(earlier[::2], earlier[1::2])]}
    if not pair:
        return {**record, "output": turns[-1]["content"]}
    replies = [single_reply(data, row, column, "the Alpaca format")["content"] for column in ("chosen", "rejected")]
    return {**record, "chosen": replies[0], "rejected": replies[1]}


def chatml(turns: list[Row]) -> str:
    return "".join(f"<|im_start|>{t['role']}\n{t['content']}<|im_end|>\n" for t in turns)


def chatml_row(data: BuildOutput, row: Row) -> Row:
    if data.schema != "preference":
        return {"text": chatml(row["messages"])}
    replies = [single_reply(data, row, column, "the ChatML preference layout")["content"]
               for column in ("chosen", "rejected")]
    return {"prompt": chatml(row["prompt"]) + "<|im_start|>assistant\n", "chosen": f"{replies[0]}<|im_end|>\n",
            "rejected": f"{replies[1]}<|im_end|>\n"}


ROWS: dict[str, Callable[[BuildOutput, Row], Row]] = {"openai": openai_row, "sharegpt": sharegpt_row,
                                                      "alpaca": alpaca_row, "chatml": chatml_row}


def write_chat_format(fmt: str, data: BuildOutput, frame: pl.DataFrame, target: ExportDir) -> list[str]:
    """``<output>.jsonl`` in format ``fmt``; what to do with it next."""
    convert = ROWS[fmt]
    path = target.jsonl(f"{data.name}.jsonl", (convert(data, row) for row in frame.iter_rows(named=True)),
                        frame.height)
    if fmt == "openai":
        method = "dpo" if data.schema == "preference" else "supervised"
        return [f"OpenAI fine-tuning: upload {path} (purpose fine-tune), then create a job with method {method}"]
    return []
