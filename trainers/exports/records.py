"""What every format reads from a record: its turn lists (role and content only), a system turn put first
where asked, and the row checks that stand in for a consumer that would drop the row without a word."""

from __future__ import annotations

from typing import Any

import polars as pl

from dataflow.errors import DataflowError
from dataflow.records import read_manifest
from dataflow.schemas import MESSAGES
from dataflow.trainers.inputs import BuildOutput

# the column of each record schema that holds the conversation, or the prompt a response follows
TURNS_COLUMN = {"sft": "messages", "conversation": "messages", "preference": "prompt", "prompt": "prompt"}
TURN_COLUMNS = {"sft": ("messages",), "conversation": ("messages",), "preference": ("prompt", "chosen", "rejected"),
                "prompt": ("prompt",)}


def plain_turns(frame: pl.DataFrame, schema: str) -> pl.DataFrame:
    """The record's turn list columns with ``role`` and ``content`` only (extra turn fields are dropped)."""
    turn = pl.element().struct
    return frame.with_columns(pl.col(c).list.eval(pl.struct(turn.field("role"), turn.field("content")))
                              for c in TURN_COLUMNS[schema])


def with_system(frame: pl.DataFrame, column: str, system: str | None) -> pl.DataFrame:
    """``column``'s turns with a ``system`` turn first in every row that does not start with one."""
    if not system:
        return frame
    lead = pl.lit(pl.Series([[{"role": "system", "content": system}]], dtype=MESSAGES)).first()
    has_system = pl.col(column).list.first().struct.field("role") == "system"
    return frame.with_columns(pl.when(has_system).then(pl.col(column)).otherwise(pl.concat_list(lead, column)))


def row_error(data: BuildOutput, row: dict[str, Any], where: str, problem: str, fix: str) -> DataflowError:
    return DataflowError(f"output '{data.name}', row id={row.get('id')}: {where}: {problem}; {fix}")


def check_alternating(data: BuildOutput, row: dict[str, Any], column: str, consumer: str, last: str,
                      users: tuple[str, ...] = ("user", "tool")) -> None:
    """``users`` and assistant turns taking turns after an optional system turn, the last one ``last``."""
    turns = row[column]
    start = 1 if turns and turns[0]["role"] == "system" else 0
    fix = (f"{consumer} takes no such row; merge or drop these turns in the pipeline (e.g. a filter on the roles) "
           f"and build again, or export with --format openai")
    for i, turn in enumerate(turns[start:], start):
        expected = users if (i - start) % 2 == 0 else ("assistant",)
        if turn["role"] not in expected:
            raise row_error(data, row, f"{column}[{i}]", f"a {turn['role']} turn where {' or '.join(expected)} "
                                                         f"must come", fix)
    if len(turns) == start or turns[-1]["role"] != last:
        raise row_error(data, row, column, f"the last turn must be {last}", fix)


def single_reply(data: BuildOutput, row: dict[str, Any], column: str, consumer: str) -> dict[str, str]:
    """The one assistant turn of a preference pair's ``chosen`` or ``rejected``."""
    turns = row[column]
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        raise row_error(data, row, column, f"{len(turns)} turns ({', '.join(t['role'] for t in turns)}); {consumer} "
                        f"takes one assistant reply", "move the shared turns into `prompt` in the pipeline")
    return turns[0]


def measuring_node(data: BuildOutput) -> tuple[str, str | None] | None:
    """The generation node upstream of the output that was sent the record's prompt turns (the samples a pass
    rate counts), and its own system prompt as the build's manifest shows it (a repr, cut at 60 characters)."""
    manifest = read_manifest(data.build)
    nodes, todo, seen = manifest["nodes"], [manifest["outputs"][data.name]["node"]], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        params = nodes[name].get("params", {})
        if params.get("conversation", "None") != "None" and "system" in params:
            return name, None if params["system"] == "None" else params["system"]
        todo += nodes[name].get("inputs", [])
    return None


def check_measured_prompt(data: BuildOutput, frame: pl.DataFrame, system: str | None) -> None:
    """``--system`` as the node that measured the pass rates sent the prompts: a prompt set is trained on the
    prompts its pass rates were measured with."""
    found = measuring_node(data)
    if found is None or frame["prompt"].list.first().struct.field("role").eq("system").all():
        return
    node, shown = found
    given = repr(system) if system else None
    if given == shown or (given and shown and shown.endswith("...") and given.startswith(shown[:-3])):
        return
    if shown is None:
        raise DataflowError(f"--system: node '{node}' measured the pass rates of output '{data.name}' without a "
                            f"system prompt; export without --system so the prompts are the ones measured")
    raise DataflowError(f"output '{data.name}': node '{node}' measured its pass rates sending each prompt after the "
                        f"system prompt {shown}, which the `prompt` column does not hold; give that text with "
                        f"--system \"...\" so the policy trains on the prompts as they were measured"
                        + (f" (--system {given[:40]}... is another text)" if given else ""))
