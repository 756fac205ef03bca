"""Topic x template instruction synthesis: every topic row meets the instruction templates, and the
model writes one concrete instruction per (topic, template, sample), in a JSON schema it cannot
break. Coverage per topic and per template goes to the node metrics, with distinct-1/2."""

from __future__ import annotations

import dataclasses
import json
import random
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from dataflow.operator import Context, Rejection, Result, rejects_frame
from dataflow.operators.generation.base import Ask, Reply
from dataflow.operators.generation.replies import (
    SENTENCE,
    OneModel,
    object_schema,
    record_diversity,
    reply_json,
    string_field,
)

WRITE = """Write one instruction that a user could give an AI assistant.

Topic: {topic}
What the instruction should be: {task}
This is variation {variation} for this topic: make it unlike the usual first idea.

The instruction must be concrete and self-contained (include any text, numbers or data it needs), \
one to three sentences, and must not answer itself.
Reply with JSON: "instruction", the instruction itself."""
INSTRUCTION = object_schema(instruction=string_field(600, min_length=12, pattern=SENTENCE))
PLAN = {"source_id": pl.String(), "template_id": pl.String(), "sample_idx": pl.Int64(), "slot_values": pl.String(),
        "task": pl.String()}


def template_slots(template: str) -> list[str]:
    """The ``{slot}`` names of a template (none for a template that does not parse: ``template_problem``)."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError:
        return []


def template_problem(template_id: str, template: Any) -> str | None:
    """Why a template cannot be filled: not text, empty, unbalanced braces or an unnamed slot."""
    if not isinstance(template, str) or not template.strip():
        return f"template '{template_id}' is empty: give the text of an instruction to write, with {{slots}}"
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        return f"template '{template_id}' does not parse ({exc}): write a slot as {{name}} and a brace as {{{{ or }}}}"
    if any(not name or name.isdigit() for name in names):
        return f"template '{template_id}' has an unnamed slot ({{}} or {{0}}): name it, e.g. {{topic}}"
    return None


def expanded_context(ctx: Context, rows: int, per_row: int) -> Context:
    """``ctx`` for an operator that asks ``per_row`` prompts per input row: progress in input rows."""
    done = [0]

    def report(count: int) -> None:
        before, done[0] = done[0] // per_row, done[0] + count
        if done[0] // per_row > before:
            ctx.progress(done[0] // per_row - before)

    return dataclasses.replace(ctx, rows_in=rows * per_row, report=report)


@dataclass(frozen=True, kw_only=True)
class TopicTemplate(OneModel):
    """Instructions from topics x templates.

    Each input row's ``topic`` column meets ``templates`` (id -> text with ``{slots}``): a slot is
    filled from the row's column of that name, else from ``slots`` (name -> values, one picked per
    sample, seeded), ``{topic}`` from the topic; a row with an empty topic or a null slot column is a
    reject. A row gives ``per_topic`` instructions, sample k from template s + k modulo the number of
    templates, s a seeded start per row: every template is used though ``per_topic`` be fewer, and a
    row's requests do not depend on the other rows (an added topic costs only its own calls).
    Output: one row per instruction, id ``<row id>/<template id>/<k>``, with ``instruction``,
    ``task`` (the filled template), ``template_id``, ``sample_idx``, ``slot_values`` (JSON) and
    ``source_id`` (the topic row); the row's other columns are kept. An unusable reply is asked
    again, then rejected with the reason. Metrics: ``topics_covered`` (share of topic rows with an
    instruction), ``per_template`` (instructions kept per template), ``distinct_1``/``distinct_2``.
    """

    templates: dict[str, str]
    topic: str = "topic"
    slots: dict[str, list[str]] = field(default_factory=dict)
    per_topic: int = 4
    temperature: float = 0.9
    max_tokens: int = 160
    min_words: int = 4

    def label(self) -> str:
        return "topic_template"

    def check(self) -> list[str]:
        problems = super().check()
        if not self.templates:
            problems.append("give at least one template, e.g. templates={'howto': 'a how-to question about {topic}'}")
        problems += self.not_positive("per_topic", "min_words")
        problems += [p for template_id, text in self.templates.items() if (p := template_problem(template_id, text))]
        problems += [f"slot '{name}' has no values: give a non-empty list" for name, values in self.slots.items()
                     if not values]
        problems += [f"slot '{name}' must be a list of values, e.g. ['beginner', 'expert'], not {values!r}"
                     for name, values in self.slots.items() if isinstance(values, str)]
        return problems

    def required_columns(self) -> dict[str, Any]:
        """The topic, and every slot that no list fills (a missing one is a compile-time error)."""
        named = {slot for template in self.templates.values() for slot in template_slots(template)}
        return {self.topic: str, **dict.fromkeys(sorted(named - set(self.slots) - {"topic", "id"}))}

    def row_columns(self) -> list[str]:
        return [self.topic, "task", "sample_idx"]

    def generated_columns(self) -> dict[str, pl.DataType]:
        return {"instruction": pl.String()}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return super().output_schema(pl.Schema({**schema, **PLAN}))

    def plan(self, row: dict) -> list[dict]:
        """The instructions a topic row asks for, as rows: id, plan columns and the row's own."""
        ids = list(self.templates)
        chooser = random.Random(f"{self.seed}/{row['id']}")
        start = chooser.randrange(len(ids))
        planned = []
        for k in range(self.per_topic):
            template_id = ids[(start + k) % len(ids)]
            values = {"topic": row[self.topic]}
            for slot in template_slots(self.templates[template_id]):
                if slot != "topic":
                    values[slot] = chooser.choice(self.slots[slot]) if slot in self.slots else str(row[slot])
            planned.append({**row, "id": f"{row['id']}/{template_id}/{k}", "source_id": row["id"],
                            "template_id": template_id, "sample_idx": k,
                            "slot_values": json.dumps(values, ensure_ascii=False),
                            "task": self.templates[template_id].format(**values)})
        return planned

    def _slot_columns(self) -> list[str]:
        """The slots filled from the row's columns."""
        return [c for c in self.required_columns() if c != self.topic]

    def _unusable(self, row: dict) -> dict:
        """The reject of a row that cannot fill the templates."""
        if not (row[self.topic] or "").strip():
            return {"id": row["id"], "reason": "empty_topic", "detail": f"'{self.topic}' is empty"}
        nulls = [c for c in self._slot_columns() if row[c] is None]
        return {"id": row["id"], "reason": "empty_slot", "detail": f"slot column(s) {', '.join(nulls)} are null"}

    def asks(self, row: dict) -> dict[str, Ask]:
        text = WRITE.format(topic=row[self.topic], task=row["task"], variation=row["sample_idx"] + 1)
        return {"": Ask((("user", text),), json_schema=INSTRUCTION)}

    def parse(self, reply: Reply, row: dict) -> dict[str, Any]:
        value = reply_json(reply, "instruction", INSTRUCTION)
        if not isinstance(value, str) or len(value.split()) < self.min_words:
            raise Rejection("bad_instruction", f"fewer than {self.min_words} words: {reply.text[:300]!r}")
        return {"instruction": value.strip()}

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        schema = self.output_schema(table.schema)
        columns = self._slot_columns()
        topics = table.filter(pl.col(self.topic).str.strip_chars().str.len_chars() > 0,
                              *[pl.col(c).is_not_null() for c in columns])
        missing = table.join(topics.select("id"), on="id", how="anti")
        planned = [p for row in topics.iter_rows(named=True) for p in self.plan(row)]
        expanded = pl.DataFrame(planned, schema={c: t for c, t in schema.items() if c != "instruction"})
        result = super().apply(expanded.lazy(), expanded_context(ctx, topics.height, self.per_topic))
        ctx.progress(missing.height)
        empty = rejects_frame([self._unusable(row) for row in missing.iter_rows(named=True)])
        result = Result(result.output, pl.concat([result.rejects, empty]))
        output = result.output
        ctx.record("topics_covered", round(output["source_id"].n_unique() / table.height, 4) if table.height else None)
        ctx.record("per_template", dict(sorted(Counter(output["template_id"].to_list()).items())))
        record_diversity(ctx, output["instruction"].to_list())
        return result
