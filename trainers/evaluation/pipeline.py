"""The evaluation as a dataflow pipeline, built into the evaluation's own folder: the build's cache,
crash safety and request cache make a re-evaluation with nothing changed a build that does nothing
(no model call), and every generation, verdict and KL value stays queryable
(``dataflow query --out <eval folder> "select * from verdicts"``).

    data -> [prompts: a seeded sample] -> generated (BestOfK, the model) -> graded (the verifiers): samples
                                                    \\-> responses (sample 0) -> pairs <- baseline (BestOfK)
                                                                               -> verdicts (PairwiseJudge)
         -> kl_prompts (a seeded sample) -> kl_samples (temperature 1) -> kl (SequenceKL)

Sample 0 of a prompt is the same request as the baseline's and every other evaluation's first sample
at these settings, so the request cache answers it once for all of them.
"""

from __future__ import annotations

import polars as pl

from dataflow.operators import BestOfK, PairwiseJudge
from dataflow.pipeline import Node, Pipeline
from dataflow.trainers.evaluation.kl import SequenceKL
from dataflow.trainers.evaluation.plan import EvalPlan
from dataflow.trainers.rewards import VERIFIERS

KL_TEMPERATURE = 1.0  # the KL estimate needs samples from the model's own distribution
MODEL_NODES = ("generated", "baseline", "verdicts", "kl_samples")  # their rejects are rows a metric lacks


def eval_pipeline(plan: EvalPlan) -> Pipeline:
    """The pipeline whose outputs ``samples``, ``responses``, ``verdicts`` and ``kl`` hold what the
    plan's metrics are computed from."""
    o, column = plan.options, plan.prompt_column
    p = Pipeline("eval", description=f"evaluation {plan.name} of {plan.model} on '{plan.data.name}'")
    prompts = p.read_parquet(plan.data.path.resolve(), name="data").select(*plan.columns, name="selected")
    if o.prompts:
        prompts = prompts.sample(o.prompts, seed=o.seed, name="prompts")

    def sampled(source: Node, model: str, k: int, temperature: float, name: str) -> Node:
        return source.apply(BestOfK(conversation=column, system=o.system, model=model, k=k, temperature=temperature,
                                    max_tokens=o.max_tokens, seed=o.seed), name=name)

    generated = sampled(prompts, plan.policy, o.samples_per_prompt if "pass@k" in plan.metrics else 1,
                        o.temperature, "generated")
    p.output("samples", _graded(p, generated, plan) if plan.verifiers else generated)
    responses = generated.filter(pl.col("sample_idx") == 0, reason="not the first sample", name="responses")
    p.output("responses", responses)
    if "win_rate" in plan.metrics:
        baseline = sampled(prompts, plan.baseline, 1, o.temperature, "baseline").select(
            "prompt_id", "response", name="baseline_responses").rename({"response": "baseline_response"},
                                                                       name="baseline_renamed")
        pairs = responses.join(baseline, on="prompt_id", name="pairs")
        p.output("verdicts", pairs.apply(PairwiseJudge(prompt=column, a="response", b="baseline_response",
                                                       models=(plan.judge,), rubric=o.rubric), name="verdicts"))
    if "kl" in plan.metrics:
        kl_samples = sampled(prompts.sample(o.kl_prompts, seed=o.seed, name="kl_prompts"), plan.policy, 1,
                             KL_TEMPERATURE, "kl_samples")
        p.output("kl", kl_samples.apply(SequenceKL(conversation=column, system=o.system, policy=plan.policy,
                                                   reference=plan.reference), name="kl"))
    return p


def _graded(p: Pipeline, samples: Node, plan: EvalPlan) -> Node:
    """Each sample checked by its prompt's verifier into ``correct`` and ``correct_detail``."""
    if len(plan.verifiers) == 1:
        return samples.apply(VERIFIERS[plan.verifiers[0]](output="correct"), name="graded")
    named = pl.col("verifier").fill_null(plan.options.verifier)
    parts = [samples.filter(named == name, reason=f"checked by another verifier than {name}", name=f"for_{name}")
             .apply(VERIFIERS[name](output="correct"), name=f"graded_{name}") for name in plan.verifiers]
    return p.concat(*parts, name="graded")
