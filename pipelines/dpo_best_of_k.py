"""DPO pairs by best-of-K: prompts -> K candidates from the default model -> a verifier or a judge
says which is better -> pairs.

Two kinds of prompts. Math problems with gold answers: math-verify says which candidates are right,
and a right one is chosen over a wrong one, a real signal even from a small model. Open
instructions: an LLM judge scores the candidates; the embedded 135M judge can hardly tell answers
apart (set ``judge_model`` to a real model for pairs worth training on). Each pair says which made
it (``preferred_by``). A candidate cut off at ``max_tokens`` is never chosen. Every prompt holds the
system turn its candidates were generated with.

    dataflow build pipelines/dpo_best_of_k.py       # 32 problems + 8 instructions x 4 candidates, CPU
    dataflow build pipelines/dpo_best_of_k.py --set prompts=2000 --set problems=0 \\
        --set model=vllm:/models/qwen --set judge_model=openai:http://127.0.0.1:8000/v1#judge   # at scale
"""

import polars as pl

from dataflow import Pipeline
from dataflow.operators import (BestOfK, ConversationPrompt, JudgeScore, MathVerify, PreferencePairs, ToConversation,
                                ToPrompt)

SYSTEM = "You are a helpful assistant. Answer briefly."
MATH_SYSTEM = "Give the calculation, then end with: The answer is <number>."

p = Pipeline("dpo_best_of_k", description="Preference pairs from K sampled responses per prompt: right over wrong "
                                          "answers by math-verify, and by an LLM judge's scores; ties never pair.")
n_prompts = p.param("prompts", 8, help="open instructions, whose candidates the judge scores")
n_problems = p.param("problems", 32, help="math problems, whose candidates math-verify checks")
k = p.param("k", 4)
model = p.param("model", "local")
judge_model = p.param("judge_model", "local")
max_tokens = p.param("max_tokens", 128)
min_margin = p.param("min_margin", 0.2, help="the least score margin of a judged pair (weighted judge scores)")


def candidates_of(prompts, name: str):
    return prompts.apply(BestOfK(conversation="prompt", model=model, k=k, temperatures=(0.3, 0.7, 1.0),
                                 max_tokens=max_tokens), name=name)


raw = p.read_jsonl("data/instructions.jsonl", name="raw", on_error="reject")
chats = raw.apply(ToConversation(), name="chats").dedup("messages", name="deduped")
instructions = chats.sample(n_prompts, seed=0, name="sampled").apply(ConversationPrompt(system=SYSTEM),
                                                                     name="prompts")
scored = candidates_of(instructions, "candidates").apply(
    JudgeScore(rubric="helpfulness", prompt="prompt", response="response", models=(judge_model,), max_tokens=48),
    name="scored")
judged = scored.apply(PreferencePairs(score="score", prompt="prompt", min_margin=min_margin, max_length_ratio=3.0),
                      name="judged_pairs").map(preferred_by=pl.lit(f"judge:{judge_model}"), name="judged")

problems = p.read_jsonl("data/one_step_problems.jsonl", name="problems").rename(
    {"solution": "reference_solution"}, name="problems_with_reference")
math_prompts = problems.sample(n_problems, seed=0, name="sampled_problems").apply(
    ToPrompt(verifier="math", system=MATH_SYSTEM), name="math_prompts")
verified = candidates_of(math_prompts, "solutions").apply(MathVerify(), name="verified")
right_over_wrong = verified.apply(PreferencePairs(score="reward", prompt="prompt"), name="verified_pairs").map(
    preferred_by=pl.lit("math-verify"), name="right_over_wrong")

p.output("scored_candidates", scored)
p.output("verified_candidates", verified)
p.output("dpo_pairs", p.concat(right_over_wrong, judged, name="pairs").validate("preference", name="valid_pairs"),
         schema="preference")
