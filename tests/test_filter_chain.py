"""Consecutive filters run as one pass: each view holds exactly the rows a plain polars chain
keeps, and each dropped row is rejected once, by the first filter it fails, with its labels."""

from __future__ import annotations

import polars as pl

from dataflow import Pipeline

ROWS = [{"n": n, "text": "x" * (n % 7), "quality": n / 10} for n in range(40)] + [{"n": None, "text": "y", "quality": 0.0}]
FIRST = pl.col("n") > 3
SECOND = pl.col("text").str.len_chars() > 1
LEFT, RIGHT = pl.col("n") % 2 == 0, pl.col("quality") < 3.0


def chain_pipeline() -> Pipeline:
    p = Pipeline("chain")
    src = p.from_rows(ROWS, name="src")
    first = src.filter(FIRST, name="first")
    second = first.filter(SECOND, reason="too short", score="quality", name="second")
    evens = second.filter(LEFT, name="evens_kept")  # a fan-out: two chains share first and second
    low = second.filter(RIGHT, name="low_kept")
    p.output("evens", evens.map(half=pl.col("n") // 2, name="halved"))
    p.output("low", low)
    return p


def test_views_hold_what_a_polars_chain_keeps(builder):
    builder.build(chain_pipeline())
    frame = pl.DataFrame(ROWS)
    second = frame.filter(FIRST).filter(SECOND)
    expected = {"first": frame.filter(FIRST), "second": second, "evens_kept": second.filter(LEFT),
                "low_kept": second.filter(RIGHT)}
    for node, rows in expected.items():
        assert builder.sql(f"select n from {node} order by n")["n"].to_list() == sorted(rows["n"].to_list()), node
    assert builder.output("evens")["half"].to_list() == [n // 2 for n in second.filter(LEFT)["n"]]
    assert sorted(builder.output("low")["n"]) == sorted(second.filter(RIGHT)["n"])


def test_each_dropped_row_is_rejected_once_with_its_filters_labels(builder):
    builder.build(chain_pipeline())
    rejects = builder.sql("select id, node, reason, detail, score from rejects where node in "
                          "('first', 'second', 'evens_kept', 'low_kept')")
    by_node = {node: rejects.filter(pl.col("node") == node) for node in ("first", "second", "evens_kept", "low_kept")}
    assert by_node["first"].height == 5  # n = 0..3 and the null n, which fails
    assert by_node["first"]["score"].is_null().all()
    assert set(by_node["first"]["detail"]) == {str(FIRST)}
    assert set(by_node["first"]["reason"]) == {f"failed {FIRST}"}
    assert set(by_node["second"]["reason"]) == {"too short"}
    assert by_node["second"]["score"].null_count() == 0 and (by_node["second"]["score"] < 4.0).all()
    first_ids = set(by_node["first"]["id"])
    assert not first_ids & set(by_node["second"]["id"])
    assert rejects.filter(pl.col("node").is_in(["first", "second"]))["id"].n_unique() == \
        rejects.filter(pl.col("node").is_in(["first", "second"])).height
    kept = builder.sql("select count(*) as n from second")["n"][0]
    for view in ("evens_kept", "low_kept"):
        assert builder.sql(f"select count(*) as n from {view}")["n"][0] + by_node[view].height == kept


def test_a_cached_chain_reads_the_same_rows(builder):
    builder.build(chain_pipeline())
    before = builder.sql("select * from rejects order by node, id")
    again = builder.build(chain_pipeline())
    assert again.nothing_done
    assert builder.sql("select * from rejects order by node, id").equals(before)
