"""A GRPO prompt set: math word problems -> K sampled solutions -> math-verify -> pass rate ->
the learnable band (the model solves a prompt sometimes, not always).

The system instruction is a turn of the exported ``prompt``: the samples are generated from that
prompt as it is, so the trainer sees the prompt the pass rates were measured on. A sample cut off
at ``max_tokens`` counts as failed.

    dataflow build pipelines/grpo_math.py                       # 24 one-step problems x 8 samples, CPU
    dataflow build pipelines/grpo_math.py --set difficulty=any --set problems=140 --set k=16 \\
        --set model=vllm:/models/qwen
"""

import polars as pl

from dataflow import Pipeline
from dataflow.operators import BestOfK, MathVerify, PassRate, ToPrompt, learnable_band

SYSTEM = "Give the calculation, then end with: The answer is <number>."
DIFFICULTIES = ("one_step", "easy", "medium", "hard")

p = Pipeline("grpo_math", description="Math word problems whose pass rate under the policy model is "
                                      "strictly between 0 and 1, with gold answers for a reward function.")
n_problems = p.param("problems", 24)
k = p.param("k", 8)
model = p.param("model", "local")
max_tokens = p.param("max_tokens", 128)
difficulty = p.param("difficulty", "one_step", help=f"one of {', '.join(DIFFICULTIES)}, or any; the embedded "
                                                     "135M model solves one_step problems sometimes, harder ones "
                                                     "almost never")

problems = p.concat(p.read_jsonl("data/one_step_problems.jsonl", name="one_step"),
                    p.read_jsonl("data/math_word_problems.jsonl", name="word_problems"), name="problems")
chosen = problems.filter(pl.col("difficulty") == difficulty if difficulty != "any" else pl.lit(True),
                         reason=f"difficulty is not {difficulty}", name="by_difficulty")
prompts = chosen.sample(n_problems, seed=0, name="sampled").apply(
    ToPrompt(question="question", answer="answer", verifier="math", system=SYSTEM), name="prompts")
samples = prompts.apply(BestOfK(conversation="prompt", model=model, k=k, temperatures=(0.7, 1.0),
                                max_tokens=max_tokens), name="samples")
verified = samples.apply(MathVerify(response="response", answer="answer"), name="verified")
rates = verified.apply(PassRate(carry=("prompt", "answer", "verifier")), name="rates")
p.output("grpo_prompts", rates.apply(learnable_band(), name="learnable"), schema="prompt")
