"""Verifiers: each writes a reward column (1.0 / 0.0, or a float) and a detail column saying
why a reward is zero. Nothing here fails a build on bad input: an unparseable answer, a crash,
a timeout or a blocked action is a zero reward with its reason."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import polars as pl

from dataflow.operator import Context, Operator, Result
from dataflow.operators.sandbox import Limits, run_python

FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S)


class Verifier(Operator):
    """Base: ``check_rows`` turns input rows into (reward, detail) pairs, batch by batch."""

    kind = "batch"
    output: str

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, self.output: pl.Float64(), f"{self.output}_detail": pl.String()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        schema = self.output_schema(frame.collect_schema())
        return Result(frame.map_batches(lambda df: self._run(df, ctx), schema=schema, streamable=True))

    def _run(self, df: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        results = self.check_rows(df.select(list(self.required_columns())).to_dicts()) if df.height else []
        rewards = [r for r, _ in results]
        ctx.count("passed", sum(r > 0 for r in rewards))
        ctx.count("verified", len(rewards))
        ctx.progress(df.height)
        return df.with_columns(pl.Series(self.output, rewards, dtype=pl.Float64),
                               pl.Series(f"{self.output}_detail", [d for _, d in results], dtype=pl.String))

    def check_rows(self, rows: list[dict]) -> list[tuple[float, str]]:
        raise NotImplementedError


def _math_check(gold: Any, response: Any) -> tuple[float, str]:
    """Runs in a worker process, whose main thread lets math-verify use its own alarm timeouts."""
    from math_verify import parse, verify

    if not isinstance(response, str) or not response.strip():
        return 0.0, "empty response"
    gold_parsed = parse(str(gold) if "$" in str(gold) else f"${gold}$")
    if not gold_parsed:
        return 0.0, f"gold answer {str(gold)[:40]!r} does not parse"
    predicted = parse(response)
    if not predicted:
        return 0.0, "no answer found in the response"
    if verify(gold_parsed, predicted):
        return 1.0, ""
    return 0.0, f"answer {str(predicted[-1])[:40]} does not match gold {str(gold_parsed[-1])[:40]}"


def run_with_timeouts(fn: Callable, items: list[tuple], seconds: float, workers: int) -> list[Any]:
    """``fn(*item)`` for each item in spawned worker processes; an item that runs past
    ``seconds`` gives ``None`` and its pool is replaced."""
    results: list[Any] = [None] * len(items)
    todo = list(range(len(items)))
    context = multiprocessing.get_context("spawn")
    while todo:
        with context.Pool(workers) as pool:
            futures = {i: pool.apply_async(fn, items[i]) for i in todo}
            todo = []
            for i, future in futures.items():
                if todo:  # the pool was abandoned: resubmit the rest
                    todo.append(i)
                    continue
                try:
                    results[i] = future.get(timeout=seconds)
                except multiprocessing.TimeoutError:
                    todo = [j for j in futures if j > i]
                    pool.terminate()
    return results


@dataclass(frozen=True)
class MathVerify(Verifier):
    """Checks the final answer in ``response`` against the gold ``answer`` with math-verify
    (LaTeX, fractions, equivalent expressions); ``timeout`` bounds each check."""

    response: str = "response"
    answer: str = "answer"
    output: str = "reward"
    timeout: float = 10.0
    workers: int = max(1, min(4, os.cpu_count() or 1))

    def label(self) -> str:
        return "math_verify"

    def required_columns(self) -> dict[str, Any]:
        return {self.response: str, self.answer: None}

    def check_rows(self, rows: list[dict]) -> list[tuple[float, str]]:
        pairs = [(row[self.answer], row[self.response]) for row in rows]
        found = run_with_timeouts(_math_check, pairs, self.timeout, self.workers)
        return [r if r is not None else (0.0, f"verification ran past {self.timeout:g}s") for r in found]


def extract_code(text: str) -> str:
    """The first fenced code block of a reply, or the whole reply when it has none."""
    match = FENCE.search(text or "")
    return match.group(1) if match else (text or "")


@dataclass(frozen=True)
class CodeVerify(Verifier):
    """Runs the program in ``code`` (a fenced block is extracted) followed by the unit tests in
    ``tests`` in the sandbox; reward 1.0 when the tests pass."""

    code: str = "response"
    tests: str = "tests"
    output: str = "reward"
    limits: Limits = field(default_factory=Limits)
    workers: int = max(1, os.cpu_count() or 1)

    def label(self) -> str:
        return "code_verify"

    def required_columns(self) -> dict[str, Any]:
        return {self.code: str, self.tests: str}

    def check_rows(self, rows: list[dict]) -> list[tuple[float, str]]:
        def check(row: dict) -> tuple[float, str]:
            program = extract_code(row[self.code])
            if not program.strip():
                return 0.0, "empty program"
            outcome = run_python(f"{program}\n\n{row[self.tests] or ''}\n", self.limits)
            return (1.0, "") if outcome.passed else (0.0, f"{outcome.status}: {outcome.detail}")

        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(check, rows))


@dataclass(frozen=True)
class MatchVerify(Verifier):
    """Reward 1.0 when ``response`` equals ``answer`` (``mode='exact'``, after stripping and, with
    ``ignore_case``, lowercasing), contains it (``'contains'``), or matches the regular
    expression in ``answer`` (``'regex'``)."""

    response: str = "response"
    answer: str = "answer"
    mode: str = "exact"
    ignore_case: bool = True
    output: str = "reward"

    def label(self) -> str:
        return "match_verify"

    def check(self) -> list[str]:
        return [] if self.mode in ("exact", "contains", "regex") else \
            [f"mode must be 'exact', 'contains' or 'regex', not {self.mode!r}"]

    def required_columns(self) -> dict[str, Any]:
        return {self.response: str, self.answer: str}

    def check_rows(self, rows: list[dict]) -> list[tuple[float, str]]:
        return [self._one(row[self.response], row[self.answer]) for row in rows]

    def _one(self, response: str | None, answer: str | None) -> tuple[float, str]:
        if response is None or answer is None:
            return 0.0, "missing response or answer"
        if self.mode == "regex":
            try:
                found = re.search(answer, response, re.I if self.ignore_case else 0)
            except re.error as exc:
                return 0.0, f"invalid pattern: {exc}"
            return (1.0, "") if found else (0.0, "pattern not found")
        a, b = response.strip(), answer.strip()
        if self.ignore_case:
            a, b = a.lower(), b.lower()
        ok = a == b if self.mode == "exact" else b in a
        return (1.0, "") if ok else (0.0, f"no {self.mode} match")


@dataclass(frozen=True)
class JsonSchemaVerify(Verifier):
    """Reward 1.0 when ``response`` (or its fenced ```json block) is JSON valid under ``schema``."""

    schema: dict
    response: str = "response"
    output: str = "reward"

    def label(self) -> str:
        return "json_verify"

    def check(self) -> list[str]:
        from jsonschema import Draft202012Validator, SchemaError

        try:
            Draft202012Validator.check_schema(self.schema)
        except SchemaError as exc:
            return [f"schema is not a valid JSON schema: {exc.message}"]
        return []

    def required_columns(self) -> dict[str, Any]:
        return {self.response: str}

    def check_rows(self, rows: list[dict]) -> list[tuple[float, str]]:
        from jsonschema import Draft202012Validator

        validator = Draft202012Validator(self.schema)
        results = []
        for row in rows:
            text = row[self.response] or ""
            match = re.search(r"```(?:json)?\s*\n(.*?)```", text, re.S)
            try:
                value = json.loads(match.group(1) if match else text)
            except json.JSONDecodeError as exc:
                results.append((0.0, f"not JSON: {exc.msg} at column {exc.colno}"))
                continue
            error = next(iter(validator.iter_errors(value)), None)
            results.append((1.0, "") if error is None else (0.0, f"schema: {error.message[:200]}"))
        return results


@dataclass(frozen=True)
class FunctionReward(Verifier):
    """A user reward ``fn(row) -> float``; an exception is a zero reward with its message."""

    fn: Callable[[dict], float]
    inputs: dict[str, Any]
    output: str = "reward"

    def label(self) -> str:
        return getattr(self.fn, "__name__", "reward")

    def required_columns(self) -> dict[str, Any]:
        return dict(self.inputs)

    def check_rows(self, rows: list[dict]) -> list[tuple[float, str]]:
        results = []
        for row in rows:
            try:
                results.append((float(self.fn(row)), ""))
            except Exception as exc:
                results.append((0.0, f"error: {type(exc).__name__}: {exc}"[:300]))
        return results
