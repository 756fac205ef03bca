"""LLM generation operators: Generate, BestOfK (K candidates, optional temperature schedule) and
StructuredGenerate (JSON schema, invalid output retried, then rejected with the reason).

The prompt is a template over row columns (see ``templates``), or a ``conversation`` column of
chat turns. Requests, the cache, retries and rejects are the LLM operator base's (``base``): a
rebuild makes no model call, and a failed request becomes a reject with its reason and is retried
by the next build. The model spec is not a fingerprint parameter; its identity (weights hash or
served model id) is, so tuning options such as ``threads`` does not rebuild anything.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from dataflow.llm.types import TRUNCATED, Sampling, schema_text
from dataflow.operator import Context, Rejection, identity_field
from dataflow.operators.generation.base import Ask, LLMOperator, Messages, Reply
from dataflow.operators.generation.templates import renderer, template_columns
from dataflow.schemas import MESSAGES


@dataclass(frozen=True)
class Generate(LLMOperator):
    """Generates one response per row into ``output`` (plus ``<output>_finish_reason``,
    ``<output>_tokens_in`` and ``<output>_tokens_out`` when ``usage``).

    ``prompt`` is a template over row columns; or ``conversation`` names a column of chat turns
    sent up to its last user turn. ``system`` is an optional system prompt, sent before the turns
    that have none; it is in no column, so to export the prompt a response answers, put the
    system turn in the conversation column instead (``ToPrompt(system=...)``,
    ``ConversationPrompt(system=...)``). ``model`` is a spec (``local``, ``hf:PATH``,
    ``vllm:PATH``, ``openai:BASE_URL#MODEL``; see ``dataflow.llm.spec``).

    The finish reason is ``stop`` or ``length``, a response cut off at ``max_tokens``: the metric
    ``truncated`` counts those, and the selection steps never choose one by default.
    """

    prompt: str | None = None
    model: str = identity_field("local")
    system: str | None = None
    conversation: str | None = None
    output: str = "response"
    usage: bool = True

    def label(self) -> str:
        return "generate"

    def model_specs(self) -> tuple[str, ...]:
        return (self.model,)

    # -- compile time ----------------------------------------------------------------------
    def check(self) -> list[str]:
        problems = super().check()
        if (self.prompt is None) == (self.conversation is None):
            problems.append("give exactly one of prompt='... {column} ...' or conversation='<column of turns>'")
        if self.prompt is not None:
            try:
                template_columns(self.prompt)
            except Exception as exc:
                problems.append(f"the prompt template does not parse: {exc}; fix the template")
        if self.output == "id":
            problems.append("output cannot be 'id': choose another column name")
        return problems

    def required_columns(self) -> dict[str, Any]:
        if self.conversation is not None:
            return {self.conversation: MESSAGES}
        try:
            return dict.fromkeys(sorted(template_columns(self.prompt or "") - {"id"}))
        except Exception:
            return {}  # reported by check()

    def generated_columns(self) -> dict[str, pl.DataType]:
        return self.response_columns()

    def response_columns(self) -> dict[str, pl.DataType]:
        columns = {self.output: pl.String()}
        if self.usage:
            columns.update({f"{self.output}_finish_reason": pl.String(), f"{self.output}_tokens_in": pl.Int64(),
                            f"{self.output}_tokens_out": pl.Int64()})
        return columns

    # -- run time --------------------------------------------------------------------------
    def messages(self, row: dict) -> Messages:
        if self.conversation is not None:
            turns = [(t["role"], t["content"]) for t in (row[self.conversation] or [])]
            users = [i for i, (role, _) in enumerate(turns) if role == "user"]
            if not users:
                raise ValueError(f"column '{self.conversation}' has no user turn")
            turns = turns[:users[-1] + 1]
        else:
            turns = [("user", renderer(self.prompt)(row))]
        if self.system and turns[0][0] != "system":
            turns.insert(0, ("system", self.system))
        return tuple(turns)

    def parse(self, reply: Reply, row: dict) -> dict[str, Any]:
        return self.response_values(reply, reply.text)

    def rows(self, row: dict, replies: dict[str, list[dict]], ctx: Context) -> list[dict]:
        return self.counted(super().rows(row, replies, ctx), ctx)

    def counted(self, rows: list[dict], ctx: Context) -> list[dict]:
        """``rows``, with the responses cut off at ``max_tokens`` among them counted (``truncated``)."""
        cut_off = sum(r.get(f"{self.output}_finish_reason") == TRUNCATED for r in rows)
        if cut_off:
            ctx.count("truncated", cut_off)
        return rows

    def response_values(self, reply: Reply, text: str) -> dict[str, Any]:
        values = {self.output: text}
        if self.usage:
            values.update({f"{self.output}_finish_reason": reply.finish_reason,
                           f"{self.output}_tokens_in": reply.tokens_in, f"{self.output}_tokens_out": reply.tokens_out})
        return values


@dataclass(frozen=True)
class BestOfK(Generate):
    """K candidate responses per prompt row, in long format: one row per candidate with id
    ``<prompt id>/<k>``, ``prompt_id``, ``sample_idx``, ``temperature`` and ``seed``.

    ``temperatures`` is an optional schedule: candidate k samples at ``temperatures[k % len]``.
    Candidates at one temperature are one request with ``n`` samples (one prefill of the prompt,
    prefix sharing); candidate k is sample j of its request with ``seed``. A prompt row is kept
    whole or rejected whole.
    """

    k: int = 4
    temperatures: tuple[float, ...] = ()

    def label(self) -> str:
        return "best_of_k"

    def check(self) -> list[str]:
        problems = super().check()
        problems += self.not_positive("k")
        problems += [p for t in self.temperatures for p in self.sampling(temperature=t).problems()]
        return problems

    def generated_columns(self) -> dict[str, pl.DataType]:
        return {"prompt_id": pl.String(), "sample_idx": pl.Int64(), "temperature": pl.Float64(),
                "seed": pl.Int64(), **self.response_columns()}

    def schedule(self) -> dict[float, list[int]]:
        """Temperature -> the candidate indices sampled at it."""
        groups: dict[float, list[int]] = {}
        temps = self.temperatures or (self.temperature,)
        for k in range(self.k):
            groups.setdefault(float(temps[k % len(temps)]), []).append(k)
        return groups

    def asks(self, row: dict) -> dict[str, Ask]:
        messages = self.messages(row)
        return {f"t={t}": Ask(messages, len(ks), t) for t, ks in self.schedule().items()}

    def rows(self, row: dict, replies: dict[str, list[dict]], ctx: Context) -> list[dict]:
        if any(len(replies[f"t={t}"]) < len(ks) for t, ks in self.schedule().items()):
            raise Rejection("missing_candidates", f"fewer than {self.k} valid candidates")
        candidates = {k: (t, reply) for t, ks in self.schedule().items() for k, reply in zip(ks, replies[f"t={t}"])}
        return self.counted([{"id": f"{row['id']}/{k}", "prompt_id": row["id"], "sample_idx": k, "temperature": t,
                              "seed": self.seed, **reply} for k, (t, reply) in sorted(candidates.items())], ctx)


@dataclass(frozen=True)
class StructuredGenerate(Generate):
    """Generates JSON matching ``json_schema`` into ``output`` (JSON text).

    Every backend constrains decoding to the schema: the transformers backend masks tokens with
    llguidance, vLLM uses its guided decoding, OpenAI-compatible servers get ``response_format``
    (see ``dataflow.llm.backends.openai`` for servers without it). With ``schema_in_prompt`` the
    schema is also appended to the prompt, so the model knows what the fields mean. Output that
    does not parse or match (a server that does not constrain) is retried with a new seed (at
    temperature >= 0.7) up to ``max_attempts`` in all; a row still invalid is rejected
    (``invalid_json``, ``schema_mismatch``, or ``truncated_json`` when ``max_tokens`` ran out before
    the JSON closed) with the last output in the detail.
    """

    json_schema: dict | str | None = None
    schema_in_prompt: bool = True
    temperature: float = field(default=0.0, kw_only=True)
    reply_metrics = "json"

    def label(self) -> str:
        return "structured_generate"

    def check(self) -> list[str]:
        problems = super().check()
        try:
            import jsonschema

            jsonschema.Draft202012Validator.check_schema(json.loads(schema_text(self.json_schema) or "null"))
        except Exception as exc:
            problems.append(f"json_schema is not a valid JSON schema: {str(exc).splitlines()[0]}")
        return problems

    def response_columns(self) -> dict[str, pl.DataType]:
        attempts = {f"{self.output}_attempts": pl.Int64()} if self.usage else {}
        return {**super().response_columns(), **attempts}

    def sampling(self, **changes: Any) -> Sampling:
        return super().sampling(json_schema=schema_text(self.json_schema), **changes)

    def messages(self, row: dict) -> Messages:
        turns = super().messages(row)
        if not self.schema_in_prompt:
            return turns
        role, content = turns[-1]
        hint = f"\n\nAnswer with a JSON value only, matching this JSON schema:\n{schema_text(self.json_schema)}"
        return turns[:-1] + ((role, content + hint),)

    def parse(self, reply: Reply, row: dict) -> dict[str, Any]:
        value, problem = parse_json(reply.text, schema_validator(schema_text(self.json_schema)))
        if problem is not None:
            reason, error = problem
            if reason == "invalid_json" and reply.finish_reason == "length":
                reason, error = "truncated_json", f"max_tokens ({self.max_tokens}) ran out: {error}"
            raise Rejection(reason, json.dumps({"attempts": self.max_attempts, "error": error,
                                                "output": reply.text[:500]}, ensure_ascii=False))
        values = self.response_values(reply, json.dumps(value, ensure_ascii=False))
        if self.usage:
            values[f"{self.output}_attempts"] = reply.attempt + 1
        return values


@functools.lru_cache(maxsize=64)
def schema_validator(schema: str):
    """A JSON schema validator for a schema given as JSON text."""
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(schema))


FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def parse_json(text: str, validator) -> tuple[Any, tuple[str, str] | None]:
    """The JSON value in ``text`` (a code fence around it is allowed) and None, or a problem
    as (reason, message)."""
    fenced = FENCE.match(text)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError as exc:
        return None, ("invalid_json", str(exc))
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(root)"
        return None, ("schema_mismatch", f"{where}: {errors[0].message}")
    return value, None
