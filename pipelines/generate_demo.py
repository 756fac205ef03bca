"""Generation on the embedded default model (SmolLM2-135M-Instruct, CPU): instructions ->
conversations -> a fresh response per prompt, and best-of-K candidates across temperatures.

    dataflow build pipelines/generate_demo.py                      # ~2-4 min on 2 cores, first time
    dataflow build pipelines/generate_demo.py --set prompts=64     # scales with the prompt count
    dataflow build pipelines/generate_demo.py --set model=openai:http://127.0.0.1:8000/v1#my-model
    dataflow query "select prompt_id, temperature, response from candidates limit 8"

The first build converts the packaged GGUF once into ~/.cache/dataflow/models; every request is
cached in ~/.cache/dataflow/llm_cache.sqlite, so a rebuild makes no model call.
"""

from dataflow import Pipeline
from dataflow.operators import BestOfK, Generate, ToConversation

p = Pipeline("generate_demo", description="Responses and best-of-K candidates from the embedded default model.")
prompts = p.param("prompts", 16, help="how many instructions to answer")
k = p.param("k", 2, help="candidates per prompt for best-of-K")
max_tokens = p.param("max_tokens", 128)
model = p.param("model", "local", help="model spec: local, hf:PATH, vllm:PATH, openai:URL#MODEL")
seed = p.param("seed", 0)

raw = p.read_jsonl("data/instructions.jsonl", name="raw", on_error="reject")
chats = raw.apply(ToConversation(), name="chats").dedup("messages", name="distinct_chats").limit(prompts, name="prompts")
answers = chats.apply(Generate(conversation="messages", model=model, system="You are a concise, helpful assistant.",
                               max_tokens=max_tokens, temperature=0.7, seed=seed), name="answers")
candidates = chats.limit(max(1, prompts // 2), name="bok_prompts").apply(
    BestOfK(conversation="messages", model=model, k=k, temperatures=(0.3, 1.0), max_tokens=max_tokens, seed=seed),
    name="candidates")

p.output("responses", answers)
p.output("candidates", candidates)
