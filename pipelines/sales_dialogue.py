"""The sales-assistant case: a domain spec (scope, styles, prohibited actions) -> customer personas x
products x scenarios -> multi-turn sales dialogues with a simulated customer -> a constitutional
critique of the assistant's last turn against the prohibited actions, and a revision where it
breaks one -> a ShareGPT SFT set and preference pairs (revision chosen, original rejected).

    dataflow build pipelines/sales_dialogue.py                         # 6 dialogues, default model
    dataflow build pipelines/sales_dialogue.py --set dialogues=48 --set turns=4 --set model=vllm:/models/qwen
"""

import itertools
import json
from pathlib import Path

import polars as pl

from dataflow import Pipeline
from dataflow.operators import ConstitutionalRevision, MultiTurnDialogue
from dataflow.schemas import MESSAGES

DOMAIN = json.loads((Path(__file__).parent / "data" / "sales_domain.json").read_text())
SHAREGPT = pl.List(pl.Struct({"from": pl.String, "value": pl.String}))
SPEAKERS = {"system": "system", "user": "human", "assistant": "gpt"}

p = Pipeline("sales_dialogue", description=f"Sales dialogues for {DOMAIN['company']}'s assistant, revised against "
                                           f"its prohibited actions.")
n_dialogues = p.param("dialogues", 6)
turns = p.param("turns", 2)
model = p.param("model", "local")

cases = [{"persona": persona, "product": product, "scenario": scenario,
          "goal": f"decide whether the {product} suits you and get a price for it"}
         for persona, product, scenario in itertools.product(DOMAIN["personas"], DOMAIN["products"],
                                                              DOMAIN["scenarios"])]
chosen = p.from_rows(cases, name="cases").sample(n_dialogues, seed=0, name="chosen_cases")
dialogues = chosen.apply(MultiTurnDialogue(model=model, system=DOMAIN["assistant"], turns=turns), name="dialogues")
last_turn = dialogues.map(context=pl.col("messages").list.head(pl.col("messages").list.len() - 1),
                          reply=pl.col("messages").list.last().struct.field("content"), name="last_turn")
revised = last_turn.apply(ConstitutionalRevision(prompt="context", response="reply", model=model,
                                                 principles=tuple(DOMAIN["prohibited_actions"])), name="revised")


def revised_conversation(row: dict) -> dict:
    turns = row["context"] + [{"role": "assistant", "content": row["revision"]}]
    return {"conversations": [{"from": SPEAKERS[t["role"]], "value": t["content"]} for t in turns]}


def preference(row: dict) -> dict:
    return {"prompt": row["context"], "chosen": [{"role": "assistant", "content": row["revision"]}],
            "rejected": [{"role": "assistant", "content": row["reply"]}]}


sharegpt = revised.map(revised_conversation, inputs={"context": MESSAGES, "revision": str},
                       outputs={"conversations": SHAREGPT}, name="sharegpt")
pairs = revised.filter(pl.col("revised"), reason="no prohibited action found: nothing to pair", name="violations") \
    .map(preference, inputs={"context": MESSAGES, "revision": str, "reply": str},
         outputs={"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES}, name="pairs")
p.output("sft", sharegpt.select("id", "conversations", "persona", "product", "scenario", "ended", name="sft_rows"))
p.output("dpo", pairs.select("id", "prompt", "chosen", "rejected", "principle", "critique", name="pair_rows")
         .validate("preference", name="valid_pairs"), schema="preference")
p.output("revised_dialogues", revised)
