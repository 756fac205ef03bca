"""Self-Instruct from a hand-written seed file: 60 seed tasks -> rounds of new tasks (the paper's
filters, ROUGE-L novelty against the seeds and every task kept so far) -> an input and output per
task -> near-duplicate removal -> SFT conversations.

    dataflow build pipelines/self_instruct.py                          # 16 new tasks, default model
    dataflow build pipelines/self_instruct.py --set target=5000 --set model=vllm:/models/qwen
"""

from dataflow import Pipeline
from dataflow.operators import MinHashDedup, SelfInstruct, ToConversation

p = Pipeline("self_instruct", description="New instruction-tuning tasks grown from seed tasks by the model itself, "
                                          "each novel by ROUGE-L against everything kept before it.")
target = p.param("target", 16)
model = p.param("model", "local")
prompts_per_round = p.param("prompts_per_round", 4)

seeds = p.read_jsonl("data/seed_tasks.jsonl", name="seeds", on_error="reject")
generated = seeds.apply(SelfInstruct(model=model, target=target, per_prompt=8, prompts_per_round=prompts_per_round,
                                     max_rounds=6), name="generated")
tasks = generated.apply(MinHashDedup(column="instruction", ngram=3, threshold=0.8), name="near_dedup")
sft = tasks.select("id", "instruction", "input", "output").apply(ToConversation(), name="conversations")
p.output("tasks", tasks)
p.output("sft", sft.validate("sft", name="valid_sft"), schema="sft")
