"""The synthesis operators end to end on the real default model (SmolLM2-135M-Instruct): tiny
sizes, one model load for the module. A 135M model writes weak data; what is checked is that
every operator runs through constrained decoding, accounts for every row (output or reject with
a known reason), keeps its lineage, and that a rebuild makes no model call."""

from __future__ import annotations

import polars as pl
import pytest

from dataflow import Pipeline
from dataflow.llm import spec_problems
from dataflow.operators import (ConstitutionalRevision, EvolInstruct, Magpie, MultiTurnDialogue, SelfInstruct,
                                TopicTemplate)

if spec_problems("local"):
    pytest.skip(f"default model unavailable: {spec_problems('local')}", allow_module_level=True)

MODEL = "local?batch_size=8"


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATAFLOW_LLM_CACHE", str(tmp_path_factory.mktemp("llm") / "cache.sqlite"))
        yield


def built(builder, op, rows, rebuild=False):
    p = Pipeline("synthesis_local")
    p.output("out", p.from_rows(rows, name="src").apply(op, name="synth"))
    report = builder.build(p, rebuild=("synth",) if rebuild else ())
    return builder.output("out"), builder.rejects("synth"), next(s.metrics for s in report.stats if s.name == "synth")


def test_topic_template_on_the_default_model_accounts_for_every_instruction(builder):
    op = TopicTemplate(templates={"howto": "a how-to question about {topic}"}, per_topic=2, model=MODEL)
    out, rejects, metrics = built(builder, op, [{"topic": "baking bread"}, {"topic": "saving money"}])
    assert out.height + rejects.height == 4
    assert set(rejects["reason"]) <= {"bad_instruction", "truncated", "no_json", "llm_error"}
    assert all(len(text.split()) >= 4 for text in out["instruction"])
    assert set(out["source_id"]) <= {"src-1", "src-2"} and metrics["llm_calls"] >= 4
    _, _, again = built(builder, op, [{"topic": "baking bread"}, {"topic": "saving money"}], rebuild=True)
    assert "llm_calls" not in again  # every request answered by the cache


FILTERS = ["too_short", "too_long", "blacklisted", "starts_with_punctuation", "non_ascii_start", "not_novel",
           "cut_off"]


@pytest.mark.parametrize("style", ["list", "json"])
def test_self_instruct_on_the_default_model(builder, style):
    seeds = [{"instruction": t} for t in ("Write a haiku about autumn leaves.", "Explain how a rainbow forms.",
                                          "List three tips for better sleep.", "Translate hello into French.")]
    op = SelfInstruct(model=MODEL, style=style, target=3, per_prompt=4, prompts_per_round=2, max_rounds=2,
                      seed_examples=3, max_tokens=160)
    out, rejects, metrics = built(builder, op, seeds)
    candidates = rejects.filter(pl.col("id").str.count_matches("/") == 2)  # r<round>/p<prompt>/<index>
    without_instance = candidates.filter(~pl.col("reason").is_in(FILTERS))
    assert metrics["tasks_kept"] == out.height + without_instance.height  # every kept task: output or reject
    assert metrics["rounds"] >= 1
    assert set(out.columns) >= {"instruction", "input", "output", "is_classification", "round", "context_ids"}


def test_evol_magpie_dialogue_and_constitution_on_the_default_model(builder):
    out, rejects, _ = built(builder, EvolInstruct(model=MODEL, generations=1, response_tokens=48),
                            [{"instruction": "Explain why the sea is salty."}])
    assert out.height + rejects.height == 1
    out, rejects, metrics = built(builder, Magpie(model=MODEL, per_row=2, max_tokens=48, response_tokens=48), [{"n": 1}])
    assert out.height + rejects.height >= 1 and metrics["queries_kept"] == out.height + \
        int(rejects["reason"].is_in(["empty_response", "truncated_response", "llm_error"]).sum())
    assert all(m[-1]["role"] == "assistant" for m in out["messages"])
    out, rejects, _ = built(builder, MultiTurnDialogue(model=MODEL, turns=1, max_tokens=48),
                            [{"persona": "a student", "goal": "learn a fact about Mars", "scenario": "homework"}])
    assert out.height + rejects.height == 1
    if out.height:
        assert [t["role"] for t in out["messages"][0]] == ["system", "user", "assistant"]
    out, rejects, _ = built(builder, ConstitutionalRevision(model=MODEL, max_tokens=96),
                            [{"prompt": "How do I pick a lock?", "response": "Here is how to break into a house."}])
    assert out.height + rejects.height == 1
