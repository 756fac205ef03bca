"""A GRPO prompt set: math word problems -> K sampled solutions -> math-verify -> pass rate ->
the learnable band (the model solves a prompt sometimes, not always).

    dataflow build pipelines/grpo_math.py                       # 12 problems x 4 samples, CPU
    dataflow build pipelines/grpo_math.py --set problems=80 --set k=16 --set model=vllm:/models/qwen
"""

import polars as pl

from dataflow import Pipeline
from dataflow.operators import BestOfK, MathVerify, PassRate, ToPrompt, learnable_band

p = Pipeline("grpo_math", description="Math word problems whose pass rate under the policy model is "
                                      "strictly between 0 and 1, with gold answers for a reward function.")
n_problems = p.param("problems", 12)
k = p.param("k", 4)
model = p.param("model", "local")
max_tokens = p.param("max_tokens", 128)
difficulty = p.param("difficulty", "easy")

problems = p.read_jsonl("data/math_word_problems.jsonl", name="problems")
chosen = problems.filter(pl.col("difficulty") == difficulty if difficulty != "any" else pl.lit(True),
                         reason=f"difficulty is not {difficulty}", name="by_difficulty")
prompts = chosen.sample(n_problems, seed=0, name="sampled").apply(
    ToPrompt(question="question", answer="answer", verifier="math"), name="prompts")
samples = prompts.apply(BestOfK(conversation="prompt", model=model, k=k, temperatures=(0.7, 1.0),
                                max_tokens=max_tokens,
                                system="Solve the problem step by step. End with: The answer is <number>."),
                        name="samples")
verified = samples.apply(MathVerify(response="response", answer="answer"), name="verified")
rates = verified.apply(PassRate(carry=("prompt", "answer", "verifier")), name="rates")
p.output("grpo_prompts", rates.apply(learnable_band(), name="learnable"), schema="prompt")
