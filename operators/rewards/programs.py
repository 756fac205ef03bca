"""Programs checked by running them with their unit tests in the sandbox."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dataflow.operator import runtime_field
from dataflow.operators.rewards.base import Verifier
from dataflow.operators.rewards.sandbox import Limits, run_python

FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S)


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
    workers: int = runtime_field(max(1, os.cpu_count() or 1))

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
