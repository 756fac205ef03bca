"""Self-Instruct (Wang et al. 2022): seed tasks -> rounds of new tasks, each prompt showing seed
and generated tasks as a numbered list the model continues (or, for chat-only endpoints, a chat
request answered in JSON); the paper's filters; novelty by ROUGE-L against the seeds and every
task kept so far, across rounds; then an instance per task (input first, or output first for
classification tasks). Every dropped task is a reject with its reason."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.errors import DataflowError
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
)
from dataflow.operators.text import NoveltyIndex

# Tasks a text-only model cannot do (the paper's list).
BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
             "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
# The first line of the list to continue: asking for diverse subjects keeps about a third more tasks per call
# on the default model than the paper's "Come up with a series of tasks:" (benchmarks/RESULTS.md).
HEADER = ("Come up with a series of diverse tasks that a user could ask an AI assistant to do, each about a "
          "different subject:")
PROPOSE = """Here are some example tasks that a user could ask an AI assistant to do:

{examples}

Invent {count} more tasks like these, each about a subject that none of the examples mentions, and each \
a different kind of task (writing, classification, reasoning, coding, editing, advice, ...). Each task \
is one concrete instruction of one or two sentences, addressed to the assistant.
Reply with JSON: "tasks", the list of the new tasks."""
CLASSIFY = """Can the task be regarded as a classification task, whose output is one of a small, finite set of \
labels?

Task: Write a short speech for a retirement party.
Classification: No

Task: Tell whether the sentence is written in the past, present or future tense.
Classification: Yes

Task: Explain how vaccines train the immune system.
Classification: No

Task: Label the movie review as positive or negative.
Classification: Yes

Task: Write a JavaScript function that reverses a string.
Classification: No

Task: Decide if the given word is a noun, a verb or an adjective.
Classification: Yes

Task: Suggest five names for a bakery.
Classification: No

Task: Say whether the two sentences mean the same thing: yes or no.
Classification: Yes

Task: {instruction}
Classification:"""
INPUT_FIRST = """Task: {instruction}

Write one example of this task: the input it works on (an empty string if the task needs no input), \
then the correct output for that input.
Reply with JSON: "input", then "output"."""
OUTPUT_FIRST = """Task: {instruction}

This is a classification task. First choose one of its possible class labels, then write an input \
whose correct label is that one.
Reply with JSON: "label", then "input"."""


# How a model's own reply starts (an apology, an agreement, an intro to a list): never a task a user asks.
ASSISTANT_VOICE = re.compile(r"^(?:i'?m sorry|i am sorry|sorry\b|as an ai\b|sure\b|certainly\b|of course\b|"
                             r"here (?:are|is) (?:some|a few|\d+|the)\b.*\btasks?\b)", re.I)
NUMBERING = re.compile(r"^\s*(?:task\s*)?\d+\s*[.):](?:\s+|$)", re.I)  # "7. ", "Task 7:" before a task
ITEM_START = re.compile(r"(?:^|\n)[ \t]*\d+[ \t]*\.(?=\s|$)")  # "7." at a line start: where a listed task begins
COMPLETE_ITEM = re.compile(r'"((?:[^"\\]|\\.)*)"\s*[,\]]')  # a JSON string item followed by , or ]


def unusable_item(item: Any) -> tuple[str, str] | None:
    """(reason, detail) for a listed item that is no task text at all: empty, or not a string."""
    if not isinstance(item, str):
        return "not_a_task", f"the item is {json.dumps(item, ensure_ascii=False)[:300]}, not a task's text"
    if not item:
        return "empty_task", "the item is empty"
    return None


def task_problem(text: str, min_words: int, max_words: int, blacklist: tuple[str, ...]) -> tuple[str, str] | None:
    """The paper's filters, and a reply in the model's own voice ("I'm sorry, ...", "Sure! Here are
    some new tasks:"): (reason, detail) for a task to drop, or None."""
    words = len(text.split())
    if words < min_words:
        return "too_short", f"{words} words, fewer than {min_words}"
    if words > max_words:
        return "too_long", f"{words} words, more than {max_words}"
    lowered = text.lower()
    hit = next((w for w in blacklist if re.search(rf"\b{re.escape(w)}\b", lowered)), None)
    if hit:
        return "blacklisted", f"mentions '{hit}', which a text model cannot do"
    if not text[0].isalnum():
        return "starts_with_punctuation", f"starts with {text[0]!r}"
    if not text[0].isascii():
        return "non_ascii_start", f"starts with {text[0]!r}"
    if ASSISTANT_VOICE.match(text):
        return "assistant_voice", "written as the model's own reply (an apology or an intro), not a task"
    return None


@dataclass(frozen=True, kw_only=True)
class SelfInstruct(OneModel):
    """New tasks from seed tasks (the input: an ``instruction`` column, optionally ``input`` and
    ``output``), in rounds.

    Each of a round's ``prompts_per_round`` prompts shows ``seed_examples`` seed tasks and
    ``generated_examples`` tasks kept so far (sampled, seeded; seeds fill the slots of generated
    tasks not kept yet, as in the paper's code) and asks for up to ``per_prompt`` new ones. With
    ``style="list"`` (the paper's) the prompt is a numbered list that the model continues as raw
    text, with no chat template, up to a blank line, ``per_prompt`` new items or a ``stop`` string; with
    ``style="json"`` (for endpoints that only chat) it is a chat request whose reply is a JSON list
    of exactly ``per_prompt`` tasks. ``header`` is the list's first line (e.g. "Come up with a
    series of math word problems:"). A task cut off by ``max_tokens`` is a ``cut_off`` reject.

    A task is dropped (a reject with the reason) when it has fewer than ``min_words`` or more than
    ``max_words`` words, names a blacklisted word, starts with punctuation or a non-ASCII
    character, is written in the model's own voice (``assistant_voice``: "I'm sorry, ...", "Sure!
    Here are some new tasks:"; not a rule of the paper's), is empty or not text, or has ROUGE-L
    above ``threshold`` with a seed or a task kept before it (the detail names that task and the
    score; as in the paper's code, a score of exactly 0.7 is kept). Rounds stop once ``target``
    tasks are kept (the last round's are all kept), when a round keeps fewer than ``min_new``, or
    after ``max_rounds``.

    With ``instances``, each kept task gets an input and an output: classification tasks (asked of
    the model, few-shot, at temperature 0) output first, others input first; an instance that only
    repeats the field names ("input", "output") is a ``placeholder_instance`` reject. Output:
    ``instruction``, ``input``, ``output``, ``is_classification``, ``round``, ``context_ids`` (the
    tasks its prompt showed); id ``r<round>/p<prompt>/<index>``.
    """

    instruction: str = "instruction"
    target: int = 50
    style: str = "list"
    header: str = HEADER
    per_prompt: int = 16
    prompts_per_round: int = 8
    seed_examples: int = 6
    generated_examples: int = 2
    max_rounds: int = 10
    min_new: int = 1
    threshold: float = 0.7
    min_words: int = 4
    max_words: int = 150
    blacklist: tuple[str, ...] = BLACKLIST
    instances: bool = True
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 768

    def label(self) -> str:
        return "self_instruct"

    def check(self) -> list[str]:
        problems = super().check()
        problems += self.not_positive("target", "per_prompt", "prompts_per_round", "seed_examples", "max_rounds",
                                      "min_words", "max_words")
        problems += self.negative("generated_examples", "min_new")
        if isinstance(self.max_words, int) and isinstance(self.min_words, int) and self.max_words < self.min_words:
            problems.append(f"max_words ({self.max_words}) is below min_words ({self.min_words}): every task would "
                            f"be rejected")
        if isinstance(self.blacklist, str) or not all(isinstance(w, str) and w.strip() for w in self.blacklist):
            problems.append(f"blacklist must be a tuple of words, e.g. ('image', 'video'), not {self.blacklist!r}")
        if self.style == "list" and not (isinstance(self.header, str) and self.header.strip()):
            problems.append("header is empty: give the list's first line, e.g. 'Come up with a series of tasks:'")
        if self.style not in ("list", "json"):
            problems.append(f"style must be 'list' (the model continues a numbered list) or 'json' (a chat request "
                            f"answered in JSON, for chat-only endpoints), not {self.style!r}")
        if not 0 < self.threshold <= 1:
            problems.append(f"threshold must be in (0, 1], not {self.threshold}")
        return problems

    def required_columns(self) -> dict[str, Any]:
        return {self.instruction: str}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({"id": pl.String(), "instruction": pl.String(), "input": pl.String(), "output": pl.String(),
                          "is_classification": pl.Boolean(), "round": pl.Int64(), "context_ids": pl.List(pl.String())})

    # -- run time --------------------------------------------------------------------------
    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        seeds, rejects = [], []
        table = frame.select("id", self.instruction).collect()
        for row in table.iter_rows(named=True):
            text = row[self.instruction]
            if isinstance(text, str) and text.strip():
                seeds.append((row["id"], text.strip()))
            else:
                rejects.append({"id": row["id"], "reason": "bad_seed", "detail": f"'{self.instruction}' is empty"})
        if not seeds:
            raise DataflowError(f"node '{ctx.node}': no seed task has a non-empty '{self.instruction}'; give a seed "
                                f"file of tasks (one instruction per row, {self.seed_examples} or more)")
        ctx.record("model", self.model)
        pool = NoveltyIndex(self.threshold)
        for _, text in seeds:
            pool.add(text)
        kept: list[dict] = []
        stop = f"max_rounds ({self.max_rounds})"
        for round_ in range(1, self.max_rounds + 1):
            added = self._round(round_, seeds, kept, pool, rejects, ctx)
            if len(kept) >= self.target:  # a round's tasks are all kept: none paid for is dropped
                stop = f"target ({self.target})"
                break
            if added < self.min_new:
                stop = f"round {round_} kept {added} (< min_new {self.min_new})"
                break
        ctx.record("rounds", round_)
        ctx.record("stopped", stop)
        ctx.record("tasks_kept", len(kept))
        if self.instances:
            kept = self._instances(kept, rejects, ctx)
        record_diversity(ctx, [task["instruction"] for task in kept])
        ctx.progress(table.height)
        output = pl.DataFrame(kept, schema=self.output_schema(pl.Schema()))
        return Result(output, rejects_frame(rejects))

    def _round(self, round_: int, seeds: list[tuple[str, str]], kept: list[dict], pool: NoveltyIndex,
               rejects: list[dict], ctx: Context) -> int:
        """One round: ask, filter, keep the novel tasks; how many it kept."""
        asks, contexts, lists = {}, {}, {}
        for i in range(self.prompts_per_round):
            chooser = random.Random(f"{self.seed}/{round_}/{i}")
            generated = min(self.generated_examples, len(kept))  # seeds fill the slots of the others
            shown = chooser.sample(seeds, min(self.seed_examples + self.generated_examples - generated, len(seeds)))
            shown += [(t["id"], t["instruction"]) for t in chooser.sample(kept, generated)]
            examples = "\n".join(f"{n}. {text}" for n, (_, text) in enumerate(shown, 1))
            key = f"r{round_}/p{i}"
            contexts[key] = [task_id for task_id, _ in shown]
            lists[key] = {"next": len(shown) + 1}  # the number the model's list goes on from
            asks[(key, "")] = self._propose(examples, lists[key]["next"])
        parse = _json_tasks if self.style == "json" else _listed_tasks
        answers = self.ask(asks, lists, ctx, parse=parse, progress=False)
        added = 0
        for key, _ in asks:
            try:
                reply = answers.replies(key)[0]
            except Rejection as rejection:
                rejects.append(reject_row(key, rejection))
                continue
            tasks = reply["tasks"]
            if reply["cut_off"]:
                rejects.append({"id": f"{key}/{len(tasks)}", "reason": "cut_off",
                                "detail": f"the reply reached max_tokens ({self.max_tokens}) inside this task: "
                                          f"{reply['cut_off'][:300]!r}"})
            for j, text in enumerate(tasks):
                task_id = f"{key}/{j}"
                found = unusable_item(text) or task_problem(text, self.min_words, self.max_words, self.blacklist)
                similar = None if found else pool.too_similar(text)
                if similar is not None:
                    found = ("not_novel", json.dumps({"most_similar": similar.text[:300],
                                                      "rouge_l": round(similar.score, 4)}, ensure_ascii=False))
                if found:
                    rejects.append({"id": task_id, "reason": found[0], "detail": found[1]})
                    continue
                pool.add(text)
                kept.append({"id": task_id, "instruction": text, "round": round_, "context_ids": contexts[key]})
                added += 1
        return added

    def _propose(self, examples: str, next_number: int) -> Ask:
        """The ask for new tasks after the numbered ``examples``."""
        if self.style == "list":
            return Ask((), prompt=f"{self.header}\n\n{examples}\n{next_number}.",
                       stop=(*self.stop, "\n\n", f"\n{next_number + self.per_prompt}."))
        schema = object_schema(tasks={"type": "array", "minItems": self.per_prompt, "maxItems": self.per_prompt,
                                      "items": string_field(300, min_length=15, pattern=SENTENCE)})
        return Ask((("user", PROPOSE.format(examples=examples, count=self.per_prompt)),), json_schema=schema)

    def _instances(self, kept: list[dict], rejects: list[dict], ctx: Context) -> list[dict]:
        """Each task with an input and an output; tasks without a valid instance go to rejects."""
        rows = {task["id"]: task for task in kept}
        asks = {(task_id, ""): Ask((("user", CLASSIFY.format(instruction=task["instruction"])),),
                                   json_schema=object_schema(classification=BOOLEAN), temperature=0.0,
                                   max_tokens=16) for task_id, task in rows.items()}
        classified = self.ask(asks, rows, ctx, parse=_classification, progress=False)
        asks = {}
        for task_id, task in list(rows.items()):
            try:
                task["is_classification"] = classified.replies(task_id)[0]["value"]
            except Rejection as rejection:
                rejects.append(reject_row(task_id, Rejection(rejection.reason, f"classification: {rejection.detail}")))
                del rows[task_id]
                continue
            template, schema = ((OUTPUT_FIRST, object_schema(label=string_field(200), input=string_field(2000)))
                                if task["is_classification"] else
                                (INPUT_FIRST, object_schema(input=string_field(2000), output=string_field(3000))))
            asks[(task_id, "")] = Ask((("user", template.format(instruction=task["instruction"])),), json_schema=schema)
        answers = self.ask(asks, rows, ctx, parse=_instance, progress=False)
        done = []
        for task_id, task in rows.items():
            try:
                done.append({**task, **answers.replies(task_id)[0]})
            except Rejection as rejection:
                rejects.append(reject_row(task_id, rejection))
        return done


def _listed_tasks(reply: Reply, row: dict) -> dict[str, Any]:
    """The tasks of a list continued from item ``row["next"]``: each item's text with its
    whitespace collapsed (lines that are not numbered belong to the item above, as in the paper);
    the last item of a reply cut by ``max_tokens`` is ``cut_off``."""
    items = [" ".join(item.split()) for item in ITEM_START.split(f"{row['next']}.{reply.text}")[1:]]
    cut_off = items.pop() if reply.finish_reason == "length" and items else None
    return _some_tasks(reply, items, cut_off)


def _json_tasks(reply: Reply, row: dict) -> dict[str, Any]:
    """The tasks of a JSON reply, without list numbering; the complete items of a reply cut by
    ``max_tokens``."""
    cut_off = None
    try:
        tasks = reply_json(reply, "tasks")
    except Rejection:
        if reply.finish_reason != "length":
            raise
        listed = reply.text.partition("[")[2]
        items = list(COMPLETE_ITEM.finditer(listed))
        tasks = [json.loads(f'"{item.group(1)}"') for item in items]
        cut_off = listed[items[-1].end() if items else 0:].strip(' \n,"') or None
    tasks = tasks if isinstance(tasks, list) else []
    tasks = [NUMBERING.sub("", t).strip() if isinstance(t, str) else t for t in tasks]
    return _some_tasks(reply, tasks, cut_off)


def _some_tasks(reply: Reply, tasks: list, cut_off: str | None) -> dict[str, Any]:
    """The parsed reply: its items (an empty or non-text one is a reject of its own) and the cut-off
    one; a reply with neither a task nor a cut-off one is invalid (asked again)."""
    if not any(unusable_item(t) is None for t in tasks) and not cut_off:
        raise Rejection("no_tasks", f"the reply lists no task: {reply.text[:300]!r}")
    return {"tasks": tasks, "cut_off": cut_off}


def _classification(reply: Reply, row: dict) -> dict[str, Any]:
    value = reply_json(reply, "classification")
    if not isinstance(value, bool):
        raise Rejection("bad_classification", f"'classification' is not true or false: {reply.text[:300]!r}")
    return {"value": value}


def _instance(reply: Reply, row: dict) -> dict[str, Any]:
    if row["is_classification"]:
        output, given = reply_json(reply, "label"), reply_json(reply, "input")
    else:
        given, output = reply_json(reply, "input"), reply_json(reply, "output")
    for value in (output, given):
        if not isinstance(value, str):
            shown = json.dumps(value, ensure_ascii=False)[:100]
            raise Rejection("not_text", f"an instance field is {shown}, not text: {reply.text[:300]!r}")
    if not output.strip():
        raise Rejection("empty_output", f"the instance has no output: {reply.text[:300]!r}")
    given = given.strip()
    if output.strip().lower() in ("output", "label") or given.lower() == "input":
        raise Rejection("placeholder_instance", f"the instance repeats the field names: {reply.text[:300]!r}")
    return {"input": given, "output": output.strip()}
