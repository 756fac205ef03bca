"""Simple verifiers: string match, JSON schema, and a user reward function."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import regex

from dataflow.errors import json_error
from dataflow.operators.rewards.base import Verifier


REGEX_SECONDS = 1.0  # the longest one 'regex' match may take


@dataclass(frozen=True)
class MatchVerify(Verifier):
    """Reward 1.0 when ``response`` equals ``answer`` (``mode='exact'``, after stripping and, with
    ``ignore_case``, lowercasing), contains it as whole words (``'contains'``: gold 12 is not in
    120), or matches the regular expression in ``answer`` (``'regex'``; a match that runs past
    ``REGEX_SECONDS`` scores 0, so a response cannot stall the build). An empty answer matches
    nothing. 'contains' and 'regex' reward a reply that lists every option ("A B C D"): as a
    training reward, prefer 'exact' or MathVerify."""

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
        if not answer.strip():
            return 0.0, "the answer is empty: it would match every response"
        if self.mode == "regex":
            try:
                found = regex.search(answer, response, regex.I if self.ignore_case else 0, timeout=REGEX_SECONDS)
            except regex.error as exc:
                return 0.0, f"invalid pattern: {exc}"
            except TimeoutError:  # a pattern that backtracks without end on this response: no reward, no hang
                return 0.0, f"the pattern ran past {REGEX_SECONDS} s on this response (catastrophic backtracking)"
            return (1.0, "") if found else (0.0, "pattern not found")
        a, b = response.strip(), answer.strip()
        if self.ignore_case:
            a, b = a.lower(), b.lower()
        ok = a == b if self.mode == "exact" else re.search(_whole(b), a) is not None
        return (1.0, "") if ok else (0.0, f"no {self.mode} match")


def _whole(text: str) -> str:
    """A pattern of ``text`` that does not start or end inside a word (where ``text`` starts or ends with one)."""
    before = r"(?<!\w)" if re.match(r"\w", text) else ""
    after = r"(?!\w)" if re.search(r"\w$", text) else ""
    return before + re.escape(text) + after


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

        validator = Draft202012Validator(self.schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        results = []
        for row in rows:
            text = row[self.response] or ""
            match = re.search(r"```(?:json)?\s*\n(.*?)```", text, re.S)
            try:
                value = json.loads(match.group(1) if match else text, parse_constant=_not_json)
            except json.JSONDecodeError as exc:
                results.append((0.0, f"not JSON: {json_error(exc)}"))
                continue
            except (ValueError, RecursionError) as exc:  # NaN, an integer past 4,300 digits, nesting past the stack
                results.append((0.0, f"not JSON: {type(exc).__name__}: {str(exc)[:100]}"))
                continue
            try:
                error = next(iter(validator.iter_errors(value)), None)
                problem = None if error is None else error.message
            except RecursionError:
                problem = "nested too deeply to check"
            results.append((1.0, "") if problem is None else (0.0, f"schema: {problem[:200]}"))
        return results


def _not_json(constant: str) -> None:
    """NaN and Infinity: Python's json reads them, JSON has no such values (NaN passes every minimum and maximum)."""
    raise ValueError(f"{constant} is not a JSON value")


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
