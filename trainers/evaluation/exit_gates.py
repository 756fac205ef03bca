"""Seed 001's exit gates as checks of an evaluation's record: each a bound on one measure, applied by
default where it makes sense (win rate and KL for a DPO or GRPO run, format correctness for an SFT
run, distinct-2 for every evaluation), or as asked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EVERY = "*"


@dataclass(frozen=True)
class ExitGate:
    """``metrics[metric][field]`` must be above (``above``) or below the bound in option ``bound``."""

    name: str
    metric: str
    field: str
    above: bool
    bound: str
    words: str
    trainers: tuple[str, ...]  # runs of these trainers check it by default; EVERY: every evaluation

    def condition(self, bound: float) -> str:
        return f"{self.words} {'>' if self.above else '<'} {bound:g}"


EXIT_GATES = {gate.name: gate for gate in (
    ExitGate("win_rate", "win_rate", "value", True, "min_win_rate", "win rate vs the baseline", ("dpo", "grpo")),
    ExitGate("kl", "kl", "per_token", False, "max_kl", "KL to the reference (nats/token)", ("dpo", "grpo")),
    ExitGate("distinct_2", "distinct_2", "value", True, "min_distinct_2", "distinct-2 of the responses", (EVERY,)),
    ExitGate("format", "format", "value", True, "min_format", "format correctness", ("sft",)),
)}


def default_gates(trainer: str | None, metrics: tuple[str, ...]) -> tuple[str, ...]:
    """The gates an evaluation checks unless told: those of the run's trainer whose metric it measures."""
    return tuple(name for name, gate in EXIT_GATES.items()
                 if gate.metric in metrics and (EVERY in gate.trainers or trainer in gate.trainers))


def check_gates(names: tuple[str, ...], metrics: dict[str, dict[str, Any]], bounds: dict[str, float]) -> list[dict]:
    """Each gate's result: its condition, the measured value and whether it passed (an undefined value,
    e.g. distinct-2 of responses too short to hold a bigram, fails)."""
    results = []
    for name in names:
        gate = EXIT_GATES[name]
        value, bound = metrics[gate.metric][gate.field], bounds[gate.bound]
        passed = value is not None and (value > bound if gate.above else value < bound)
        results.append({"gate": name, "condition": gate.condition(bound), "measure": gate.words, "value": value,
                        "bound": bound, "above": gate.above, "passed": passed})
    return results


def failure_paragraph(record: dict[str, Any]) -> str:
    """One paragraph: every failed gate with its value, where the record is, and how to change the checks."""
    failed = [r for r in record["gates"] if not r["passed"]]
    listed = "; ".join(f"{r['measure']} is {_shown(r['value'])}, not {'above' if r['above'] else 'below'} "
                       f"{r['bound']:g}" for r in failed)
    model = record["model"]
    who = f"run {model['run']}" if model["run"] else model["spec"]
    return (f"evaluation of {who} on '{record['data']['output']}': {len(failed)} of "
            f"{len(record['gates'])} exit gate(s) failed: {listed}. The record is {record['path']}; another bound "
            f"(--min-win-rate, --max-kl, --min-distinct-2, --min-format) or other gates (--gates) re-check its "
            f"measures from the cache.")


def _shown(value: float | None) -> str:
    return "undefined" if value is None else f"{value:g}"
