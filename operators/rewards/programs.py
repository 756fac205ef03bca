"""Programs checked by running them against their unit tests in the sandbox (see ``sandbox``)."""

from __future__ import annotations

import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from dataflow.operator import Context, Result, runtime_field
from dataflow.operators.rewards.base import Verifier
from dataflow.operators.rewards.sandbox import Limits, bubblewrap, run_tests

FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S)
ISOLATION = ("bubblewrap", "weak")


def extract_code(text: str) -> str:
    """The first fenced code block of a reply, or the whole reply when it has none."""
    match = FENCE.search(text or "")
    return match.group(1) if match else (text or "")


@dataclass(frozen=True)
class CodeVerify(Verifier):
    """Runs the program in ``code`` (a fenced block is extracted) against the tests in ``tests`` in
    the sandbox: reward 1.0 when every ``assert`` passed, 0.0 otherwise, with the reason;
    ``<output>_tests_passed`` of ``<output>_tests_total`` asserts give partial credit.

    ``isolation="bubblewrap"`` (the default) needs bubblewrap and user namespaces, and the pipeline
    does not compile without them; ``isolation="weak"`` runs the code without OS isolation, with a
    warning, for machines where that is an accepted risk.
    """

    code: str = "response"
    tests: str = "tests"
    output: str = "reward"
    limits: Limits = field(default_factory=Limits)
    isolation: str = "bubblewrap"
    workers: int = runtime_field(max(1, os.cpu_count() or 1))

    def label(self) -> str:
        return "code_verify"

    def check(self) -> list[str]:
        if self.isolation not in ISOLATION:
            return [f"isolation must be one of {list(ISOLATION)}, not {self.isolation!r}"]
        if self.isolation == "bubblewrap" and (problem := bubblewrap()):
            return [f"cannot isolate untrusted code: {problem}; or pass isolation='weak' to run it without OS "
                    f"isolation (not for code from a model under training)"]
        return []

    def required_columns(self) -> dict[str, Any]:
        return {self.code: str, self.tests: str}

    def extra_columns(self) -> dict[str, pl.DataType]:
        return {f"{self.output}_tests_passed": pl.Int64(), f"{self.output}_tests_total": pl.Int64()}

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        weak = self.isolation == "weak" and bubblewrap() is not None
        ctx.record("isolation", "WEAK: no OS isolation" if weak else "bubblewrap")
        if weak:
            print(f"[warn] {ctx.node}: running untrusted code WITHOUT OS isolation ({bubblewrap()})", file=sys.stderr)
        return super().apply(frame, ctx)

    def check_rows(self, rows: list[dict]) -> list[tuple[float, str, int, int]]:
        def check(row: dict) -> tuple[float, str, int, int]:
            program = extract_code(row[self.code])
            if not program.strip():
                return 0.0, "empty program", 0, 0
            outcome = run_tests(program, row[self.tests] or "", self.limits, weak=self.isolation == "weak")
            reward = 1.0 if outcome.passed else 0.0
            return reward, "" if outcome.passed else f"{outcome.status}: {outcome.detail}", \
                outcome.tests_passed, outcome.tests_total

        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(check, rows))
