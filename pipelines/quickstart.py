"""Quickstart: a mixed-format instruction set -> conversations -> dedup -> quality filters -> split.

    dataflow build pipelines/quickstart.py
    dataflow query "select reason, count(*) from rejects group by reason"
"""

import polars as pl

from dataflow import Pipeline
from dataflow.operators import ToConversation

p = Pipeline("quickstart", description="Hand-written instructions (Alpaca, ShareGPT and OpenAI formats) "
                                       "normalized into deduplicated, filtered SFT conversations.")
min_words = p.param("min_response_words", 3)
eval_fraction = p.param("eval_fraction", 0.1)
seed = p.param("seed", 0)

REFUSAL = r"(?i)as an ai language model|i'm sorry, but i can(no|')t|i cannot (help|assist)"
response = pl.col("messages").list.last().struct.field("content")

raw = p.read_jsonl("data/instructions.jsonl", name="raw", on_error="reject")
chats = raw.apply(ToConversation(), name="chats")
deduped = chats.dedup("messages", name="deduped")
measured = deduped.map(response_words=response.str.split(" ").list.len(),
                      is_refusal=response.str.contains(REFUSAL), name="measured")
substantive = measured.filter(pl.col("response_words") >= min_words, reason="response too short",
                              score="response_words", name="substantive")
helpful = substantive.filter(~pl.col("is_refusal"), reason="refusal or boilerplate", name="helpful")
train, evaluation = helpful.split(eval_fraction=eval_fraction, seed=seed, stratify="source")

p.output("train", train, schema="sft")
p.output("eval", evaluation, schema="sft")
