"""Rejection-sampling fine-tuning (RFT) on multiplication facts, in rounds: the model samples answers to
training problems, the checked-correct ones become SFT data, the model trained on them samples the next
round's data, and every round's model is evaluated on held-out facts (``dataflow iterate``).

    dataflow iterate pipelines/rft_math.py --rounds 2                         # the loop, on the default model
    dataflow iterate pipelines/rft_math.py --rounds 1 --train-on unfiltered   # the control: unchecked samples
    dataflow build pipelines/rft_math.py                                      # one round's data only

Problems are "What is 7 times 13?" for products of 2..9 by 2..19, as generated below. A fact (the
unordered pair) is held out or not as a whole, so no held-out product is asked in training in either
order; ``dataflow iterate`` also checks that by decontamination. An answer is right when the last number
of the reply is the product (the regex verifier: restating the question does not pass). Both training
outputs keep only samples the model ended by itself (not cut off at ``max_tokens``), one per distinct
reply: ``verified`` keeps the right ones, ``unfiltered`` as many, right or wrong, for the control.
"""

import random

import polars as pl

from dataflow import Pipeline, global_op
from dataflow.operators import BestOfK, MatchVerify, ToPrompt

SYSTEM = "Answer in one short sentence."
PHRASINGS = ("What is {a} times {b}?", "Compute {a} x {b}.", "What is the product of {a} and {b}?")
HELD_OUT_SHARE = 0.25


def multiplication_problems(seed: int = 7) -> list[dict]:
    """Every phrasing of a x b and b x a for 2 <= min(a, b) <= 9, max(a, b) <= 19; a seeded quarter of the
    facts is held out. The gold answer is a pattern: the product as the reply's last number."""
    facts = [(a, b) for a in range(2, 10) for b in range(a, 20)]
    held_out = set(random.Random(seed).sample(facts, round(len(facts) * HELD_OUT_SHARE)))
    rows = []
    for a, b in facts:
        for x, y in {(a, b), (b, a)}:
            for number, phrasing in enumerate(PHRASINGS):
                rows.append({"name": f"{x}x{y}-{number}", "question": phrasing.format(a=x, b=y),
                             "answer": rf"(?<![0-9.]){a * b}(?![0-9])[^0-9]*$", "fact": f"{a}x{b}",
                             "held_out": (a, b) in held_out})
    return sorted(rows, key=lambda row: row["name"])


@global_op(inputs={"reward": float})
def as_many_as_verified(table: pl.DataFrame) -> pl.DataFrame:
    """As many rows as have the right answer, drawn regardless of their answer (by a hash of the id)."""
    return table.filter(pl.col("id").hash(17).rank("ordinal") <= (pl.col("reward") == 1.0).sum())


def as_sft(node, name: str):
    """The prompt and the sampled reply as one SFT conversation."""
    reply = pl.concat_list(pl.struct(role=pl.lit("assistant"), content=pl.col("response")))
    return node.map(messages=pl.col("prompt").list.concat(reply), name=f"{name}_conversations").select(
        "id", "messages", "fact", "reward", name=name)


p = Pipeline("rft_math", description="Rejection-sampling fine-tuning data: the policy's checked-correct answers "
                                     "to multiplication problems, a same-size unchecked control, held-out facts.")
model = p.param("model", "local", help="the policy that samples; `dataflow iterate` binds it to the best model")
round_number = p.param("round", 1, help="the round, a part of the samples' seed; `dataflow iterate` binds it")
seed = p.param("seed", 0, help="the repetition: the problems sampled and the samples' seed")
n_problems = p.param("problems", 192, help="training problems sampled per round")
k = p.param("k", 4, help="samples per problem")
max_tokens = p.param("max_tokens", 40, help="tokens per sample; a sample cut off here is not used")

prompts = p.from_rows(multiplication_problems(), name="problems").apply(
    ToPrompt(question="question", answer="answer", verifier="regex", system=SYSTEM), name="prompts")
held_out = prompts.filter(pl.col("held_out"), reason="a training fact", name="held_out_facts")
training = prompts.filter(~pl.col("held_out"), reason="a held-out fact", name="training_facts")
problems = training.sample(n_problems, seed=1000 * seed + round_number, name="sampled")
samples = problems.apply(BestOfK(conversation="prompt", model=model, k=k, temperature=0.8, max_tokens=max_tokens,
                                 seed=1000 * seed + round_number), name="samples")
checked = samples.apply(MatchVerify(mode="regex"), name="checked")
ended = checked.filter(pl.col("response_finish_reason") == "stop", reason="cut off at max_tokens", name="ended")
replies = ended.dedup("prompt_id", "response", name="distinct_replies")
right = replies.filter(pl.col("reward") == 1.0, reason="wrong answer", name="right_answers")

p.output("verified", as_sft(right, "verified_sft"), schema="sft")
p.output("unfiltered", as_sft(replies.apply(as_many_as_verified, name="unchecked"), "unfiltered_sft"), schema="sft")
p.output("held_out", held_out.select("id", "prompt", "answer", "verifier", "fact", name="held_out_prompts"),
         schema="prompt")
p.rounds(train="verified", evaluate="held_out", trainer="sft",
         config={"epochs": 2, "learning_rate": 5e-5, "batch_size": 8, "seed": seed},
         evaluation={"metrics": ["pass@k"], "k": 1, "samples": 4, "temperature": 0.8, "max_tokens": max_tokens,
                     "seed": 0})
