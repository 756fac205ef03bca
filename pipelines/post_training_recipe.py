"""The post-training recipe end to end: topics x templates -> instructions -> exact and MinHash
dedup -> best-of-K responses at temperatures 0.3 / 0.7 / 1.0 -> three judges (relevance 0.4,
completeness 0.3, fluency 0.3) -> responses that echo their instruction left out -> the best above a
quality threshold -> a 5/25/70 quality pyramid -> preference pairs with a margin -> decontamination
against held-out eval instructions -> stage gates -> `sft` and `dpo` outputs. The gates that a 135M
default model may miss (topic coverage, pair diversity) warn; with a real model, drop `warn=True` to
make them stop the build.

    dataflow build pipelines/post_training_recipe.py                   # 6 topics, default model, CPU
    dataflow build pipelines/post_training_recipe.py --set topics=200 --set per_topic=10 \\
        --set model=vllm:/models/qwen --set judge_model=openai:http://127.0.0.1:8000/v1#judge
"""

import polars as pl

from dataflow import Pipeline
from dataflow.operators import (BestOfK, Decontaminate, EchoMeasures, JudgeScore, MinHashDedup, PreferencePairs,
                                PyramidSample, SelectBest, ToConversation, TopicTemplate)

TOPICS = ["personal finance", "home cooking", "python programming", "travel planning", "job interviews",
          "gardening", "first aid", "writing emails", "learning a language", "fitness at home", "astronomy",
          "small business marketing"]
TEMPLATES = {"howto": "a practical how-to question about {topic} from a {asker}",
             "explain": "a request to explain one concept of {topic} to a {asker}",
             "task": "a concrete writing or planning task in {topic} with all the details it needs"}
ASKERS = ["beginner", "busy parent", "student", "retired engineer"]
WEIGHTS = {"score_relevance": 0.4, "score_completeness": 0.3, "score_fluency": 0.3}

p = Pipeline("post_training_recipe", description="SFT and DPO sets synthesized from topics, judged, tiered, "
                                                 "paired and decontaminated.")
n_topics = p.param("topics", 6)
per_topic = p.param("per_topic", 3)
k = p.param("k", 3)
model = p.param("model", "local")
judge_model = p.param("judge_model", "local")
max_tokens = p.param("max_tokens", 96)
quality = p.param("quality", 3.0, help="the least weighted judge score of an SFT response")
min_margin = p.param("min_margin", 0.3, help="the least score margin of a preference pair")
max_echo = p.param("max_echo", 0.6, help="the largest share of a response's word 3-grams found in its instruction")

topics = p.from_rows([{"topic": t} for t in TOPICS], name="all_topics").limit(n_topics, name="topics")
instructions = topics.apply(TopicTemplate(templates=TEMPLATES, slots={"asker": ASKERS}, per_topic=per_topic,
                                          model=model), name="instructions") \
    .gate(min_coverage=0.8, column="topic", expected=TOPICS[:n_topics], warn=True)
unique = instructions.dedup("instruction", name="exact_dedup") \
    .apply(MinHashDedup(column="instruction", ngram=3, threshold=0.7), name="near_dedup")
candidates = unique.apply(BestOfK(prompt="{instruction}", model=model, k=k, temperatures=(0.3, 0.7, 1.0),
                                  max_tokens=max_tokens, system="You are a helpful assistant. Answer concisely."),
                          name="candidates")
scored = candidates.apply(EchoMeasures(), name="echo")
for rubric in ("relevance", "completeness", "fluency"):
    scored = scored.apply(JudgeScore(rubric=rubric, prompt="instruction", response="response", models=(judge_model,),
                                     output=f"score_{rubric}", max_tokens=64), name=f"judge_{rubric}")
weighted = scored.map(quality=sum(w * pl.col(c) for c, w in WEIGHTS.items()), name="weighted")
answered = weighted.filter(pl.col("echo_share") <= max_echo, reason="the response repeats its instruction",
                          score="echo_share", name="not_echoed")
best = answered.apply(SelectBest(score="quality", group="prompt_id"), name="best") \
    .filter(pl.col("quality") >= quality, reason=f"weighted judge score below {quality}", name="above_quality")
pyramid = best.apply(PyramidSample(score="quality", shares={"top": 0.05, "middle": 0.25, "base": 0.70},
                                   quantiles={"top": 0.95, "middle": 0.70, "base": None}, size=n_topics * per_topic),
                     name="pyramid")
sft = pyramid.select("id", "instruction", "response", "tier").rename({"response": "output"}, name="alpaca") \
    .apply(ToConversation(), name="conversations")
pairs = answered.apply(PreferencePairs(score="quality", prompt="instruction", response="response",
                                       min_margin=min_margin, max_length_ratio=3.0), name="pairs")
clean_pairs = pairs.apply(Decontaminate(columns=("prompt",), eval_sets=("data/eval_instructions.jsonl",),
                                        eval_columns=("prompt",)), name="decontaminated")
clean_sft = sft.apply(Decontaminate(columns=("messages",), eval_sets=("data/eval_instructions.jsonl",),
                                    eval_columns=("prompt",)), name="sft_decontaminated")
p.output("sft", clean_sft.validate("sft", name="valid_sft").gate(min_rows=1), schema="sft")
p.output("dpo", clean_pairs.validate("preference", name="valid_pairs")
         .gate(min_rows=1, min_valid_share=0.95, schema="preference")
         .gate(min_distinct_2=0.3, column="chosen", min_margin=min_margin, min_margin_share=1.0, warn=True),
         schema="preference")
p.output("scored_candidates", weighted)
