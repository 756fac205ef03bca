"""Best-of-K, quality-pyramid and balanced sampling, preference pairs, GRPO pass rates."""

from __future__ import annotations

import json

import polars as pl
import pytest

from dataflow import Pipeline
from dataflow.operators import (BalancedSample, PassRate, PreferencePairs, PyramidSample, SelectBest,
                                learnable_band)
from dataflow.schemas import get_schema

CANDIDATES = [
    {"prompt_id": "p1", "prompt": "What is 2+2?", "response": "4", "score": 9.0, "relevance": 9, "fluency": 5},
    {"prompt_id": "p1", "prompt": "What is 2+2?", "response": "five", "score": 2.0, "relevance": 2, "fluency": 9},
    {"prompt_id": "p1", "prompt": "What is 2+2?", "response": "It is 4.", "score": 7.0, "relevance": 8, "fluency": 8},
    {"prompt_id": "p2", "prompt": "Name a colour.", "response": "Blue", "score": 5.0, "relevance": 5, "fluency": 5},
    {"prompt_id": "p2", "prompt": "Name a colour.", "response": "Red", "score": 5.0, "relevance": 5, "fluency": 5},
    {"prompt_id": "p3", "prompt": "Say hi.", "response": "Hi", "score": None, "relevance": 1, "fluency": 1},
]


def run(builder, op, rows=CANDIDATES):
    p = Pipeline("select")
    p.output("o", p.from_rows(rows, name="src").apply(op, name="selected"))
    builder.build(p)
    return builder.output("o")


def test_best_of_k_by_weighted_scores(builder):
    out = run(builder, SelectBest(score={"relevance": 0.7, "fluency": 0.3}))
    # p1: "4" scores 0.7*9 + 0.3*5 = 7.8, "It is 4." 0.7*8 + 0.3*8 = 8.0; p2 ties, broken by id
    assert out.select("prompt_id", "response").rows() == [("p1", "It is 4."), ("p2", "Blue"), ("p3", "Hi")]
    assert out["selection_score"][0] == pytest.approx(8.0)
    rejects = builder.rejects("selected")
    assert set(rejects["reason"]) == {"not best of K"}
    best_by_score = run(builder, SelectBest(score="score"))
    assert "p3" not in best_by_score["prompt_id"].to_list()
    assert "no score" in set(builder.rejects("selected")["reason"])


def test_pairs_never_form_on_ties_and_trace_to_candidates(builder):
    out = run(builder, PreferencePairs())
    assert out.height == 1
    pair = out.row(0, named=True)
    assert (pair["chosen_id"], pair["rejected_id"], pair["margin"]) == ("src-1", "src-2", 7.0)
    assert pair["prompt"] == [{"role": "user", "content": "What is 2+2?"}]
    assert pair["chosen"] == [{"role": "assistant", "content": "4"}]
    get_schema("preference").validate(pair)
    reasons = dict(builder.rejects("selected").select("id", "reason").rows())
    assert reasons["src-4"].startswith("tie") and reasons["src-5"].startswith("tie")
    assert reasons["src-6"] == "fewer than two scored candidates"
    assert reasons["src-3"] == "not paired by best_vs_worst"


def test_all_pairs_above_margin_and_length_bias(builder):
    out = run(builder, PreferencePairs(strategy="all_above_margin", min_margin=1.0))
    assert sorted(out["id"].to_list()) == ["src-1>src-2", "src-1>src-3", "src-3>src-2"]
    out = run(builder, PreferencePairs(strategy="all_above_margin", min_margin=1.0, max_length_ratio=1.5))
    assert sorted(out["id"].to_list()) == ["src-1>src-2", "src-1>src-3"]  # "It is 4." beats "five" by length
    assert json.loads(builder.sql("select metrics from nodes where name = 'selected'")["metrics"][0]) == {
        "dropped_for_length_bias": 1, "pairs": 2, "unscored": 1}


def test_pyramid_tiers_shares_and_balance(builder):
    rows = [{"id": f"r{q}", "quality": q / 100, "topic": ["math", "code", "chat"][q % 3]} for q in range(300)]
    op = PyramidSample(score="quality", shares={"expert": 0.1, "filtered": 0.3, "bulk": 0.6}, size=100,
                       thresholds={"expert": 2.7, "filtered": 1.5, "bulk": None}, balance_by="topic", seed=7)
    out = run(builder, op, rows)
    assert out.group_by("tier").len().sort("tier").rows() == [("bulk", 60), ("expert", 10), ("filtered", 30)]
    assert out.filter(pl.col("tier") == "expert")["quality"].min() >= 2.7
    bulk_topics = out.filter(pl.col("tier") == "bulk").group_by("topic").len()["len"].to_list()
    assert sorted(bulk_topics) == [20, 20, 20]
    again = run(builder, op, list(reversed(rows)))
    assert set(again["id"]) == set(out["id"])  # the choice does not depend on input order


def test_pyramid_reports_shortfall_by_quantile(builder):
    rows = [{"quality": float(q)} for q in range(100)]
    op = PyramidSample(score="quality", shares={"top": 0.5, "rest": 0.5}, size=60, quantiles={"top": 0.8, "rest": None})
    out = run(builder, op, rows)
    # the 0.8 quantile of 0..99 (nearest) is 79: 21 rows reach the top tier, whose quota is 30
    assert out.group_by("tier").len().sort("tier").rows() == [("rest", 30), ("top", 21)]
    metrics = json.loads(builder.sql("select metrics from nodes where name = 'selected'")["metrics"][0])
    assert metrics["top_shortfall"] == 9 and metrics["top_available"] == 21


def test_balanced_sample(builder):
    rows = [{"topic": "a"}] * 50 + [{"topic": "b"}] * 5 + [{"topic": "c"}] * 20
    out = run(builder, BalancedSample(by="topic", n=15), rows)
    assert dict(out.group_by("topic").len().rows()) == {"a": 5, "b": 5, "c": 5}


def test_pass_rate_and_learnable_band(builder):
    rows = [{"prompt_id": "q1", "prompt": "1+1?", "answer": "2", "reward": r} for r in (1.0, 1.0, 1.0, 1.0)]
    rows += [{"prompt_id": "q2", "prompt": "17*23?", "answer": "391", "reward": r} for r in (1.0, 0.0, 0.0, 1.0)]
    rows += [{"prompt_id": "q3", "prompt": "Prove it.", "answer": "x", "reward": r} for r in (0.0, 0.0, 0.0, None)]
    p = Pipeline("grpo")
    rates = p.from_rows(rows, name="src").apply(PassRate(), name="rates")
    p.output("o", rates.apply(learnable_band(), name="band"))
    builder.build(p)
    assert builder.output("o").select("id", "pass_rate", "n_samples").rows() == [("q2", 0.5, 4)]
    assert dict(builder.rejects("band").select("id", "score").rows()) == {"q1": 1.0, "q3": 0.0}


def test_pairs_from_pairwise_verdicts(builder):
    from dataflow.operators import VerdictPairs

    rows = [{"prompt": "2+2?", "response_a": "4", "response_b": "5", "verdict": "a", "ca": "c1", "cb": "c2"},
            {"prompt": "Sky?", "response_a": "green", "response_b": "blue", "verdict": "b", "ca": "c3", "cb": "c4"},
            {"prompt": "Hi?", "response_a": "hi", "response_b": "hello", "verdict": "tie", "ca": "c5", "cb": "c6"}]
    out = run(builder, VerdictPairs(a_id="ca", b_id="cb"), rows)
    assert out.select("id", "chosen_id", "rejected_id").rows() == [("c1>c2", "c1", "c2"), ("c4>c3", "c4", "c3")]
    assert out["chosen"][1].to_list() == [{"role": "assistant", "content": "blue"}]
    get_schema("preference").validate(out.row(0, named=True))
    assert builder.rejects("selected").select("id", "reason").rows() == [("src-3", "tie")]
