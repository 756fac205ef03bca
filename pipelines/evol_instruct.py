"""Evol-Instruct from the seed file: each seed instruction evolves for two generations (in depth:
constraints, deepening, concretizing, reasoning steps, a harder input; in breadth: a rarer
topic); WizardLM's four elimination rules drop the failed evolutions into rejects; the survivors
and their responses become SFT conversations.

    dataflow build pipelines/evol_instruct.py                          # 8 seeds x 2 generations
    dataflow build pipelines/evol_instruct.py --set seeds=60 --set generations=4 --set model=vllm:/models/qwen
"""

from dataflow import Pipeline
from dataflow.operators import EvolInstruct, ToConversation

p = Pipeline("evol_instruct", description="Harder and broader instructions evolved from seed tasks, with their "
                                          "responses and a lineage from each seed.")
n_seeds = p.param("seeds", 8)
generations = p.param("generations", 2)
model = p.param("model", "local")

seeds = p.read_jsonl("data/seed_tasks.jsonl", name="seeds", on_error="reject").sample(n_seeds, seed=0, name="sampled")
evolved = seeds.select("id", "instruction").apply(EvolInstruct(model=model, generations=generations), name="evolved")
sft = evolved.select("id", "instruction", "response").rename({"response": "output"}, name="alpaca") \
    .apply(ToConversation(), name="conversations")
p.output("evolved", evolved)
p.output("sft", sft.validate("sft", name="valid_sft"), schema="sft")
