"""Simple verifiers: string match, JSON schema, and a user reward function."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from dataflow.operators.rewards.base import Verifier


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
