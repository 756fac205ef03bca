"""Selection operators against brute-force readings of their definitions, on random groups with
null and NaN scores, in random order (hypothesis)."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import run, shuffled
from dataflow.operators import BalancedSample, PassRate, PreferencePairs, PyramidSample, SelectBest
from dataflow.operators.core.sampling import largest_remainder

score = st.one_of(st.none(), st.just(math.nan), st.integers(0, 10).map(float))


@st.composite
def candidates(draw) -> pl.DataFrame:
    rows = draw(st.lists(st.tuples(st.integers(0, 5), score, st.sampled_from(["", "short", "a longer reply"])),
                         min_size=1, max_size=40))
    return pl.DataFrame({"id": [f"c{i:02d}" for i in range(len(rows))], "prompt_id": [f"p{g}" for g, _, _ in rows],
                         "prompt": ["Q"] * len(rows), "score": [s for _, s, _ in rows],
                         "response": [r for _, _, r in rows]},
                        schema={"id": pl.String, "prompt_id": pl.String, "prompt": pl.String, "score": pl.Float64,
                                "response": pl.String})


def scored(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


@given(candidates(), st.integers(1, 3), st.integers(0, 1000))
def test_select_best_keeps_the_best_scored_of_each_group(table, keep, seed):
    out, rejects = run(SelectBest(score="score", keep=keep), shuffled(table, seed))
    expected = set()
    for _, group in table.group_by("prompt_id"):
        ranked = sorted((r for r in group.iter_rows(named=True) if scored(r["score"])), key=lambda r: (-r["score"], r["id"]))
        expected |= {r["id"] for r in ranked[:keep]}
    assert set(out["id"]) == expected
    assert len(out) + len(rejects) == len(table)
    unscored = {r["id"] for r in table.iter_rows(named=True) if not scored(r["score"])}
    assert set(rejects.filter(pl.col("reason") == "no score")["id"]) == unscored


@given(candidates(), st.integers(0, 1000), st.sampled_from([0.0, 1.0, 2.5]))
def test_pairs_are_best_against_worst_of_the_scored_and_never_ties(table, seed, margin):
    out, rejects = run(PreferencePairs(min_margin=margin), shuffled(table, seed))
    expected = set()
    for _, group in table.group_by("prompt_id"):
        ranked = sorted((r for r in group.iter_rows(named=True) if scored(r["score"]) and r["response"]),
                        key=lambda r: (-r["score"], r["id"]))
        if len(ranked) >= 2 and ranked[0]["score"] - ranked[-1]["score"] > margin:
            expected.add(f"{ranked[0]['id']}>{ranked[-1]['id']}")
    assert set(out["id"]) == expected
    assert all(m > margin and not math.isnan(m) for m in out["margin"])


@given(candidates(), st.integers(0, 1000))
def test_pass_rates_count_only_scored_samples(table, seed):
    table = table.rename({"score": "reward"}).with_columns(pl.col("reward") / 10)
    out, _ = run(PassRate(threshold=0.5, carry=("prompt",)), shuffled(table, seed))
    for row in out.iter_rows(named=True):
        rewards = [r for r in table.filter(pl.col("prompt_id") == row["id"])["reward"] if scored(r)]
        assert row["n_samples"] == len(rewards)
        assert row["pass_rate"] == (pytest.approx(sum(r >= 0.5 for r in rewards) / len(rewards)) if rewards else None)


@pytest.mark.parametrize("size", [10, 30, 17, 100, 1])
def test_pyramid_returns_exactly_size_rows_when_each_tier_has_enough(size):
    shares = {"expert": 0.05, "filtered": 0.25, "bulk": 0.7}  # rounding each quota gave 9 rows for 10, 31 for 30
    rows = pl.DataFrame({"id": [f"r{i:03d}" for i in range(300)], "quality": [i % 100 / 10 for i in range(300)]})
    op = PyramidSample(score="quality", shares=shares, size=size, thresholds={"expert": 9.5, "filtered": 7.0, "bulk": None})
    out, _ = run(op, rows)
    assert len(out) == size
    assert dict(out.group_by("tier").len().rows()) == {t: n for t, n in largest_remainder(shares, size).items() if n}


@given(st.lists(st.floats(0.01, 1), min_size=1, max_size=5), st.integers(0, 10_000))
def test_largest_remainder_quotas_add_up_and_stay_within_one_of_the_share(weights, size):
    shares = {f"t{i}": w / sum(weights) for i, w in enumerate(weights)}
    quotas = largest_remainder(shares, size)
    assert sum(quotas.values()) == size
    assert all(abs(quotas[t] - shares[t] * size) < 1 + 1e-9 for t in shares)


def test_null_and_nan_scores_are_unscored_in_the_pyramid():
    rows = pl.DataFrame({"id": ["a", "b", "c", "d"], "quality": [9.0, None, math.nan, 1.0]})
    op = PyramidSample(score="quality", shares={"top": 0.5, "rest": 0.5}, size=2, thresholds={"top": 5.0, "rest": None})
    out, rejects = run(op, rows)
    assert sorted(out["id"]) == ["a", "d"]
    assert set(rejects.filter(pl.col("reason") == "unscored")["id"]) == {"b", "c"}  # in no tier, not below one


def test_a_null_score_does_not_take_a_groups_best_place():
    rows = pl.DataFrame({"id": ["x1", "x2", "x3"], "prompt_id": ["p", "p", "p"], "score": [None, 3.0, math.nan]})
    out, _ = run(SelectBest(score="score"), rows)
    assert out["id"].to_list() == ["x2"]


@given(st.lists(st.sampled_from("abcd"), min_size=1, max_size=60), st.integers(0, 70), st.integers(0, 5))
def test_balanced_sample_takes_rows_round_robin_across_groups(topics, n, seed):
    table = pl.DataFrame({"id": [f"r{i:02d}" for i in range(len(topics))], "topic": topics})
    out, _ = run(BalancedSample(by="topic", n=n, seed=seed), shuffled(table, seed))
    hashes = dict(zip(table["id"], table["id"].hash(seed)))
    by_group: dict[str, list[str]] = {}
    for row_id, topic in sorted(table.iter_rows(), key=lambda r: hashes[r[0]]):
        by_group.setdefault(topic, []).append(row_id)
    rounds = sorted(((k, hashes[i], i) for members in by_group.values() for k, i in enumerate(members)))
    assert sorted(out["id"]) == sorted(i for _, _, i in rounds[:n])


def test_a_nan_score_never_pairs():
    rows = pl.DataFrame({"id": ["a", "b", "c"], "prompt_id": ["p"] * 3, "prompt": ["Q"] * 3,
                         "score": [math.nan, 5.0, 1.0], "response": ["x", "y", "z"]})
    out, rejects = run(PreferencePairs(), rows)
    assert out["id"].to_list() == ["b>c"] and not math.isnan(out["margin"][0])
    assert dict(rejects.select("id", "reason").rows()) == {"a": "no score"}


def test_largest_remainder_ties_are_decided_by_the_shares_as_written_not_by_float_error():
    from dataflow.operators.core.sampling import largest_remainder

    assert largest_remainder({"high": 0.01, "mid": 0.07, "low": 0.92}, 20) == {"high": 0, "mid": 2, "low": 18}
    assert largest_remainder({"a": 0.5, "b": 0.5}, 3) == {"a": 2, "b": 1}  # an exact tie: the first tier
