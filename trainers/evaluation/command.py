"""``dataflow eval MODEL --on NAME``: the evaluation's table on stdout, its record beside the run, and
exit status 1 with one paragraph when an exit gate fails."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from dataflow.errors import GateError
from dataflow.progress import make_progress
from dataflow.trainers.evaluation.evaluate import evaluate
from dataflow.trainers.evaluation.exit_gates import EXIT_GATES, failure_paragraph
from dataflow.trainers.evaluation.options import METRICS, EvalOptions

DEFAULTS = EvalOptions()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``dataflow eval`` (``--out`` and ``--runs`` are the CLI's)."""
    parser.add_argument("model", metavar="MODEL", help="a model spec (local, hf:PATH, vllm:PATH, openai:URL#ID) or a "
                                                       "training run (its id, a unique id prefix, or its folder)")
    parser.add_argument("--on", required=True, metavar="NAME",
                        help="the build output to evaluate on (a name in --out, or an output folder OUT/NAME)")
    parser.add_argument("--metrics", type=_names, default=(), metavar="LIST",
                        help=f"comma-separated, of {', '.join(METRICS)} (default: every one that applies)")
    parser.add_argument("--baseline", metavar="MODEL", help="win rate against this model (a run's default: its base)")
    parser.add_argument("--reference", metavar="MODEL", help="KL to this model (a run's default: its base model)")
    parser.add_argument("--judge", default=DEFAULTS.judge, metavar="MODEL",
                        help=f"the pairwise judge, asked in both orders (default: {DEFAULTS.judge})")
    parser.add_argument("--rubric", default=DEFAULTS.rubric, help="the judge's criterion: a rubric name or text")
    parser.add_argument("--k", type=int, default=DEFAULTS.k, help=f"pass@k's k (default: {DEFAULTS.k})")
    parser.add_argument("--samples", type=int, help="samples per prompt for pass@k, at least k (default: k)")
    parser.add_argument("--prompts", type=int, help="evaluate on a seeded sample of this many prompts (default: all)")
    parser.add_argument("--kl-prompts", type=int, default=DEFAULTS.kl_prompts,
                        help=f"prompts sampled at temperature 1 for KL (default: {DEFAULTS.kl_prompts})")
    parser.add_argument("--max-tokens", type=int, default=DEFAULTS.max_tokens,
                        help=f"per generation (default: {DEFAULTS.max_tokens})")
    parser.add_argument("--temperature", type=float, default=DEFAULTS.temperature,
                        help=f"of the samples (default: {DEFAULTS.temperature})")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="of the samples and the prompt sample")
    parser.add_argument("--system", help="a system prompt sent before each prompt (e.g. the answer format)")
    parser.add_argument("--verifier", default=DEFAULTS.verifier,
                        help=f"checks prompts without a `verifier` value (default: {DEFAULTS.verifier})")
    parser.add_argument("--gates", type=_gates, default=None, metavar="LIST",
                        help=f"exit gates to check, comma-separated, of {', '.join(EXIT_GATES)}; 'none'; default: "
                             f"by the run's trainer (win_rate and kl for dpo/grpo, format for sft, distinct_2 always)")
    bounds = {"min_win_rate": "win rate must be above", "max_kl": "KL per token must be below",
              "min_distinct_2": "distinct-2 must be above", "min_format": "format correctness must be above"}
    for name, words in bounds.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(DEFAULTS, name),
                            help=f"gate: {words} this (default: {getattr(DEFAULTS, name)})")


def run(args: argparse.Namespace) -> int:
    options = EvalOptions(**{f.name: getattr(args, f.name) for f in fields(EvalOptions)})
    progress = make_progress()
    try:
        record = evaluate(args.model, args.on, options, out=args.out, runs=args.runs, progress=progress)
    finally:
        progress.close()
    print(render(record))
    if not record["passed"]:
        raise GateError(failure_paragraph(record))
    return 0


def render(record: dict[str, Any]) -> str:
    """The record as a table: one line per metric, then the gates."""
    model, data = record["model"], record["data"]
    who = f"run {model['run']} ({model['spec']})" if model["run"] else model["spec"]
    lines = [f"evaluation {record['name']}: {who} on '{data['output']}' ({data['rows']:,} rows)",
             f"{'metric':<24}{'value':>10}  {'95% interval':<18}detail"]
    for name, value, interval, detail in _rows(record):
        span = f"[{_number(interval[0])}, {_number(interval[1])}]" if interval else ""
        lines.append(f"{name:<24}{_number(value):>10}  {span:<18}{detail}".rstrip())
    lines += [f"{'not measured: ' + m:<24}  {why}" for m, why in record["skipped"].items()]
    lines += [f"rejected by {node}: " + ", ".join(f"{rows} {reason}" for reason, rows in reasons.items())
              + " (rows the metrics lack; failed requests are retried by the next evaluation)"
              for node, reasons in record["rejected"].items()]
    for gate in record["gates"]:
        lines.append(f"gate {gate['condition']:<44}{'pass' if gate['passed'] else 'FAIL'}  {_number(gate['value'])}")
    lines.append(f"record: {record['path']}")
    return "\n".join(lines)


def _rows(record: dict[str, Any]) -> list[tuple[str, float | None, list | None, str]]:
    m, options, rows = record["metrics"], record["options"], []
    for name in sorted(k for k in m if k.startswith("pass@")):
        rows.append((name, m[name]["value"], m[name]["ci95"],
                     f"{m[name]['prompts']} prompts x {m[name]['samples']} samples"))
    if "format" in m:
        f = m["format"]
        detail = f"{f['generations']} generations: finished {_number(f['finished'])}"
        if "answer_found" in f:
            detail += f", answer found {_number(f['answer_found'])}"
        rows.append(("format correctness", f["value"], None, detail))
    if "win_rate" in m:
        w = m["win_rate"]
        detail = f"vs {options['baseline']}: {w['wins']} wins, {w['losses']} losses, {w['ties']} ties; judge " \
                 f"{options['judge']}"
        if w["position_bias_first"] is not None:
            detail += f", picked the first shown {_number(w['position_bias_first'])}"
        rows.append(("win rate", w["value"], w["ci95"], detail))
    if "kl" in m:
        k = m["kl"]
        rows.append(("KL per token", k["per_token"], k["ci95"],
                     f"to {options['reference']}: {_number(k['per_sequence'])} per sequence, {k['samples']} samples"))
    if "distinct_2" in m:
        rows.append(("distinct-2", m["distinct_2"]["value"], None, f"{m['distinct_2']['responses']} responses"))
    return rows


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _gates(text: str) -> tuple[str, ...]:
    return () if text.strip() == "none" else _names(text)
