"""Evol-Instruct (WizardLM, Xu et al. 2023): instructions rewritten over generations by in-depth
operations and in-breadth mutation, each evolved instruction answered, and WizardLM's four
elimination rules run as real steps, each failure a reject naming its rule."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operator import Context, Rejection, Result, rejects_frame
from dataflow.operators.generation.base import Ask, Reply, reject_row
from dataflow.operators.generation.replies import (
    BOOLEAN,
    SENTENCE,
    OneModel,
    object_schema,
    record_diversity,
    reply_json,
    string_field,
    whole_answer,
)

DEPTH = """I want you to act as a prompt rewriter. Rewrite the given prompt into a more complex version \
that a capable AI assistant would find harder to handle, while it stays reasonable, understandable and \
answerable by humans. {how} Do not drop any non-text part of the given prompt (tables, code, input). \
The rewritten prompt may add only 10 to 20 words to the given prompt.

Given prompt:
{instruction}

Reply with JSON: "rewritten_prompt", the full rewritten prompt."""
BREADTH = """I want you to act as a prompt creator. Draw inspiration from the given prompt to create a \
brand-new prompt in the same domain but on a rarer topic. It should be about as long and as hard as the \
given prompt, reasonable, and answerable by humans.

Given prompt:
{instruction}

Reply with JSON: "created_prompt", the full new prompt."""
OPERATIONS = {
    "add_constraints": "Add one more constraint or requirement to it.",
    "deepen": "If it asks about a certain issue, increase the depth and breadth of the inquiry.",
    "concretize": "Replace general concepts with more specific ones.",
    "increase_reasoning": "If it can be solved with a few simple thinking steps, make it explicitly ask for "
                          "multiple-step reasoning.",
    "complicate_input": "Add a concrete input the task works on (data, a table, code or a text) and make the "
                        "task use it.",
    "breadth": None,  # in-breadth mutation: a new prompt inspired by the given one
}
EQUAL = """Here are two instructions to an AI assistant. Does the second one ask for something more \
than the first: a new constraint or requirement, more depth or breadth, a more specific topic, or a \
different task?

First instruction:
{parent}

Second instruction:
{child}

Reply with JSON: "adds_something" (true or false)."""
# Rule 4: the evolved prompt copies words of the rewriting prompt.
TEMPLATE_WORDS = ("#rewritten prompt#", "#given prompt#", "#created prompt#", "rewritten prompt", "given prompt",
                  "created prompt", "prompt rewriter", "prompt creator")
STOP_WORDS = frozenset("""a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have having he
her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
off on once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves""".split())


def copies_template(text: str) -> str | None:
    """The rewriting prompt's words that ``text`` copies (rule 4), or None."""
    lowered = text.lower()
    return next((w for w in TEMPLATE_WORDS if w in lowered), None)


def cannot_answer(response: str) -> bool:
    """Rule 2: the response says sorry and is short (under 80 words)."""
    return "sorry" in response.lower() and len(response.split()) < 80


def repetitive(text: str, share: float = 0.3) -> bool:
    """A degenerate text: more than ``share`` of its word 3-grams repeat an earlier one (a check
    beyond WizardLM's four rules: small models loop)."""
    words = text.lower().split()
    grams = list(zip(words, words[1:], words[2:]))
    return len(grams) >= 10 and 1 - len(set(grams)) / len(grams) > share


def only_stop_words(response: str) -> bool:
    """Rule 3: the response is only punctuation and stop words."""
    return all(word in STOP_WORDS for word in re.findall(r"[a-z0-9']+", response.lower()))


@dataclass(frozen=True, kw_only=True)
class EvolInstruct(OneModel):
    """Evolves each row's ``instruction`` for ``generations`` generations.

    Generation g rewrites the last surviving instruction of the lineage by an operation drawn
    (seeded) from ``operations``: ``add_constraints``, ``deepen``, ``concretize``,
    ``increase_reasoning``, ``complicate_input`` (in depth) and ``breadth`` (a new prompt on a
    rarer topic). The evolved instruction is eliminated when (1) the model judges it equal to
    its parent (no information gain; only the others are answered), (2) its response says sorry
    and is short, (3) its response is only punctuation and stop words, or (4) it copies the rewriting prompt's
    words; each failure goes to rejects with its rule and the next generation evolves the parent
    again. A rewrite that loops (``repetitive``) is dropped too, and so is one whose response is
    empty or cut by ``response_tokens`` (asked again, then ``truncated_response``). Output: a row
    per surviving evolved instruction, id ``<row id>/g<generation>``, with ``instruction``,
    ``response``, ``parent_id``, ``root_id``, ``operation``, ``generation``; the root row's other
    columns are kept.
    """

    instruction: str = "instruction"
    generations: int = 3
    operations: tuple[str, ...] = tuple(OPERATIONS)
    temperature: float = 0.7
    max_tokens: int = 384
    response_tokens: int = 256

    def label(self) -> str:
        return "evol_instruct"

    def check(self) -> list[str]:
        problems = super().check()
        unknown = sorted(set(self.operations) - set(OPERATIONS))
        if unknown or not self.operations:
            problems.append(f"operations must be some of {list(OPERATIONS)}, not {list(self.operations)}")
        problems += self.not_positive("generations", "response_tokens")
        return problems

    def required_columns(self) -> dict[str, Any]:
        return {self.instruction: str}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        evolved = {"instruction": pl.String(), "response": pl.String(), "parent_id": pl.String(),
                   "root_id": pl.String(), "operation": pl.String(), "generation": pl.Int64()}
        kept = {k: v for k, v in schema.items() if k not in evolved and k not in (self.instruction, "id")}
        return pl.Schema({"id": pl.String(), **evolved, **kept})

    def operation(self, root_id: str, generation: int) -> str:
        return random.Random(f"{self.seed}/{root_id}/{generation}").choice(self.operations)

    # -- run time --------------------------------------------------------------------------
    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        ctx.record("model", self.model)
        # the surviving tip of each lineage: (id, instruction)
        tips = {row["id"]: (row["id"], row[self.instruction]) for row in table.iter_rows(named=True)
                if isinstance(row[self.instruction], str) and row[self.instruction].strip()}
        rejects = [{"id": row_id, "reason": "empty_instruction", "detail": f"'{self.instruction}' is empty"}
                   for row_id in table["id"] if row_id not in tips]
        evolved: list[dict] = []
        for generation in range(1, self.generations + 1):
            evolved += self._generation(generation, tips, rejects, ctx)
        ctx.progress(table.height)
        record_diversity(ctx, [row["instruction"] for row in evolved])
        new = pl.DataFrame(evolved, schema={"id": pl.String(), "instruction": pl.String(), "response": pl.String(),
                                            "parent_id": pl.String(), "root_id": pl.String(),
                                            "operation": pl.String(), "generation": pl.Int64()})
        schema = self.output_schema(table.schema)
        roots = table.select("id", *[c for c in schema if c in table.columns and c != "id"]).rename({"id": "root_id"})
        output = new.join(roots, on="root_id", how="left", maintain_order="left").select(list(schema))
        return Result(output, rejects_frame(rejects))

    def _generation(self, generation: int, tips: dict[str, tuple[str, str]], rejects: list[dict],
                    ctx: Context) -> list[dict]:
        """One generation over every lineage: rewrite, check the text rules, ask the model whether the rewrite
        adds something (rule 1), answer only those that do, check the answers; the survivors."""
        asks, candidates = {}, {}
        for root, (parent_id, parent) in tips.items():
            operation = self.operation(root, generation)
            how = OPERATIONS[operation]
            key = "created_prompt" if how is None else "rewritten_prompt"
            text = BREADTH.format(instruction=parent) if how is None else DEPTH.format(how=how, instruction=parent)
            child_id = f"{root}/g{generation}"
            candidates[child_id] = {"id": child_id, "root_id": root, "parent_id": parent_id, "parent": parent,
                                    "operation": operation, "generation": generation, "key": key}
            asks[(child_id, "")] = Ask((("user", text),), json_schema=rewrite_schema(key))
        rewritten = self.ask(asks, candidates, ctx, parse=_rewritten, progress=False)
        alive = {}
        for child_id, child in candidates.items():
            try:
                child["instruction"] = rewritten.replies(child_id)[0]["instruction"]
                copied = copies_template(child["instruction"])
                if copied:
                    raise Rejection("copied_template", f"rule 4: copies the rewriting prompt's words '{copied}'")
                if repetitive(child["instruction"]):
                    raise Rejection("repetitive", "the rewrite repeats itself (more than 30% of its word 3-grams)")
                if _normalized(child["instruction"]) == _normalized(child["parent"]):
                    raise Rejection("no_information_gain", "rule 1: the same text as its parent")
                alive[child_id] = child
            except Rejection as rejection:
                rejects.append(reject_row(child_id, rejection))
        equal = self.ask({(c, ""): Ask((("user", EQUAL.format(parent=alive[c]["parent"],
                                                              child=alive[c]["instruction"])),),
                                       json_schema=object_schema(adds_something=BOOLEAN),
                                       max_tokens=16, temperature=0.0) for c in alive},
                         alive, ctx, parse=_verdict, progress=False)
        gained = {}
        for child_id, child in alive.items():
            try:
                verdict = equal.replies(child_id)[0]
            except Rejection as rejection:
                detail = f"rule 1 (the information-gain check has no verdict): {rejection.detail}"
                rejects.append(reject_row(child_id, Rejection(rejection.reason, detail)))
                continue
            if verdict["equal"]:
                rejects.append(reject_row(child_id, Rejection("no_information_gain",
                                                              "rule 1: the model judges it equal to its parent")))
                continue
            gained[child_id] = child
        limit = f"response_tokens ({self.response_tokens})"
        answered = self.ask({(c, ""): Ask((("user", gained[c]["instruction"]),), max_tokens=self.response_tokens)
                             for c in gained}, gained, ctx,
                            parse=lambda reply, row: {"response": whole_answer(reply, limit)}, progress=False)
        survivors = []
        for child_id, child in gained.items():
            try:
                response = answered.replies(child_id)[0]["response"]
                if cannot_answer(response):
                    raise Rejection("model_cannot_answer", f"rule 2: the response says sorry in "
                                                           f"{len(response.split())} words: {response[:200]!r}")
                if only_stop_words(response):
                    raise Rejection("response_only_stop_words", f"rule 3: {response[:200]!r}")
            except Rejection as rejection:
                rejects.append(reject_row(child_id, rejection))
                continue
            survivors.append({k: child[k] for k in ("id", "instruction", "parent_id", "root_id", "operation",
                                                    "generation")} | {"response": response})
            tips[child["root_id"]] = (child_id, child["instruction"])
        return survivors


def _verdict(reply: Reply, row: dict) -> dict[str, Any]:
    value = reply_json(reply, "adds_something")
    if not isinstance(value, bool):
        raise Rejection("bad_verdict", f"'adds_something' is not true or false: {reply.text[:200]!r}")
    return {"equal": not value}


def rewrite_schema(key: str) -> dict:
    """The rewrite's reply: the evolved instruction under ``key``."""
    return object_schema(**{key: string_field(1000, min_length=12, pattern=SENTENCE)})


def _rewritten(reply: Reply, row: dict) -> dict[str, Any]:
    text = reply_json(reply, row["key"], rewrite_schema(row["key"]))
    if not isinstance(text, str) or len(text.split()) < 3:
        raise Rejection("empty_rewrite", f"the rewrite is empty or too short: {reply.text[:300]!r}")
    return {"instruction": text.strip()}


def _normalized(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))
