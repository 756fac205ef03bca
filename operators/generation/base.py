"""The base of every LLM operator: generation, judging and synthesis steps.

A subclass says what a row asks and what a reply means; the base does the rest:

    @dataclass(frozen=True)
    class Translate(LLMOperator):
        text: str = "text"
        model: str = identity_field("local")

        def model_specs(self): return (self.model,)
        def required_columns(self): return {self.text: str}
        def messages(self, row): return (("user", f"Translate into French: {row[self.text]}"),)
        def parse(self, reply, row): return {"french": reply.text.strip()}   # or raise Rejection
        def generated_columns(self): return {"french": pl.String()}

What the base owns: the sampling fields and ``max_attempts``; model specs checked at compile time
(never loading a model) with their identities, not the spec text, in the fingerprint; one client
per model over the shared request cache (a rebuild makes no model call); a reply that ``parse``
rejects is asked again with a new seed (at temperature >= 0.7) up to ``max_attempts`` in all, then
its row is rejected with the reason, never a silent default; a failed request (server error,
timeout) rejects its row with ``llm_error`` and is retried by the next build (the node's
fingerprint counts the builds that left failures); progress in rows; the rejects frame.

A row may ask several prompts (``asks``), each wanting several valid replies from each model, and
may give several output rows (``rows``): a candidate per sample, a verdict from two orders.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import polars as pl

from dataflow.fingerprint import digest, qualified_name
from dataflow.llm import LLMClient, ModelSpec, Request, Sampling, model_identity, resolve_spec, spec_problems
from dataflow.llm.cache import shared_cache
from dataflow.llm.types import SamplingParameters, sample_seed, sampling_parameters, schema_text
from dataflow.operator import Context, Kind, Operator, Rejection, Result, fingerprint_parameters, rejects_frame
from dataflow.schemas import prompt_turns

FAILED_REASON = "llm_error"
RETRY_TEMPERATURE = 0.7  # the least temperature of a retry: a new seed at temperature 0 repeats the reply
_SOURCE = "__dataflow_source"

Messages = tuple[tuple[str, str], ...]  # (role, content) turns


@dataclass(frozen=True)
class Ask:
    """One prompt of a row: its messages (or a raw ``prompt`` text, continued with no chat
    template), how many valid replies it wants from each model, its temperature, token budget,
    stop strings and seed when they are not the operator's (a seed per row, where rows send the
    same prompt), and the JSON schema its replies must match."""

    messages: Messages
    n: int = 1
    temperature: float | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    json_schema: dict | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Reply:
    """One completion, as ``parse`` sees it."""

    text: str
    finish_reason: str  # "stop" or "length"
    tokens_in: int | None
    tokens_out: int | None
    model: str  # the spec that answered
    attempt: int  # 0 for the first ask, 1 for the first retry, ...
    tokens: list[str] | None = None  # with logprobs asked and given: the generated tokens' texts
    top_logprobs: list[dict[str, float]] | None = None  # ... and the most likely texts per position


@dataclass(frozen=True, kw_only=True)
class LLMOperator(SamplingParameters, Operator):
    """Base of the LLM operators (see the module docstring); its sampling fields are those of
    ``dataflow.llm.types.SamplingParameters``."""

    max_attempts: int = 3
    kind: ClassVar[Kind] = Kind.GLOBAL  # requests of the whole node go out together, in large batches
    reply_metrics: ClassVar[str] = ""  # with a name, '<name>_replies' and '<name>_invalid_replies' are counted

    # -- what a subclass writes ------------------------------------------------------------
    def model_specs(self) -> tuple[str, ...]:
        """The model specs asked (each gives its own replies)."""
        raise NotImplementedError

    def messages(self, row: dict) -> Messages:
        """The chat turns a row sends (``row`` holds ``id`` and the required columns)."""
        raise NotImplementedError

    def parse(self, reply: Reply, row: dict) -> dict[str, Any]:
        """What a reply means, as values; raise ``Rejection`` for a reply that is not valid."""
        return {"text": reply.text}

    def generated_columns(self) -> dict[str, pl.DataType]:
        """The columns the operator adds (or replaces), with their types."""
        raise NotImplementedError

    def row_columns(self) -> list[str]:
        """The columns of the rows ``asks`` and ``rows`` see (besides ``id``)."""
        return list(self.required_columns())

    def asks(self, row: dict) -> dict[str, Ask]:
        """The prompts of a row, by key; by default one prompt wanting one reply."""
        return {"": Ask(self.messages(row))}

    def rows(self, row: dict, replies: dict[str, list[dict]], ctx: Context) -> list[dict]:
        """The output rows (``id`` and the generated columns) from the parsed valid replies of each
        ask (every ask has at least one); raise ``Rejection`` to reject the row."""
        return [{"id": row["id"], **replies[""][0]}]

    # -- compile time ----------------------------------------------------------------------
    def check(self) -> list[str]:
        problems = [p for spec in self.model_specs() for p in spec_problems(spec)]
        if not self.model_specs():
            problems.append("give at least one model")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            problems.append(f"stop must be a tuple of non-empty strings, e.g. stop=('\\n\\n',), not {self.stop!r}")
        problems += self.not_positive("max_attempts")
        return problems + self.sampling().problems()

    def not_positive(self, *names: str) -> list[str]:
        """A problem for each of the named fields that is not a positive int."""
        return [f"{name} must be a positive int, not {getattr(self, name)!r}" for name in names
                if not isinstance(getattr(self, name), int) or getattr(self, name) < 1]

    def negative(self, *names: str) -> list[str]:
        """A problem for each of the named fields that is not an int >= 0."""
        return [f"{name} must be an int >= 0, not {getattr(self, name)!r}" for name in names
                if not isinstance(getattr(self, name), int) or getattr(self, name) < 0]

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        generated = self.generated_columns()
        return pl.Schema({**{k: v for k, v in schema.items() if k not in generated}, **generated})

    def sampling(self, **changes: Any) -> Sampling:
        """The operator's sampling parameters, with ``changes``."""
        return Sampling(**{**sampling_parameters(self), "stop": tuple(self.stop), **changes})

    def specs(self) -> tuple[ModelSpec, ...]:
        return tuple(resolve_spec(text) for text in self.model_specs())

    def fingerprint_extras(self) -> dict[str, Any]:
        return {"models": [model_identity(spec) for spec in self.specs()],
                "llm failures of the last build (retried)": shared_cache().retry_generation(self.scope())}

    def scope(self) -> str:
        """Identifies this operator's requests, for the retry generation of failed ones."""
        return digest([qualified_name(type(self)), fingerprint_parameters(self),
                       [model_identity(spec) for spec in self.specs()]])

    # -- run time --------------------------------------------------------------------------
    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        columns = ["id", *[c for c in self.row_columns() if c != "id"]]
        rows, keys, asks, rejects = {}, {}, {}, []
        for row in table.select(columns).iter_rows(named=True):
            try:
                asked = self.asks(row)
            except Exception as exc:  # a prompt template that fails on this row
                rejects.append({"id": row["id"], "reason": "prompt_error", "detail": f"{type(exc).__name__}: {exc}"})
                ctx.progress(1)
                continue
            rows[row["id"]], keys[row["id"]] = row, list(asked)
            asks.update({(row["id"], key): ask for key, ask in asked.items()})
        ctx.record("model", ",".join(self.model_specs()))
        answers = self.ask(asks, rows, ctx)
        produced = []
        for row_id, row in rows.items():
            try:
                replies = {key: answers.replies(row_id, key) for key in keys[row_id]}
                produced += [{**out, _SOURCE: row_id} for out in self.rows(row, replies, ctx)]
            except Rejection as rejection:
                rejects.append(reject_row(row_id, rejection))
        return Result(self._output(table, produced), rejects_frame(rejects))

    def ask(self, asks: dict[tuple[str, str], Ask], rows: dict[str, dict], ctx: Context,
            parse: Callable[[Reply, dict], dict[str, Any]] | None = None, progress: bool = True,
            models: tuple[str, ...] | None = None) -> Answers:
        """What the models (default: all of ``model_specs``) answered to ``asks`` (keyed by
        ``(row id, key)``), each reply parsed by ``parse`` (default ``self.parse``) with
        ``rows[row id]``. Operators that ask in stages (a critique, then a revision) call it once
        per stage; ``progress`` reports rows."""
        parse = parse or self.parse
        valid: dict[tuple[str, str], list[dict]] = defaultdict(list)
        problems: dict[tuple[str, str], Rejection] = {}
        failed: dict[str, str] = {}
        specs = self.specs() if models is None else tuple(resolve_spec(m) for m in models)
        progress_rows = _RowProgress(ctx, len(rows) if progress else 0, len(asks) * len(specs))
        for spec in specs:
            client = LLMClient(spec, ctx.node, count=ctx.count, record=ctx.record,
                               log=lambda text: print(text, file=sys.stderr))
            got: dict[tuple[str, str], int] = defaultdict(int)
            for attempt in range(self.max_attempts):
                todo = [k for k, ask in asks.items() if got[k] < ask.n and k[0] not in failed]
                if not todo:
                    break
                requests = [Request(asks[k].messages, self._retry_sampling(asks[k], got[k], attempt), asks[k].prompt)
                            for k in todo]
                responses = client.generate(requests, [k[0] for k in todo],
                                            done=progress_rows.done if attempt == 0 else None)
                for k, response in zip(todo, responses):
                    if not response.ok:  # not asked again now: the next build retries it
                        failed.setdefault(k[0], response.error or "request failed")
                        continue
                    for completion in response.completions:
                        reply = Reply(completion.text, completion.finish_reason, response.tokens_in,
                                      completion.tokens_out, spec.text, attempt, completion.tokens,
                                      completion.top_logprobs)
                        try:
                            valid[k].append(parse(reply, rows[k[0]]))
                            got[k] += 1
                        except Rejection as rejection:
                            problems[k] = rejection
                            self._count(ctx, "invalid_replies")
                        self._count(ctx, "replies")
        progress_rows.finish()
        if failed:
            shared_cache().bump_retry_generation(self.scope())
        return Answers(valid, problems, failed)

    def _retry_sampling(self, ask: Ask, got: int, attempt: int) -> Sampling:
        """The first ask at the operator's sampling; a retry with a new seed, at least warm."""
        temperature = self.temperature if ask.temperature is None else ask.temperature
        changes: dict[str, Any] = {"n": ask.n - got}
        if ask.max_tokens is not None:
            changes["max_tokens"] = ask.max_tokens
        if ask.json_schema is not None:
            changes["json_schema"] = schema_text(ask.json_schema)
        if ask.stop is not None:
            changes["stop"] = ask.stop
        seed = self.seed if ask.seed is None else ask.seed
        if attempt == 0:
            return self.sampling(temperature=temperature, seed=seed, **changes)
        return self.sampling(temperature=max(temperature, RETRY_TEMPERATURE),
                             seed=sample_seed(seed, 1000 + attempt), **changes)

    def _count(self, ctx: Context, metric: str) -> None:
        if self.reply_metrics:
            ctx.count(f"{self.reply_metrics}_{metric}")

    def _output(self, table: pl.DataFrame, produced: list[dict]) -> pl.DataFrame:
        """The produced rows joined with the columns of the input row each came from."""
        generated = self.generated_columns()
        new = pl.DataFrame(produced, schema={"id": pl.String(), **generated, _SOURCE: pl.String()})
        inputs = table.drop([c for c in generated if c in table.columns]).rename({"id": _SOURCE})
        joined = new.join(inputs, on=_SOURCE, how="left", maintain_order="left")
        return joined.select(list(self.output_schema(table.schema)))


def prompt_text(value: Any) -> str:
    """A prompt column as text: strings as they are, turn lists as their user turns."""
    if isinstance(value, str):
        return value
    return "\n\n".join(t["content"] for t in prompt_turns(value or []) if t["role"] != "system")


def reply_fields(*replies: str) -> dict | None:
    """The first JSON object in the first reply that has one."""
    return next((value for reply in replies for value in json_objects(reply or "")), None)


def json_objects(text: str) -> Iterator[dict]:
    """The JSON objects in a text, in order: one from each ``{`` where a whole object starts (objects nested
    in it are part of it; braces in its strings are text)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError):
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            yield value
        start = text.find("{", end)


@dataclass
class Answers:
    """The answers to a stage's asks: each model's valid parsed replies per ask, the last problem
    of each ask, and the error of each row whose request failed (the next build retries those)."""

    valid: dict[tuple[str, str], list[dict]]
    problems: dict[tuple[str, str], Rejection]
    failed: dict[str, str]

    def replies(self, row_id: str, key: str = "") -> list[dict]:
        """The valid replies of an ask; a Rejection saying why when there are none."""
        if row_id in self.failed:
            raise Rejection(FAILED_REASON, self.failed[row_id])
        if not self.valid.get((row_id, key)):
            raise self.problems.get((row_id, key), Rejection("no_reply", "the model returned no completion"))
        return self.valid[(row_id, key)]


def reject_row(row_id: str, rejection: Rejection) -> dict:
    return {"id": row_id, "reason": rejection.reason, "detail": rejection.detail}


@dataclass
class _RowProgress:
    """Reports finished rows to the context as the first asks of all models finish."""

    ctx: Context
    rows: int
    requests: int
    finished: int = 0
    reported: int = 0

    def done(self, indices: list[int]) -> None:
        self.finished += len(indices)
        self._report(self.finished * self.rows // max(self.requests, 1))

    def finish(self) -> None:
        self._report(self.rows)

    def _report(self, rows: int) -> None:
        if rows > self.reported:
            self.ctx.progress(rows - self.reported)
            self.reported = rows
