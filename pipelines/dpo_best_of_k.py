"""DPO pairs by best-of-K: prompts -> K candidates from the default model -> judge -> pairs.

    dataflow build pipelines/dpo_best_of_k.py                       # 8 prompts x 4 candidates, CPU
    dataflow build pipelines/dpo_best_of_k.py --set prompts=2000 --set model=vllm:/models/qwen \\
        --set judge_model=openai:http://127.0.0.1:8000/v1#judge      # the same file at scale
"""

from dataflow import Pipeline
from dataflow.operators import BestOfK, JudgeScore, PreferencePairs, ToConversation

p = Pipeline("dpo_best_of_k", description="Preference pairs from K sampled responses per prompt, "
                                          "scored by an LLM judge; ties never pair.")
n_prompts = p.param("prompts", 8)
k = p.param("k", 4)
model = p.param("model", "local")
judge_model = p.param("judge_model", "local")
max_tokens = p.param("max_tokens", 96)
min_margin = p.param("min_margin", 0.2, help="the least score margin of a pair (weighted judge scores)")

raw = p.read_jsonl("data/instructions.jsonl", name="raw", on_error="reject")
chats = raw.apply(ToConversation(), name="chats").dedup("messages", name="deduped")
prompts = chats.sample(n_prompts, seed=0, name="prompts")
candidates = prompts.apply(BestOfK(conversation="messages", model=model, k=k, temperatures=(0.3, 0.7, 1.0),
                                   max_tokens=max_tokens, system="You are a helpful assistant. Answer briefly."),
                           name="candidates")
scored = candidates.apply(JudgeScore(rubric="helpfulness", prompt="messages", response="response",
                                     models=(judge_model,)), name="scored")
pairs = scored.apply(PreferencePairs(score="score", prompt="messages", response="response",
                                     min_margin=min_margin, max_length_ratio=3.0), name="pairs")
p.output("scored_candidates", scored)
p.output("dpo_pairs", pairs.validate("preference", name="valid_pairs"), schema="preference")
