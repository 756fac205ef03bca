"""``evaluate(model, on, options)``: measure a model (a spec or a training run) on a build output and
write the record beside the run (``runs/<id>/eval/<name>.json``) or under ``<runs>/evals/``.

The record (JSON):

    name      <output>-<hash of model, baseline, reference and judge identities, data, measured options>
    path      the record's file; build: the evaluation's build folder (its generations, verdicts, KL rows)
    model     given (as written), spec, run, trainer, base_model (run fields null for a model spec)
    data      the output: output, build, pipeline, schema, fingerprint, rows
    options   the measured options; baseline, reference, judge: the model specs used (null: not used)
    metrics   pass@1, pass@<k>: value, ci95, prompts, samples (pass@1 also unverified)
              format: value, generations, finished, answer_found
              win_rate: value, ci95, pairs, wins, losses, ties, p_win, position_bias_first, consistent_share
              kl: per_token, ci95 (per token), per_sequence, samples, tokens
              distinct_2: value, responses
    skipped   metric -> why it was not measured
    rejected  node -> reason -> rows a model step rejected (a failed request, a judge reply without a verdict):
              rows the metrics lack; the next evaluation retries failed requests
    gates     [{gate, condition, measure, value, bound, above, passed}]; passed: all of them passed

Each ``ci95`` is a 95% percentile bootstrap interval over the units of its mean (prompts, pairs or
samples; see ``metrics.bootstrap_interval``), seeded, so a re-evaluation gives the same record.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from dataflow.build import build
from dataflow.catalog import query
from dataflow.progress import Progress
from dataflow.records import read_manifest, write_record
from dataflow.trainers.evaluation.exit_gates import check_gates
from dataflow.trainers.evaluation.metrics import (
    distinct_metric,
    format_metric,
    kl_metric,
    pass_metrics,
    win_rate_metric,
)
from dataflow.trainers.evaluation.options import EvalOptions
from dataflow.trainers.evaluation.pipeline import MODEL_NODES, eval_pipeline
from dataflow.trainers.evaluation.plan import EvalPlan, plan_evaluation


def evaluate(model: str, on: str, options: EvalOptions = EvalOptions(), *, out: Path | str = "out",
             runs: Path | str = "runs", progress: Progress | None = None) -> dict[str, Any]:
    """Evaluate ``model`` (a model spec, or a run id, id prefix or folder in ``runs``) on the build
    output ``on`` (a name in the build folder ``out``, or an output folder) and return the record
    (see the module doc), also written to ``record["path"]``. Gates are checked, never raised."""
    plan = plan_evaluation(model, on, options, Path(out), Path(runs))
    build(eval_pipeline(plan), plan.build_dir, progress or Progress(sys.stderr))
    metrics = measure(plan)
    gates = check_gates(plan.gates, metrics, options.bounds())
    record = {"name": plan.name, "path": str(plan.record_path), "build": str(plan.build_dir),
              "model": _model_record(plan), "data": plan.data.record(),
              "options": {**asdict(options), "baseline": plan.baseline, "reference": plan.reference,
                          "judge": plan.judge},
              "metrics": metrics, "skipped": plan.skipped, "rejected": rejected_rows(plan.build_dir),
              "gates": gates, "passed": all(g["passed"] for g in gates)}
    write_record(plan.record_path, record)
    return record


def measure(plan: EvalPlan) -> dict[str, dict[str, Any]]:
    """Every metric of the plan, from the outputs of its build."""
    def output(name: str) -> pl.DataFrame:
        return pl.read_parquet(plan.build_dir / name / "data.parquet")

    found: dict[str, dict[str, Any]] = {}
    if "pass@k" in plan.metrics:
        found.update(pass_metrics(output("samples"), plan.options.k))
    if "format" in plan.metrics:
        found["format"] = format_metric(output("samples"))
    if "win_rate" in plan.metrics:
        judged = read_manifest(plan.build_dir)["nodes"]["verdicts"]["metrics"]
        found["win_rate"] = win_rate_metric(output("verdicts"), judged)
    if "kl" in plan.metrics:
        found["kl"] = kl_metric(output("kl"))
    if "distinct_2" in plan.metrics:
        found["distinct_2"] = distinct_metric(output("responses"))
    return found


def rejected_rows(build_dir: Path) -> dict[str, dict[str, int]]:
    """Rows the evaluation's model steps rejected, by node and reason."""
    nodes = read_manifest(build_dir)["nodes"]
    if not any(nodes[name]["rejected"] for name in MODEL_NODES if name in nodes):
        return {}
    listed = ", ".join(f"'{name}'" for name in MODEL_NODES)
    found: dict[str, dict[str, int]] = {}
    for node, reason, rows in query(build_dir, f"select node, reason, count(*) from rejects where node in ({listed}) "
                                               f"group by all order by all").rows():
        found.setdefault(node, {})[reason] = rows
    return found


def _model_record(plan: EvalPlan) -> dict[str, Any]:
    run = plan.run or {}
    return {"given": plan.model, "spec": plan.policy, "run": plan.run_dir.name if plan.run_dir else None,
            "trainer": run.get("trainer"), "base_model": run.get("base_model")}
