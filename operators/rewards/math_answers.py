"""Math answers checked against gold answers with math-verify, in worker processes with a time bound."""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from typing import Any, Callable

from dataflow.operator import runtime_field
from dataflow.operators.rewards.base import Verifier


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
    workers: int = runtime_field(max(1, min(4, os.cpu_count() or 1)))

    def label(self) -> str:
        return "math_verify"

    def required_columns(self) -> dict[str, Any]:
        return {self.response: str, self.answer: None}

    def check_rows(self, rows: list[dict]) -> list[tuple[float, str]]:
        pairs = [(row[self.answer], row[self.response]) for row in rows]
        found = run_with_timeouts(_math_check, pairs, self.timeout, self.workers)
        return [r if r is not None else (0.0, f"verification ran past {self.timeout:g}s") for r in found]
