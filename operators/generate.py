"""LLM generation operators: Generate, BestOfK (K candidates, optional temperature schedule) and
StructuredGenerate (JSON schema, invalid output retried, then rejected with the reason).

The prompt is a template over row columns (Jinja when it contains ``{{`` or ``{%``, else a
``str.format`` string), or a ``conversation`` column of chat turns. Every request goes through
the persistent request cache (``dataflow.llm``): a rebuild makes no model call, and a request
that failed (server error, timeout) becomes a reject with its reason and is retried by the next
build. The model spec is not a fingerprint parameter; its identity (weights hash or served model
id) is, so tuning options such as ``threads`` does not rebuild anything.
"""

from __future__ import annotations

import json
import re
import string
import sys
from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.fingerprint import digest, qualified_name
from dataflow.llm.cache import shared_cache
from dataflow.llm.client import LLMClient
from dataflow.llm.spec import model_identity, spec_problems
from dataflow.llm.types import Request, Response, Sampling, sample_seed, schema_text
from dataflow.operator import Context, Operator, Result

FAILED_REASON = "llm_error"


def _is_jinja(template: str) -> bool:
    return "{{" in template or "{%" in template


def _jinja_env():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)


def template_columns(template: str) -> set[str]:
    """Row columns a template refers to."""
    if _is_jinja(template):
        from jinja2 import meta

        return set(meta.find_undeclared_variables(_jinja_env().parse(template)))
    names = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            if not name or name.isdigit():
                raise ValueError("use named fields such as {question}, not {} or {0}")
            names.add(re.split(r"[.\[]", name, maxsplit=1)[0])
    return names


class _Renderer:
    def __init__(self, template: str):
        self.template = template
        self.jinja = _jinja_env().from_string(template) if _is_jinja(template) else None

    def __call__(self, row: dict) -> str:
        return self.jinja.render(**row) if self.jinja else self.template.format(**row)


@dataclass(frozen=True)
class Generate(Operator):
    """Generates one response per row into ``output`` (plus ``<output>_finish_reason``,
    ``<output>_tokens_in`` and ``<output>_tokens_out`` when ``usage``).

    ``prompt`` is a template over row columns; or ``conversation`` names a column of chat turns
    sent up to its last user turn. ``system`` is an optional system prompt. ``model`` is a spec
    (``local``, ``hf:PATH``, ``vllm:PATH``, ``openai:BASE_URL#MODEL``; see ``dataflow.llm.spec``).
    """

    prompt: str | None = None
    model: str = "local"
    system: str | None = None
    conversation: str | None = None
    output: str = "response"
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0
    usage: bool = True
    kind = "global"
    fingerprint_exclude = ("model",)

    def label(self) -> str:
        return "generate"

    # -- compile time ----------------------------------------------------------------------
    def check(self) -> list[str]:
        problems = spec_problems(self.model)
        if (self.prompt is None) == (self.conversation is None):
            problems.append("give exactly one of prompt='... {column} ...' or conversation='<column of turns>'")
        if self.prompt is not None:
            try:
                template_columns(self.prompt)
            except Exception as exc:
                problems.append(f"the prompt template does not parse: {exc}; fix the template")
        if self.output == "id":
            problems.append("output cannot be 'id': choose another column name")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            problems.append(f"stop must be a tuple of non-empty strings, e.g. stop=('\\n\\n',), not {self.stop!r}")
        problems += self.sampling().problems()
        return problems

    def required_columns(self) -> dict[str, Any]:
        if self.conversation is not None:
            return {self.conversation: None}
        try:
            return dict.fromkeys(sorted(template_columns(self.prompt or "") - {"id"}))
        except Exception:
            return {}  # reported by check()

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, **self.generated_columns()})

    def generated_columns(self) -> dict[str, pl.DataType]:
        columns = {self.output: pl.String()}
        if self.usage:
            columns.update({f"{self.output}_finish_reason": pl.String(), f"{self.output}_tokens_in": pl.Int64(),
                            f"{self.output}_tokens_out": pl.Int64()})
        return columns

    def sampling(self, **changes: Any) -> Sampling:
        fields = dict(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                      stop=tuple(self.stop), seed=self.seed)
        return Sampling(**{**fields, **changes})

    def fingerprint_extras(self) -> dict[str, Any]:
        return {"model": model_identity(self.model),
                "llm failures of the last build (retried)": shared_cache().retry_generation(self.scope())}

    def scope(self) -> str:
        """Identifies this operator's requests, for the retry generation of failed ones."""
        fields = {k: v for k, v in self.__dict__.items() if k != "model"}
        return digest([qualified_name(type(self)), fields, model_identity(self.model)])

    # -- run time --------------------------------------------------------------------------
    def messages(self, row: dict, render: _Renderer | None) -> tuple[tuple[str, str], ...]:
        if self.conversation is not None:
            turns = [(t["role"], t["content"]) for t in (row[self.conversation] or [])]
            users = [i for i, (role, _) in enumerate(turns) if role == "user"]
            if not users:
                raise ValueError(f"column '{self.conversation}' has no user turn")
            turns = turns[:users[-1] + 1]
        else:
            turns = [("user", render(row))]
        if self.system and turns[0][0] != "system":
            turns.insert(0, ("system", self.system))
        return tuple(turns)

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        render = _Renderer(self.prompt) if self.prompt is not None else None
        needed = ["id", *[c for c in self.required_columns() if c != "id"]]
        prompts, rejects = {}, []
        for row in table.select(needed).iter_rows(named=True):
            try:
                prompts[row["id"]] = self.messages(row, render)
            except Exception as exc:
                rejects.append({"id": row["id"], "reason": "prompt_error", "detail": f"{type(exc).__name__}: {exc}"})
        ctx.record("model", self.model)
        client = LLMClient(self.model, ctx.node, count=ctx.count, log=lambda text: print(text, file=sys.stderr))
        ids = list(prompts)
        columns, failed = self.run_requests(client, ids, [prompts[i] for i in ids], ctx)
        rejects += failed
        if any(f["reason"] == FAILED_REASON for f in failed):
            shared_cache().bump_retry_generation(self.scope())
        done = pl.DataFrame(columns, schema={"id": pl.String(), **self.row_columns()})
        output = table.drop([c for c in done.columns if c != "id" and c in table.columns]).join(
            done, on="id", how="inner", maintain_order="right")
        ctx.progress(len(rejects) - len(failed))
        return Result(self.arrange(output), pl.DataFrame(rejects, schema={"id": pl.String(), "reason": pl.String(),
                                                                          "detail": pl.String()}))

    def row_columns(self) -> dict[str, pl.DataType]:
        return self.generated_columns()

    def arrange(self, output: pl.DataFrame) -> pl.DataFrame:
        return output

    def run_requests(self, client: LLMClient, ids: list[str], prompts: list, ctx: Context
                     ) -> tuple[dict[str, list], list[dict]]:
        """Generated columns for the rows that succeeded, and rejects for those that failed."""
        requests = [Request(p, self.sampling()) for p in prompts]
        responses = client.generate(requests, ids, done=lambda idx: ctx.progress(len(idx)))
        columns: dict[str, list] = {"id": [], **{c: [] for c in self.generated_columns()}}
        failed = []
        for row_id, response in zip(ids, responses):
            if not response.ok:
                failed.append(_failure(row_id, response))
                continue
            self._add(columns, row_id, response, 0)
        return columns, failed

    def _add(self, columns: dict[str, list], row_id: str, response: Response, index: int,
             text: str | None = None) -> None:
        completion = response.completions[index]
        columns["id"].append(row_id)
        columns[self.output].append(completion.text if text is None else text)
        if self.usage:
            columns[f"{self.output}_finish_reason"].append(completion.finish_reason)
            columns[f"{self.output}_tokens_in"].append(response.tokens_in)
            columns[f"{self.output}_tokens_out"].append(completion.tokens_out)


def _row_progress(ctx: Context, requests_per_row: int):
    """A ``done`` callback reporting whole rows when each row makes several requests."""
    finished = [0, 0]  # requests, rows reported

    def done(indices: list[int]) -> None:
        finished[0] += len(indices)
        rows = finished[0] // requests_per_row
        ctx.progress(rows - finished[1])
        finished[1] = rows
    return done


def _failure(row_id: str, response: Response) -> dict:
    return {"id": row_id, "reason": FAILED_REASON, "detail": response.error}


@dataclass(frozen=True)
class BestOfK(Generate):
    """K candidate responses per prompt row, in long format: one row per candidate with id
    ``<prompt id>/<k>``, ``prompt_id``, ``sample_idx``, ``temperature`` and ``seed``.

    ``temperatures`` is an optional schedule: candidate k samples at ``temperatures[k % len]``.
    Candidates at one temperature are one request with ``n`` samples (one prefill of the prompt,
    prefix sharing); candidate k is sample j of its request with ``seed``.
    """

    k: int = 4
    temperatures: tuple[float, ...] = ()

    def label(self) -> str:
        return "best_of_k"

    def check(self) -> list[str]:
        problems = super().check()
        if not isinstance(self.k, int) or self.k < 1:
            problems.append(f"k must be a positive int, not {self.k!r}")
        problems += [p for t in self.temperatures for p in self.sampling(temperature=t).problems()]
        return problems

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, **self.row_columns()})

    def row_columns(self) -> dict[str, pl.DataType]:
        return {"prompt_id": pl.String(), "sample_idx": pl.Int64(), "temperature": pl.Float64(),
                "seed": pl.Int64(), **self.generated_columns()}

    def schedule(self) -> dict[float, list[int]]:
        """Temperature -> the candidate indices sampled at it."""
        groups: dict[float, list[int]] = {}
        temps = self.temperatures or (self.temperature,)
        for k in range(self.k):
            groups.setdefault(float(temps[k % len(temps)]), []).append(k)
        return groups

    def arrange(self, output: pl.DataFrame) -> pl.DataFrame:
        table = output.drop("id").rename({"prompt_id": "__p"})
        table = table.with_columns(id=pl.concat_str(pl.col("__p"), pl.lit("/"), pl.col("sample_idx").cast(pl.String)),
                                   prompt_id=pl.col("__p")).drop("__p")
        front = ["id", "prompt_id"]
        return table.select(front + [c for c in table.columns if c not in front])

    def run_requests(self, client, ids, prompts, ctx):
        groups = self.schedule()
        requests, owners = [], []
        for row_id, prompt in zip(ids, prompts):
            for temperature, candidates in groups.items():
                requests.append(Request(prompt, self.sampling(temperature=temperature, n=len(candidates))))
                owners.append((row_id, temperature, candidates))
        responses = client.generate(requests, [o[0] for o in owners], done=_row_progress(ctx, len(groups)))
        candidates: dict[str, dict[int, tuple[float, Response, int]]] = {}
        failed: dict[str, dict] = {}
        for (row_id, temperature, ks), response in zip(owners, responses):
            if not response.ok:
                failed.setdefault(row_id, _failure(row_id, response))
                continue
            for j, k in enumerate(ks):
                candidates.setdefault(row_id, {})[k] = (temperature, response, j)
        columns: dict[str, list] = {"id": [], **{c: [] for c in self.row_columns()}}
        for row_id in ids:  # a prompt row is kept whole or rejected whole
            if row_id in failed or row_id not in candidates:
                continue
            for k, (temperature, response, j) in sorted(candidates[row_id].items()):
                columns["prompt_id"].append(row_id)
                columns["sample_idx"].append(k)
                columns["temperature"].append(temperature)
                columns["seed"].append(self.seed)
                self._add(columns, row_id, response, j)
        columns["id"] = columns["prompt_id"]  # joined on the prompt row; arrange() makes candidate ids
        return columns, list(failed.values())


@dataclass(frozen=True)
class StructuredGenerate(Generate):
    """Generates JSON matching ``json_schema`` into ``output`` (JSON text).

    The schema is sent to backends that constrain decoding (OpenAI-compatible servers, vLLM) and,
    with ``schema_in_prompt``, appended to the prompt. Output that does not parse or match is
    retried with a new seed (at temperature >= 0.7) up to ``max_attempts`` in all; a row still
    invalid is rejected (``invalid_json`` or ``schema_mismatch``) with the last output in the detail.
    """

    json_schema: dict | str | None = None
    max_attempts: int = 3
    schema_in_prompt: bool = True
    temperature: float = 0.0

    def label(self) -> str:
        return "structured_generate"

    def check(self) -> list[str]:
        problems = super().check()
        try:
            import jsonschema

            jsonschema.Draft202012Validator.check_schema(json.loads(schema_text(self.json_schema) or "null"))
        except Exception as exc:
            problems.append(f"json_schema is not a valid JSON schema: {str(exc).splitlines()[0]}")
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            problems.append(f"max_attempts must be a positive int, not {self.max_attempts!r}")
        return problems

    def generated_columns(self) -> dict[str, pl.DataType]:
        attempts = {f"{self.output}_attempts": pl.Int64()} if self.usage else {}
        return {**super().generated_columns(), **attempts}

    def messages(self, row: dict, render: _Renderer | None) -> tuple[tuple[str, str], ...]:
        turns = super().messages(row, render)
        if not self.schema_in_prompt:
            return turns
        role, content = turns[-1]
        hint = f"\n\nAnswer with a JSON value only, matching this JSON schema:\n{schema_text(self.json_schema)}"
        return turns[:-1] + ((role, content + hint),)

    def run_requests(self, client, ids, prompts, ctx):
        import jsonschema

        validator = jsonschema.Draft202012Validator(json.loads(schema_text(self.json_schema)))
        columns: dict[str, list] = {"id": [], **{c: [] for c in self.generated_columns()}}
        todo = dict(zip(ids, prompts))
        failed, last_problem = [], {}
        for attempt in range(self.max_attempts):
            if not todo:
                break
            changes = {"json_schema": schema_text(self.json_schema)}
            if attempt:
                changes.update(seed=sample_seed(self.seed, 1000 + attempt), temperature=max(self.temperature, 0.7))
            row_ids = list(todo)
            report = (lambda idx: ctx.progress(len(idx))) if attempt == 0 else None
            responses = client.generate([Request(todo[i], self.sampling(**changes)) for i in row_ids], row_ids,
                                        done=report)
            for row_id, response in zip(row_ids, responses):
                if not response.ok:
                    failed.append(_failure(row_id, response))
                    del todo[row_id]
                    continue
                value, problem = parse_json(response.completions[0].text, validator)
                if problem is None:
                    self._add(columns, row_id, response, 0, json.dumps(value, ensure_ascii=False))
                    if self.usage:
                        columns[f"{self.output}_attempts"].append(attempt + 1)
                    del todo[row_id]
                else:
                    last_problem[row_id] = (problem, response.completions[0].text)
        for row_id in todo:
            (reason, error), text = last_problem[row_id]
            failed.append({"id": row_id, "reason": reason, "detail": json.dumps(
                {"attempts": self.max_attempts, "error": error, "output": text[:500]}, ensure_ascii=False)})
        return columns, failed


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
