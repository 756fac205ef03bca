"""Best-of-K, quality-pyramid and balanced sampling, preference pairs, GRPO pass rates."""

from __future__ import annotations


import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import run as run_op
from conftest import shuffled
from dataflow import Pipeline
from dataflow.records import LLM_COST
from dataflow.errors import CompileError
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
    assert reasons["src-6"] == "no score"  # its own problem comes before its group's (fewer than two scored)
    assert reasons["src-3"] == "not paired by best_vs_worst"


def test_all_pairs_above_margin_and_length_bias(builder):
    out = run(builder, PreferencePairs(strategy="all_above_margin", min_margin=1.0))
    assert sorted(out["id"].to_list()) == ["src-1>src-2", "src-1>src-3", "src-3>src-2"]
    out = run(builder, PreferencePairs(strategy="all_above_margin", min_margin=1.0, max_length_ratio=1.5))
    assert sorted(out["id"].to_list()) == ["src-1>src-2", "src-1>src-3"]  # "It is 4." beats "five" by length
    assert builder.sql("select metrics from nodes where name = 'selected'")["metrics"][0] == {
        **dict.fromkeys(LLM_COST), "dropped_for_length_bias": 1, "pairs": 2, "unscored": 1}


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
    metrics = builder.sql("select metrics from nodes where name = 'selected'")["metrics"][0]
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
    assert builder.output("o").select("id", "prompt_id", "pass_rate", "n_samples").rows() == [("q2", "q2", 0.5, 4)]
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


finish = st.sampled_from(["stop", "length", None])


@st.composite
def finished_candidates(draw) -> pl.DataFrame:
    rows = draw(st.lists(st.tuples(st.integers(0, 4), st.one_of(st.none(), st.integers(0, 10).map(float)),
                                   st.sampled_from(["", "short", "a longer reply"]), finish), min_size=1, max_size=30))
    return pl.DataFrame({"id": [f"c{i:02d}" for i in range(len(rows))], "prompt_id": [f"p{g}" for g, *_ in rows],
                         "prompt": ["Q"] * len(rows), "score": [s for _, s, _, _ in rows],
                         "response": [r for _, _, r, _ in rows], "response_finish_reason": [f for *_, f in rows]},
                        schema={"id": pl.String, "prompt_id": pl.String, "prompt": pl.String, "score": pl.Float64,
                                "response": pl.String, "response_finish_reason": pl.String})


def best_first(rows) -> list[dict]:
    return sorted((r for r in rows if r["score"] is not None), key=lambda r: (-r["score"], r["id"]))


@given(finished_candidates(), st.integers(0, 1000), st.sampled_from([0.0, 2.5]))
def test_a_candidate_cut_off_at_max_tokens_is_never_chosen(table, seed, margin):
    pairs, _ = run_op(PreferencePairs(min_margin=margin), shuffled(table, seed))
    best, _ = run_op(SelectBest(score="score", keep=2), shuffled(table, seed))
    expected_pairs, expected_best = set(), set()
    for _, group in table.group_by("prompt_id"):
        ranked = best_first(group.iter_rows(named=True))
        whole = [r for r in ranked if r["response_finish_reason"] != "length"]
        expected_best |= {r["id"] for r in whole[:2]}
        answered = [r for r in ranked if r["response"]]
        choosable = [r for r in answered if r["response_finish_reason"] != "length"]
        if len(answered) >= 2 and choosable and choosable[0]["score"] - answered[-1]["score"] > margin:
            expected_pairs.add(f"{choosable[0]['id']}>{answered[-1]['id']}")
    assert set(pairs["id"]) == expected_pairs
    assert set(best["id"]) == expected_best


@given(finished_candidates(), st.integers(0, 1000))
def test_a_sample_cut_off_at_max_tokens_never_passes(table, seed):
    table = table.rename({"score": "reward"}).with_columns(pl.col("reward") / 10)
    out, _ = run_op(PassRate(threshold=0.5, carry=("prompt",)), shuffled(table, seed))
    for row in out.iter_rows(named=True):
        samples = table.filter(pl.col("prompt_id") == row["id"]).iter_rows(named=True)
        passed = [r["response_finish_reason"] != "length" and r["reward"] >= 0.5 for r in samples
                  if r["reward"] is not None or r["response_finish_reason"] == "length"]
        assert row["prompt_id"] == row["id"] and row["n_samples"] == len(passed)
        assert row["pass_rate"] == (pytest.approx(sum(passed) / len(passed)) if passed else None)


def test_cut_off_candidates_are_rejected_not_chosen_unless_allowed(builder):
    rows = [{**c, "response_finish_reason": "length" if c["response"] == "4" else "stop"} for c in CANDIDATES]
    out = run(builder, PreferencePairs(), rows)  # "4" scores best but was cut off: "It is 4." is chosen over "five"
    assert out.select("chosen_id", "rejected_id").rows() == [("src-3", "src-2")]
    assert dict(builder.rejects("selected").select("id", "reason").rows())["src-1"] == \
        "cut off at max_tokens: never chosen"
    metrics = builder.sql("select metrics from nodes where name = 'selected'")["metrics"][0]
    assert metrics["truncated"] == 1
    assert run(builder, PreferencePairs(allow_truncated=True), rows)["chosen_id"].to_list() == ["src-1"]
    assert run(builder, SelectBest(score="score"), rows)["response"].to_list() == ["It is 4.", "Blue"]
    assert "cut off at max_tokens" in set(builder.rejects("selected")["reason"])
    with pytest.raises(CompileError, match="column 'finish' not found"):
        run(builder, PreferencePairs(finish_reason="finish"), rows)


def test_a_candidates_own_problem_is_its_reject_reason_before_its_groups(builder):
    rows = [{"prompt_id": "p", "prompt": "Q?", "response": "a", "score": 5.0},
            {"prompt_id": "p", "prompt": "Q?", "response": "b", "score": 5.0},
            {"prompt_id": "p", "prompt": "Q?", "response": "c", "score": None},
            {"prompt_id": "p", "prompt": "Q?", "response": "", "score": 9.0}]
    p = Pipeline("reasons")
    p.output("o", p.from_rows(rows, name="src").apply(PreferencePairs(), name="selected"))
    builder.build(p)
    reasons = dict(builder.rejects("selected").select("id", "reason").rows())
    assert reasons["src-1"].startswith("tie") and reasons["src-2"].startswith("tie")
    assert (reasons["src-3"], reasons["src-4"]) == ("no score", "empty response")
