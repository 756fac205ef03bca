"""The basic operators on small real-looking data."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pytest

from dataflow import DataflowError, Operator, Pipeline, Result, batch_op, global_op
from dataflow.operators import ToConversation, ToPreference, ToPrompt

TEXTS = ["Paris is the capital of France.", "Water boils at 100 °C at sea level.",
         "  paris IS the capital of france ", "Ｐａｒｉｓ is the capital of France!", "Light travels fast."]


def rows(n: int, strata: int = 2) -> list[dict]:
    return [{"text": f"document {i}", "topic": f"t{i % strata}"} for i in range(n)]


def test_select_rename_cast_limit(builder):
    p = Pipeline("ops")
    src = p.from_rows([{"a": "1", "b": "x", "c": True}, {"a": "2", "b": "y", "c": False}], name="src")
    out = src.select("a", "b").rename({"b": "label"}).cast({"a": int}).limit(1)
    p.output("o", out)
    builder.build(p)
    assert builder.output("o").to_dicts() == [{"id": "src-1", "a": 1, "label": "x"}]


def test_cast_failure_names_the_node(builder):
    p = Pipeline("cast")
    p.output("o", p.from_rows([{"a": "1"}, {"a": "one"}], name="src").cast({"a": int}, name="as_int"))
    with pytest.raises(DataflowError, match="node 'as_int' failed: .*one"):
        builder.build(p)


def test_exact_dedup_normalizes_case_space_punctuation_and_width(builder):
    p = Pipeline("dedup")
    p.output("o", p.from_rows([{"text": t} for t in TEXTS], name="src").dedup("text", name="deduped"))
    builder.build(p)
    assert builder.output("o")["id"].to_list() == ["src-1", "src-2", "src-5"]
    assert builder.rejects("deduped")["id"].to_list() == ["src-3", "src-4"]


def test_exact_dedup_without_normalization_keeps_variants(builder):
    p = Pipeline("dedup")
    p.output("o", p.from_rows([{"text": t} for t in TEXTS], name="src").dedup("text", normalize=False))
    builder.build(p)
    assert builder.output("o").height == 5


def test_sample_is_seeded_and_independent_of_order(builder, tmp_path):
    def sampled(data, seed):
        p = Pipeline("sample")
        p.output("o", p.from_rows(data, name="src").sample(10, seed=seed))
        builder.build(p)
        return set(builder.output("o")["text"])

    data = [{"id": f"d{i}", "text": f"doc {i}"} for i in range(100)]
    first = sampled(data, 1)
    assert len(first) == 10
    assert sampled(list(reversed(data)), 1) == first
    assert sampled(data, 2) != first


def test_split_is_exact_disjoint_and_stratified(builder):
    p = Pipeline("split")
    src = p.from_rows(rows(200, strata=4), name="src")
    train, evaluation = src.split(eval_fraction=0.1, seed=3, stratify="topic")
    p.output("train", train)
    p.output("eval", evaluation)
    builder.build(p)
    tr, ev = builder.output("train"), builder.output("eval")
    assert tr.height == 180 and ev.height == 20
    assert not set(tr["id"]) & set(ev["id"])
    assert ev.group_by("topic").len()["len"].to_list() == [5, 5, 5, 5]


def test_to_conversation_from_alpaca_sharegpt_and_messages(builder):
    data = [
        {"instruction": "Translate to French", "input": "Good morning", "output": "Bonjour"},
        {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "2+2?"},
                           {"from": "gpt", "value": "4"}]},
        {"messages": [{"role": "user", "content": "Capital of Japan?"}, {"role": "assistant", "content": "Tokyo."}]},
        {"instruction": "Say hi", "input": "", "output": ""},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "hello"}]},
        {"messages": [{"role": "user", "content": "Anyone?"}]},
    ]
    p = Pipeline("conv")
    p.output("o", p.from_rows(data, name="src").apply(ToConversation(), name="chats"))
    builder.build(p)
    out = builder.output("o")
    assert out.columns == ["id", "messages"]
    assert out["messages"].to_list() == [
        [{"role": "user", "content": "Translate to French\n\nGood morning"}, {"role": "assistant", "content": "Bonjour"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "4"}],
        [{"role": "user", "content": "Capital of Japan?"}, {"role": "assistant", "content": "Tokyo."}],
    ]
    details = dict(builder.rejects("chats").select("id", "detail").rows())
    assert details == {"src-4": "output: missing or empty",
                       "src-5": "conversations[1].from: unknown speaker 'bot'",
                       "src-6": "messages[0].role: the last turn must be assistant, not user"}


def test_preference_and_prompt_records_validate(builder):
    p = Pipeline("records")
    pairs = p.from_rows([{"q": "2+2?", "good": "4", "bad": "5"}, {"q": "Sky colour?", "good": "Blue", "bad": "Blue"}],
                        name="pairs")
    prefs = pairs.apply(ToPreference(prompt="q", chosen="good", rejected="bad"), name="prefs").validate("preference")
    problems = p.from_rows([{"question": "What is 3*3?", "gold": "9"}, {"question": "Empty?", "gold": ""}], name="probs")
    prompts = problems.apply(ToPrompt(answer="gold", verifier="math"), name="prompts").validate("prompt")
    p.output("preferences", prefs)
    p.output("grpo_prompts", prompts)
    builder.build(p)
    assert builder.output("preferences").select("prompt", "chosen").rows() == [
        ([{"role": "user", "content": "2+2?"}], [{"role": "assistant", "content": "4"}])]
    assert builder.rejects("prefs")["detail"].to_list() == ["chosen: identical to rejected"]
    assert builder.output("grpo_prompts").select("answer", "verifier").rows() == [("9", "math")]
    assert builder.rejects("prompts")["detail"].to_list() == ["answer: empty"]


def test_validator_names_row_and_field_when_raising(builder):
    p = Pipeline("strict")
    bad = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]}]
    p.output("o", p.from_rows(bad, name="src").validate("sft", on_error="raise", name="checked"))
    with pytest.raises(DataflowError, match=r"node 'checked' failed on row id=src-1: .*messages\[1\].content: empty"):
        builder.build(p)


def test_batch_and_global_decorators(builder):
    @batch_op(inputs={"text": str}, outputs={"upper": str})
    def shout(batch):
        return batch.with_columns(upper=pl.col("text").str.to_uppercase())

    @global_op(inputs={"text": str}, outputs={"rank": int})
    def rank_by_length(table):
        ranked = table.with_columns(rank=pl.col("text").str.len_chars().rank("ordinal").cast(pl.Int64))
        keep = ranked.filter(pl.col("rank") <= 2)
        return keep, ranked.filter(pl.col("rank") > 2).select("id", reason=pl.lit("too long"))

    p = Pipeline("fns")
    p.output("o", p.from_rows([{"text": "ccc"}, {"text": "a"}, {"text": "bb"}], name="src").apply(shout)
             .apply(rank_by_length, name="ranked"))
    builder.build(p)
    assert builder.output("o").select("upper", "rank").rows() == [("A", 1), ("BB", 2)]
    assert builder.rejects("ranked")["id"].to_list() == ["src-1"]


def test_row_function_returning_wrong_type_names_row_and_column(builder):
    p = Pipeline("types")
    p.output("o", p.from_rows([{"t": "a"}, {"t": "b"}], name="src")
             .map(lambda row: {"n": "x" if row["id"] == "src-2" else 1}, outputs={"n": int}, name="counted"))
    with pytest.raises(DataflowError, match=r"node 'counted': the function returned str 'x' for column 'n' "
                                            r"\(declared Int64\) on row id=src-2"):
        builder.build(p)


def test_polars_error_inside_a_global_operator_names_the_node(builder):
    @dataclass(frozen=True)
    class CollectsEagerly(Operator):
        kind = "global"

        def output_schema(self, schema):
            return schema

        def apply(self, frame, ctx):
            return Result(frame.with_columns(pl.col("text").cast(pl.Int64)).collect())

    p = Pipeline("global_error")
    p.output("o", p.from_rows([{"text": "a"}], name="src").apply(CollectsEagerly(), name="eager"))
    with pytest.raises(DataflowError, match="node 'eager' failed: conversion from `str` to `i64` failed"):
        builder.build(p)


def test_exact_dedup_on_nested_columns(builder):
    p = Pipeline("nested")
    data = [{"meta": {"a": 1, "b": [1, 2]}}, {"meta": {"a": 1, "b": [1, 2]}}, {"meta": {"a": 2, "b": [1]}}]
    p.output("o", p.from_rows(data, name="src").dedup("meta", name="deduped"))
    builder.build(p)
    assert builder.output("o")["id"].to_list() == ["src-1", "src-3"]
