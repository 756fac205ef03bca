"""An evaluation resolved before anything runs: the models as specs (a run's base model as the default
baseline and reference), the data and its prompt column, the metrics and gates that apply, the check
that the model was not trained on the data, and the content address of the record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from dataflow.errors import DataflowError
from dataflow.filehash import file_digest
from dataflow.fingerprint import digest
from dataflow.llm import SpecError, model_identity, spec_problems
from dataflow.trainers.evaluation.exit_gates import EXIT_GATES, default_gates
from dataflow.trainers.evaluation.options import METRICS, EvalOptions
from dataflow.trainers.inputs import BuildOutput, find_output, require_schema
from dataflow.trainers.rewards import VERIFIERS
from dataflow.trainers.runs import read_run, resolve_model, trainable_dir

PROMPT_COLUMN = {"prompt": "prompt", "preference": "prompt", "sft": "messages", "conversation": "messages"}


@dataclass(frozen=True)
class EvalPlan:
    """What ``evaluate`` runs: model specs, data, metrics, gates, and where the record goes."""

    model: str  # MODEL as given
    policy: str  # its model spec
    run_dir: Path | None
    run: dict[str, Any] | None
    data: BuildOutput
    prompt_column: str
    columns: tuple[str, ...]  # the data columns the evaluation reads
    options: EvalOptions
    metrics: tuple[str, ...]
    skipped: dict[str, str]  # metric -> why it is not measured
    gates: tuple[str, ...]
    baseline: str | None  # the model specs used (None: that metric is not measured)
    reference: str | None
    judge: str | None
    verifiers: tuple[str, ...]  # those the prompts name; empty when nothing is verified
    name: str
    directory: Path  # the record is <directory>/<name>.json, its build <directory>/<name>/

    @property
    def build_dir(self) -> Path:
        return self.directory / self.name

    @property
    def record_path(self) -> Path:
        return self.directory / f"{self.name}.json"


def plan_evaluation(model: str, on: str, options: EvalOptions, out: Path, runs: Path) -> EvalPlan:
    """The plan, or a DataflowError saying what cannot work, before any model loads."""
    problems = options.problems() + _choice_problems(options)
    if problems:
        raise DataflowError(f"eval options: {'; '.join(problems)}")
    policy, run_dir = _model(model, runs, "MODEL")
    run = read_run(run_dir) if run_dir else None
    data = find_output(on, out)
    require_schema(data, tuple(PROMPT_COLUMN), "an evaluation")
    if run:
        _check_held_out(run, run_dir, data)
    base = run["base_model"] if run else None
    baseline = _optional_model(options.baseline or base, runs, "--baseline")
    reference = _optional_model(options.reference or base, runs, "--reference")
    metrics, skipped = _metrics(options, data, baseline, reference)
    baseline = baseline if "win_rate" in metrics else None
    reference = reference if "kl" in metrics else None
    given_judge = options.judge != EvalOptions().judge  # a judge given is checked, measured or not
    judge = _model(options.judge, runs, "--judge")[0] if baseline or given_judge else None
    judge = judge if baseline else None
    if reference:
        _check_weights(policy, reference)
    gates = _gates(options, metrics, skipped, run)
    named = "verifier" in pl.read_parquet_schema(data.path)  # each prompt may name its verifier
    checked = data.schema == "prompt" and {"pass@k", "format"} & set(metrics)
    verifiers = _verifiers(data, named, options.verifier) if checked else ()
    column = PROMPT_COLUMN[data.schema]
    columns = ("id", column, *(("answer",) if verifiers else ()), *(("verifier",) if verifiers and named else ()))
    identities = {role: model_identity(spec) if spec else None for role, spec in
                  (("model", policy), ("baseline", baseline), ("judge", judge), ("reference", reference))}
    measured = {**options.measured(), "metrics": metrics, "samples": options.samples_per_prompt,
                "baseline": None, "reference": None, "judge": None}  # the models by identity, above
    address = digest([identities, data.fingerprint or file_digest(data.path), measured], size=5)
    directory = run_dir / "eval" if run_dir else runs / "evals"
    return EvalPlan(model, policy, run_dir, run, data, column, columns, options, metrics, skipped, gates, baseline,
                    reference, judge, verifiers, f"{data.name}-{address}", directory)


def _choice_problems(options: EvalOptions) -> list[str]:
    found = [] if options.verifier in VERIFIERS else \
        [f"verifier {options.verifier!r} is not one of {', '.join(VERIFIERS)}"]
    return found + [f"unknown gate {g!r}: choose from {', '.join(EXIT_GATES)}" for g in options.gates or ()
                    if g not in EXIT_GATES]


def _model(text: str, runs: Path, what: str) -> tuple[str, Path | None]:
    """The model spec of MODEL, --baseline, --reference or --judge (a spec or a run), checked."""
    try:
        spec, run_dir = resolve_model(text, runs)
    except (SpecError, DataflowError) as exc:
        raise DataflowError(f"{what}: {exc}") from None
    if problems := spec_problems(spec):
        raise DataflowError(f"{what} {text!r}: {'; '.join(problems)}")
    return spec, run_dir


def _optional_model(text: str | None, runs: Path, what: str) -> str | None:
    return _model(text, runs, what)[0] if text else None


def _check_held_out(run: dict[str, Any], run_dir: Path, data: BuildOutput) -> None:
    for used in run.get("inputs", []):
        if data.fingerprint and used.get("fingerprint") == data.fingerprint:
            raise DataflowError(
                f"run {run_dir.name} was trained on output '{used.get('output')}' of {used.get('build')}, and "
                f"'{data.name}' in {data.build} is that same data (fingerprint {data.fingerprint[:12]}): an evaluation "
                f"on training data measures memory, not the model. Evaluate on a held-out output, e.g. the eval "
                f"part of `node.split(eval_fraction=...)` declared with p.output(...)")


def _metrics(options: EvalOptions, data: BuildOutput, baseline: str | None,
             reference: str | None) -> tuple[tuple[str, ...], dict[str, str]]:
    """The metrics measured (those asked, else every one that applies) and why the others are not."""
    why_not = {"pass@k": None if data.schema == "prompt" else
               f"output '{data.name}' holds {data.schema} records, without gold answers",
               "win_rate": None if baseline else "no baseline model: give --baseline MODEL",
               "kl": None if reference else "no reference model: give --reference MODEL"}
    if not options.metrics:
        chosen = tuple(m for m in METRICS if not why_not.get(m))
        return chosen, {m: why_not[m] for m in METRICS if why_not.get(m)}
    for metric in options.metrics:
        if metric == "pass@k":
            require_schema(data, ("prompt",), "pass@k")
        elif why_not.get(metric):
            raise DataflowError(f"{metric} cannot be measured: {why_not[metric]} (a run's default is its base model)")
    chosen = tuple(m for m in METRICS if m in options.metrics)
    return chosen, {m: "not asked (--metrics)" for m in METRICS if m not in chosen}


def _check_weights(policy: str, reference: str) -> None:
    for what, spec in (("the evaluated model", policy), ("the reference model", reference)):
        try:
            trainable_dir(spec)
        except DataflowError as exc:
            raise DataflowError(f"KL needs the weights of both models, and {what} has none here: {exc}; or leave "
                                f"KL out (--metrics without kl)") from None


def _gates(options: EvalOptions, metrics: tuple[str, ...], skipped: dict[str, str],
           run: dict[str, Any] | None) -> tuple[str, ...]:
    if options.gates is None:
        return default_gates(run["trainer"] if run else None, metrics)
    for name in options.gates:
        metric = EXIT_GATES[name].metric
        if metric not in metrics:
            raise DataflowError(f"gate {name} needs the {metric} metric, which this evaluation does not measure: "
                                f"{skipped.get(metric)}")
    return tuple(options.gates)


def _verifiers(data: BuildOutput, named: bool, default: str) -> tuple[str, ...]:
    """The verifiers the prompts name (``default`` where a prompt names none)."""
    if not named:
        return (default,)
    names = pl.scan_parquet(data.path).select(pl.col("verifier").fill_null(default).unique()).collect()
    unknown = sorted(set(names["verifier"]) - set(VERIFIERS))
    if unknown:
        raise DataflowError(f"output '{data.name}' names verifier(s) {', '.join(map(repr, unknown))}; an evaluation "
                            f"checks answers with {', '.join(VERIFIERS)}")
    return tuple(sorted(names["verifier"]))
