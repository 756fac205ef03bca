"""Multi-turn dialogues: a user simulator (persona, goal, scenario) and an assistant (a system
prompt) alternate, turn by turn, batched over every dialogue; turn-level failures go to rejects
with the turn index, never dropped silently."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operator import Context, Rejection, Result, identity_field, rejects_frame
from dataflow.operators.generation.base import Ask, Reply, reject_row
from dataflow.operators.generation.replies import (
    BOOLEAN,
    OneModel,
    empty_field,
    object_schema,
    record_diversity,
    reply_json,
    string_field,
    whole_answer,
)
from dataflow.schemas import MESSAGES

SIMULATE = """You are role-playing a USER who is talking to an AI assistant. Stay in the user's role: \
never answer as the assistant.

Who you are: {persona}
Your goal: {goal}
{scenario}
The conversation so far:
{history}

Write the user's next message.{done_rule}
Reply with JSON: {reply_form}."""
DONE_RULE = " If your goal is fully reached, write a short closing message and set \"done\" to true."
# A role's label at a line start, markdown allowed ("**Assistant:**"); a simulated user that writes as the
# assistant (or an assistant as the user) on any line is role confusion; a turn's own label at its start is dropped.
LABEL = r"^[ \t*_#>]*(?:{})[ \t*_]*:[ \t*_]*"
ASSISTANT_LABEL = re.compile(LABEL.format("assistant|ai|bot"), re.I | re.M)
USER_LABEL = re.compile(LABEL.format("user|customer|human"), re.I | re.M)
ASSISTANT_VOICE = re.compile(ASSISTANT_LABEL.pattern + r"|^\s*(?:as an ai|i am an ai|i'm an ai)\b", re.I | re.M)


def user_schema(first: bool) -> dict:
    """The simulated user's reply: a message, and after the first turn whether the goal is reached."""
    return object_schema(message=string_field(1200, min_length=1)) if first else \
        object_schema(message=string_field(1200, min_length=1), done=BOOLEAN)


@dataclass(frozen=True, kw_only=True)
class MultiTurnDialogue(OneModel):
    """A dialogue per input row between a simulated user and the assistant.

    The simulator (``simulator_model``, default ``model``) plays the row's ``persona`` with its
    ``goal`` (and ``scenario``, when given) and writes each user turn as JSON; the assistant
    (``model``, with ``system`` as its system prompt, or the row's ``system_column``) answers.
    A dialogue ends after ``turns`` user turns, or earlier when the simulator says its goal is
    reached (``ended``: ``goal_reached`` or ``max_turns``; with ``require_goal``, a dialogue that
    never reaches it is rejected as ``no_stop``). A turn that is empty, unparseable, cut by
    ``max_tokens`` (asked again, then ``truncated_response``), or written in
    the other role's voice (its label, e.g. "Assistant:", at a line start) rejects its dialogue with
    the turn's number (1 for the first exchange); a turn's own label at its start is dropped. A row
    whose persona, goal, scenario or system column is empty is an ``empty_field`` reject. Output:
    ``messages`` (the canonical conversation, ending with an assistant turn), ``turns``, ``ended``;
    the row's other columns are kept.
    """

    persona: str = "persona"
    goal: str = "goal"
    scenario: str | None = "scenario"
    system: str = "You are a helpful assistant."
    system_column: str | None = None
    turns: int = 3
    require_goal: bool = False
    simulator_model: str | None = identity_field(None)
    temperature: float = 0.8
    max_tokens: int = 200

    def label(self) -> str:
        return "dialogue"

    def model_specs(self) -> tuple[str, ...]:
        return (self.model,) if self.simulator_model in (None, self.model) else (self.model, self.simulator_model)

    def check(self) -> list[str]:
        return super().check() + self.not_positive("turns")

    def required_columns(self) -> dict[str, Any]:
        columns = [self.persona, self.goal, self.scenario, self.system_column]
        return {c: str for c in columns if c}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        made = {"messages": MESSAGES, "turns": pl.Int64(), "ended": pl.String()}
        kept = {k: v for k, v in schema.items() if k not in made and k != "id"}
        return pl.Schema({"id": pl.String(), **made, **kept})

    # -- run time --------------------------------------------------------------------------
    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        ctx.record("model", ",".join(self.model_specs()))
        rows, rejects = {}, []
        for row in table.iter_rows(named=True):
            empty = empty_field(row["id"], {c: row[c] for c in self.required_columns()})
            if empty:
                rejects.append(empty)
            else:
                rows[row["id"]] = row
        system = {row_id: row[self.system_column] if self.system_column else self.system
                  for row_id, row in rows.items()}
        talks = {row_id: [] for row_id in rows}  # (role, content) turns so far
        ended = {}
        limit = f"max_tokens ({self.max_tokens})"
        for turn in range(self.turns):
            active = {row_id: rows[row_id] for row_id in talks if row_id not in ended}
            if not active:
                break
            users = self.ask({(row_id, ""): Ask((("user", self._simulator_prompt(row, talks[row_id], turn)),),
                                                json_schema=user_schema(turn == 0)) for row_id, row in active.items()},
                             active, ctx, parse=_user_turn, progress=False,
                             models=(self.simulator_model or self.model,))
            for row_id in active:
                try:
                    said = users.replies(row_id)[0]
                    if said.get("done") and turn > 0:
                        ended[row_id] = "goal_reached"
                        continue
                    message = USER_LABEL.sub("", said["message"], count=1).strip()
                    if ASSISTANT_VOICE.search(message):
                        raise Rejection("role_confusion", f"the simulated user writes as the assistant: "
                                                          f"{message[:200]!r}")
                    if not message:
                        raise Rejection("empty_turn", "the simulated user's message is only a role label")
                    talks[row_id].append(("user", message))
                except Rejection as rejection:
                    rejects.append(reject_row(row_id, _at_turn(rejection, turn)))
                    ended[row_id] = "rejected"
            answering = {row_id: rows[row_id] for row_id in talks if row_id not in ended}
            replies = self.ask({(row_id, ""): Ask(((("system", system[row_id]),) if system[row_id] else ())
                                                  + tuple(talks[row_id])) for row_id in answering},
                               answering, ctx, progress=False, models=(self.model,),
                               parse=lambda reply, row: {"text": whole_answer(reply, limit)})
            for row_id in answering:
                try:
                    text = ASSISTANT_LABEL.sub("", replies.replies(row_id)[0]["text"], count=1).strip()
                    if not text:
                        raise Rejection("empty_turn", "the assistant's reply is only a role label")
                    if USER_LABEL.search(text):
                        raise Rejection("role_confusion", f"the assistant writes as the user: {text[:200]!r}")
                    talks[row_id].append(("assistant", text))
                except Rejection as rejection:
                    rejects.append(reject_row(row_id, _at_turn(rejection, turn)))
                    ended[row_id] = "rejected"
        made = []
        for row_id, turns in talks.items():
            how = ended.get(row_id, "max_turns")
            if how == "rejected":
                continue
            if how == "max_turns" and self.require_goal:
                rejects.append({"id": row_id, "reason": "no_stop",
                                "detail": f"the goal was not reached in {self.turns} user turns"})
                continue
            messages = ([{"role": "system", "content": system[row_id]}] if system[row_id] else []) + \
                [{"role": role, "content": content} for role, content in turns]
            made.append({"id": row_id, "messages": messages, "turns": sum(r == "user" for r, _ in turns), "ended": how})
        ctx.progress(table.height)
        record_diversity(ctx, [c for row_id in talks for r, c in talks[row_id] if r == "assistant"])
        schema = self.output_schema(table.schema)
        new = pl.DataFrame(made, schema={"id": pl.String(), "messages": MESSAGES, "turns": pl.Int64(),
                                         "ended": pl.String()})
        output = new.join(table.drop([c for c in ("messages", "turns", "ended") if c in table.columns]), on="id",
                          how="left", maintain_order="left").select(list(schema))
        return Result(output, rejects_frame(rejects))

    def _simulator_prompt(self, row: dict, talk: list[tuple[str, str]], turn: int) -> str:
        history = "\n".join(f"{role.upper()}: {content}" for role, content in talk) or "(nothing yet: you start)"
        scenario = f"The situation: {row[self.scenario]}\n" if self.scenario else ""
        form = '"message", your message' if turn == 0 else '"message", your message, then "done" (true or false)'
        return SIMULATE.format(persona=row[self.persona], goal=row[self.goal], scenario=scenario, history=history,
                               done_rule="" if turn == 0 else DONE_RULE, reply_form=form)


def _user_turn(reply: Reply, row: dict) -> dict[str, Any]:
    message = reply_json(reply, "message")
    if not isinstance(message, str):
        raise Rejection("not_text", f"the simulated user's message is not text: {reply.text[:200]!r}")
    if not message.strip():
        raise Rejection("empty_turn", f"the simulated user's message is empty: {reply.text[:200]!r}")
    return {"message": message.strip(), "done": '"done"' in reply.text and reply_json(reply, "done") is True}


def _at_turn(rejection: Rejection, turn: int) -> Rejection:
    """``rejection`` with the turn it happened in (1 for the first exchange)."""
    return Rejection(rejection.reason, f"turn {turn + 1}: {rejection.detail}")
