"""Stage gates: each measure against a brute-force reading of its definition on real text in random
order (hypothesis), each condition passing at its measured value and failing just past it, one
report of every failure, warnings, what a failed gate skips, caching, the `gates` view, compile
errors and the command line."""

from __future__ import annotations

import json
import math
import random
import re
import unicodedata
from itertools import pairwise
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflow import CompileError, DataflowError, GateError, Pipeline
from dataflow import gates as gates_module
from dataflow.gates import Gate, coverage, distinct_2, evaluate, margin_share, valid_share
from dataflow.operator import Context, Rejection
from dataflow.operators import DiversityMetrics
from dataflow.records import GateResult, NodeStats, outputs_of, read_manifest
from dataflow.schemas import SCHEMAS
from dataflow.store import Store

from test_cli import dataflow as run_cli

DATA = Path(__file__).parent / "data" / "curation"
LINES = [line.strip() for name in ("debian_en.jsonl", "debian_multilingual.jsonl")
         for record in map(json.loads, (DATA / name).read_text().splitlines())
         for line in record["text"].splitlines() if line.strip()]
TOPICS = sorted({json.loads(line)["package"].split("-")[0] for line in (DATA / "debian_en.jsonl").read_text().splitlines()})
# Unicode White_Space, what the gate's word tokens split on
SPLIT = re.compile("[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


# -- brute-force readings of the definitions in dataflow/gates.py ----------------------------------------
def text_of(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return "\n".join(turn["content"] for turn in value if turn["role"] == "assistant")


def reference_distinct_2(values: list) -> float | None:
    bigrams = []
    for value in map(text_of, values):
        words = [w for w in SPLIT.split(unicodedata.normalize("NFKC", value or "").lower()) if w]
        bigrams += pairwise(words)
    return len(set(bigrams)) / len(bigrams) if bigrams else None


def reference_valid_share(rows: list[dict], schema: str) -> float:
    def valid(row: dict) -> bool:
        try:
            SCHEMAS[schema].validate(row)
        except Rejection:
            return False
        return True
    return sum(map(valid, rows)) / len(rows)


def reference_coverage(values: list, expected: list) -> float:
    return len(set(expected) & set(values)) / len(set(expected))


def reference_margin_share(margins: list, bound: float) -> float:
    return sum(m is not None and not math.isnan(m) and m >= bound for m in margins) / len(margins)


# -- real-looking rows -----------------------------------------------------------------------------------
@st.composite
def text(draw) -> str | None:
    """A real line, a repeated chunk of one, its upper case or full-width copy, blank or null."""
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return None
    if kind == 1:
        return draw(st.sampled_from(["", " ", "\r\n\t", "\u3000", "one"]))
    line = draw(st.sampled_from(LINES))
    if kind == 2:
        return " ".join(line.split()[:draw(st.integers(1, 4))] * draw(st.integers(2, 3)))
    if kind == 3:
        return line.upper().replace(" ", draw(st.sampled_from(["  ", "\n", "\xa0", "\r\n"])))
    if kind == 4:
        return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in line)
    return line


def pair_rows(seed: int, count: int) -> list[dict]:
    """DPO-like pairs of real lines; some invalid (identical or empty sides), some unscored."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        chosen, rejected = rng.choice(LINES), rng.choice(LINES)
        if rng.random() < 0.15:  # not a valid pair
            rejected = rng.choice([chosen, " "])
        rows.append({"prompt": [{"role": "user", "content": rng.choice(LINES)}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}],
                     "margin": rng.choice([None, math.nan, *(round(rng.uniform(-1, 3), 1) for _ in range(8))]),
                     "topic": rng.choice(TOPICS[:-2]), "text": chosen})
    return rows


def stats_of(rows: list) -> NodeStats:
    return NodeStats("pairs", "Op", "built", "fp", None, len(rows), 0, 0.0)


def lazy(values: list, column: str = "text") -> pl.LazyFrame:
    return pl.LazyFrame({"id": [f"r{i}" for i in range(len(values))], column: values})


# -- each measure is its definition ----------------------------------------------------------------------
@settings(max_examples=60)
@given(st.lists(text(), max_size=30), st.randoms())
def test_distinct_2_counts_unique_word_bigrams_of_a_string_column(values, rng):
    rng.shuffle(values)
    measured, note = distinct_2(lazy(values).cast({"text": pl.String}), stats_of(values), "text")
    expected = reference_distinct_2(values)
    if expected is None:
        assert (measured, note) == (None, "no word bigrams")
    else:
        assert measured == pytest.approx(expected)


@settings(max_examples=40)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["user", "assistant", "system"]), text()), min_size=1, max_size=4),
                min_size=1, max_size=20), st.randoms())
def test_distinct_2_of_conversations_reads_the_assistant_turns_as_diversity_metrics_does(conversations, rng):
    rng.shuffle(conversations)
    values = [[{"role": role, "content": content or ""} for role, content in turns_] for turns_ in conversations]
    table = lazy(values, "chosen")
    measured, _ = distinct_2(table, stats_of(values), "chosen")
    expected = reference_distinct_2(values)
    assert measured is None if expected is None else measured == pytest.approx(expected)
    ctx = Context(node="diversity", workdir=Path("."))
    DiversityMetrics("chosen", roles=("assistant",), embeddings=False).apply(table, ctx=ctx)
    assert ctx.metrics["distinct_2"] == (None if measured is None else round(measured, 4))


@settings(max_examples=40)
@given(st.integers(0, 10_000), st.integers(1, 60), st.one_of(st.floats(-1, 3), st.integers(-1, 3)))
def test_valid_share_coverage_and_margin_share_are_their_definitions(seed, count, bound):
    rows = pair_rows(seed, count)  # margins in steps of 0.1: some equal to the bound
    table = pl.LazyFrame([{"id": f"r{i}", **row} for i, row in enumerate(rows)])
    stats = stats_of(rows)
    assert valid_share(table, stats, "preference")[0] == pytest.approx(reference_valid_share(rows, "preference"))
    margins = [row["margin"] for row in rows]
    assert margin_share(table, stats, "margin", bound)[0] == pytest.approx(reference_margin_share(margins, bound))
    expected = random.Random(seed).sample(TOPICS, 6)
    share, note = coverage(table, stats, "topic", tuple(expected))
    assert share == pytest.approx(reference_coverage([row["topic"] for row in rows], expected))
    missing = [t for t in expected if t not in {row["topic"] for row in rows}]
    assert all(repr(t) in note for t in missing[:5]) and f"{6 - len(missing)} of 6 expected values" in note


# -- each condition through a build: passes at the measured value, fails just past it -------------------
def gated(rows: list[dict], **conditions) -> Pipeline:
    """source -> a filter (drops unscored pairs) gated with ``conditions`` -> a downstream step."""
    p = Pipeline("gates")
    src = p.from_rows(rows, name="src")
    pairs = src.filter(pl.col("margin").is_not_null(), reason="unscored", name="pairs")
    pairs.gate(**conditions)
    p.output("dpo", pairs.map(twice=pl.col("margin") * 2, name="final"))
    return p


ROWS = pair_rows(7, 80)
KEPT = [row for row in ROWS if row["margin"] is not None]
CONDITIONS = {  # condition -> (its arguments, the brute-force value on KEPT)
    "min_rows": ({}, len(KEPT)),
    "max_reject_share": ({}, (len(ROWS) - len(KEPT)) / len(ROWS)),
    "min_distinct_2": ({"column": "chosen"}, reference_distinct_2([row["chosen"] for row in KEPT])),
    "min_valid_share": ({"schema": "preference"}, reference_valid_share(KEPT, "preference")),
    "min_coverage": ({"column": "topic", "expected": TOPICS}, reference_coverage([r["topic"] for r in KEPT], TOPICS)),
    "min_margin_share": ({"min_margin": 0.5}, reference_margin_share([r["margin"] for r in KEPT], 0.5)),
}
assert 0.5 in [row["margin"] for row in KEPT]  # a margin at the bound counts


@pytest.mark.parametrize("condition", CONDITIONS)
def test_each_condition_passes_at_its_measured_value_and_fails_just_past_it(builder, condition):
    arguments, value = CONDITIONS[condition]
    past = value + 1 if condition == "min_rows" else math.nextafter(value, -1 if condition.startswith("max_") else 2)
    assert 0 < value < (len(ROWS) if condition == "min_rows" else 1)  # the data makes the bound bite
    builder.build(gated(ROWS, **{condition: value}, **arguments))
    (result,) = read_manifest(builder.out)["gates"]
    assert (result["condition"], result["passed"]) == (condition, True)
    assert result["measured"] == pytest.approx(value)
    assert builder.output("dpo").height == len(KEPT)

    with pytest.raises(GateError) as failed:
        builder.build(gated(ROWS, **{condition: past}, **arguments))
    (result,) = read_manifest(builder.out)["gates"]
    assert result["passed"] is False and result["message"] in str(failed.value)
    assert f"gate failed on node 'pairs': {result['message']}" in str(failed.value)


def test_coverage_names_the_missing_values(builder):
    expected = ["libghc", "python3", "no_such_topic", "another_missing"]
    with pytest.raises(GateError, match=r"2 of 4 expected values; missing 'no_such_topic', 'another_missing'"):
        builder.build(gated([{**r, "topic": ["libghc", "python3"][i % 2]} for i, r in enumerate(ROWS)],
                            min_coverage=0.8, column="topic", expected=expected))


def test_a_measure_of_nothing_fails(builder):
    with pytest.raises(GateError, match=r"distinct-2 of 'chosen' is undefined \(no word bigrams\)"):
        builder.build(gated([{**r, "margin": None} for r in ROWS], min_distinct_2=0.3, column="chosen"))


# -- one report, warnings, what is skipped -----------------------------------------------------------------
def branching(strict: bool = True, few_rows: int = 12, warn: bool = False) -> Pipeline:
    """Two gated branches from one source and one ungated branch; by default both gates fail."""
    p = Pipeline("branches")
    src = p.from_rows(pair_rows(3, 60), name="src")
    pairs = src.filter(pl.col("margin").is_not_null(), reason="unscored", name="pairs")
    if strict:
        pairs.gate(min_rows=1000, min_distinct_2=0.99, column="chosen")
    pairs.gate(min_valid_share=1.0, schema="preference", warn=warn)
    few = src.limit(few_rows, name="few").gate(min_rows=50)
    final = pairs.map(twice=pl.col("margin") * 2, name="final")
    p.output("dpo", final.select("id", "prompt", "chosen", "rejected", name="dpo"), schema="preference")
    p.output("pairs_out", pairs)
    p.output("few_out", few.map(n=pl.lit(1), name="after_few"))
    p.output("lengths", src.map(n=pl.col("text").str.len_chars(), name="lengths"))
    return p


def test_one_report_lists_every_failed_condition_of_every_gate(builder):
    with pytest.raises(GateError) as failed:
        builder.build(branching())
    report = str(failed.value)
    lines = report.splitlines()
    assert lines[0].startswith("gate failed on node 'pairs': the row count is ")
    assert "below 1,000; distinct-2 of 'chosen' is " in lines[0] and "below 0.99; the share of rows valid" in lines[0]
    assert lines[1] == "gate failed on node 'few': the row count is 12, below 50"
    assert "node final, dpo, after_few; output dpo, pairs_out, few_out" in lines[2]
    assert "Traceback" not in report


def test_a_failed_gate_skips_what_comes_after_and_builds_independent_branches(builder):
    with pytest.raises(GateError):
        builder.build(branching())
    status = {row["name"]: row["status"] for row in builder.sql("select name, status from nodes").to_dicts()}
    assert status == {"src": "built", "pairs": "view", "few": "built", "final": "skipped", "dpo": "skipped",
                      "after_few": "skipped", "lengths": "built"}
    assert builder.output("lengths").height == 60  # the independent branch is built and written
    assert not (builder.out / "dpo").exists() and not (builder.out / "pairs_out").exists()
    assert builder.sql("select count(*) n from pairs")["n"][0] > 0  # the gated node itself is kept, queryable
    with pytest.raises(DataflowError, match="Available views"):
        builder.sql("select * from final")
    assert list(outputs_of(builder.out)) == ["lengths"]
    assert builder.sql("select status from runs")["status"].to_list() == ["gate_failed"]


def test_the_store_stays_consistent_and_a_fixed_build_reuses_every_cached_node(builder):
    with pytest.raises(GateError):
        builder.build(branching())
    store = Store(builder.out)
    assert not store.tmp.exists() or not any(store.tmp.iterdir())  # nothing half-written
    for node in read_manifest(builder.out)["nodes"].values():
        assert store.has(node["fingerprint"]) == (node["status"] != "skipped"), node["name"]
    fixed = builder.build(branching(strict=False, few_rows=60, warn=True))
    status = builder.status(fixed)
    assert status["src"] == status["pairs"] == status["lengths"] == "cached"
    assert status["final"] == status["dpo"] == "built"
    assert "previous build skipped it after a failed gate" in next(s.reason for s in fixed.stats if s.name == "final")
    assert builder.output("dpo").height == builder.sql("select count(*) n from pairs")["n"][0]
    assert sorted(outputs_of(builder.out)) == ["dpo", "few_out", "lengths", "pairs_out"]


def test_warn_records_and_prints_a_failed_condition_and_builds_on(builder):
    p = gated(ROWS, min_valid_share=1.0, schema="preference", warn=True)
    report = builder.build(p)
    (result,) = report.gates
    assert (result.passed, result.warn, result.failed) == (False, True, False)
    assert f"[warn] pairs: {result.message}" in builder.log.getvalue()
    assert builder.output("dpo").height == len(KEPT)
    row = builder.sql("select condition, passed, warn, message from gates").to_dicts()[0]
    assert row == {"condition": "min_valid_share", "passed": False, "warn": True, "message": result.message}


# -- gates and the cache -----------------------------------------------------------------------------------
def test_adding_or_changing_a_gate_rebuilds_nothing_and_a_cached_build_still_checks_it(builder):
    first = builder.build(gated(ROWS, min_rows=1))
    again = builder.build(gated(ROWS, min_rows=2, max_reject_share=0.9))
    assert again.nothing_done
    assert [s.fingerprint for s in first.stats] == [s.fingerprint for s in again.stats]
    gates = builder.sql("select condition, measured, passed from gates order by condition").to_dicts()
    assert gates == [{"condition": "max_reject_share", "measured": pytest.approx(1 - len(KEPT) / len(ROWS)),
                      "passed": True}, {"condition": "min_rows", "measured": len(KEPT), "passed": True}]
    with pytest.raises(GateError):
        builder.build(gated(ROWS, min_rows=len(KEPT) + 1))
    assert builder.status(builder.build(gated(ROWS, min_rows=1))) == {"src": "cached", "pairs": "cached",
                                                                      "final": "cached"}


class Spy:
    calls = 0


def counted_distinct_2(rows, stats, column):
    Spy.calls += 1
    return distinct_2(rows, stats, column)


def test_a_cached_node_keeps_the_measures_taken_of_it(builder, monkeypatch):
    monkeypatch.setattr(gates_module, "distinct_2", counted_distinct_2)
    Spy.calls = 0
    builder.build(gated(ROWS, min_distinct_2=0.1, column="chosen"))
    with pytest.raises(GateError):  # cached: the gate is checked against the measure taken before
        builder.build(gated(ROWS, min_distinct_2=0.999, column="chosen"))
    assert Spy.calls == 1
    builder.build(gated(ROWS, min_distinct_2=0.1, column="chosen"), rebuild=("pairs",))  # built again: measured again
    assert Spy.calls == 2
    assert [r["passed"] for r in read_manifest(builder.out)["gates"]] == [True]


def test_evaluate_takes_each_measure_once_per_node():
    table = pl.LazyFrame({"id": ["a", "b"], "text": ["one two three", "one two"]})
    gates = [Gate("n", min_distinct_2=0.5, column="text"), Gate("n", min_distinct_2=0.9, column="text", warn=True)]
    stats = NodeStats("n", "Op", "built", "fp", None, 2, 0, 0.0)
    first, second = evaluate(gates, table, stats, {})
    assert first.key == second.key and first.measured == second.measured == pytest.approx(2 / 3)
    earlier = {first.key: GateResult("n", "min_distinct_2", first.key, 0.95, "taken before", 0.5, True, False, "")}
    assert [r.passed for r in evaluate(gates, table, stats, earlier)] == [True, True]


# -- bad arguments -----------------------------------------------------------------------------------------
def test_bad_gate_arguments_are_compile_errors_naming_the_node_and_the_fix():
    p = Pipeline("bad")
    pairs = p.from_rows(pair_rows(1, 5), name="pairs")
    pairs.gate()
    pairs.gate(min_distinct_2=1.5, column="chosn")
    pairs.gate(min_coverage=0.8, column="topic", expected="libghc")
    pairs.gate(min_valid_share=0.95, schema="dpo")
    pairs.gate(min_margin_share=0.6, margin_column="topic")
    pairs.gate(min_rows=-1, column="text")
    pairs.gate(min_row=10)
    p.output("out", pairs)
    with pytest.raises(CompileError) as error:
        p.compile()
    problems = error.value.problems
    expected = [
        "gate on node 'pairs': unknown argument min_row=; a gate takes min_rows, ",
        "gate on node 'pairs': no condition: give one or more of min_rows=, max_reject_share=, ",
        "gate on node 'pairs': min_distinct_2 must be a share between 0 and 1 (e.g. 0.8), not 1.5",
        "gate on node 'pairs': column 'chosn' not found; the node has: ",
        "gate on node 'pairs': expected= must be a non-empty list of the values to find, not 'libghc'",
        "gate on node 'pairs': unknown record schema 'dpo'; choose from ",
        "gate on node 'pairs': min_margin_share= needs min_margin=",
        "gate on node 'pairs': the margin column 'topic' is String, not a number: name the numeric column with ",
        "gate on node 'pairs': min_rows must be a whole number of rows, 0 or more, not -1",
        "gate on node 'pairs': column= is given but no condition uses it: it goes with min_distinct_2 or min_coverage=",
    ]
    assert len(problems) == len(expected)
    for want in expected:
        assert any(problem.startswith(want) for problem in problems), want


def test_gate_columns_must_hold_what_the_condition_measures():
    p = Pipeline("types")
    pairs = p.from_rows(pair_rows(1, 5), name="pairs")
    pairs.gate(min_distinct_2=0.3, column="margin")
    pairs.gate(min_coverage=0.8, column="topic", expected=[1, 2])
    pairs.gate(min_valid_share=0.95, schema="sft")
    p.output("out", pairs)
    with pytest.raises(CompileError) as error:
        p.compile()
    assert error.value.problems == [
        ("gate on node 'pairs': min_distinct_2 measures text, but column 'margin' is Float64: give a string column "
         "or a list of {role, content} turns"),
        "gate on node 'pairs': expected= holds values that are not String, the column's type: [1, 2]",
        "gate on node 'pairs': 'sft' records need column 'messages', which is missing",
    ]


# -- the command line --------------------------------------------------------------------------------------
CLI_PIPELINE = '''
import polars as pl
from dataflow import Pipeline

p = Pipeline("cli_gates")
src = p.from_rows([{"text": f"the same words again {i % 2}"} for i in range(12)], name="src")
pairs = src.filter(pl.col("text") != "", name="pairs").gate(min_rows=50, min_distinct_2=0.3, column="text")
p.output("train", pairs.map(n=pl.col("text").str.len_chars(), name="final"))
p.output("raw", src)
'''


def test_the_command_line_prints_the_summary_and_the_report_and_exits_1(tmp_path):
    pipeline, out = tmp_path / "gated.py", str(tmp_path / "out")
    pipeline.write_text(CLI_PIPELINE)
    result = run_cli("build", str(pipeline), "--out", out)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.endswith("error: gate failed on node 'pairs': the row count is 12, below 50; distinct-2 of "
                                  "'text' is 0.1042 (over 12 texts), below 0.3\nSkipped after the failed "
                                  "gate(s): node final; output train. Everything else is built and cached: fix the "
                                  "data or the gate, then build again.\n")
    assert "gate on pairs: FAILED: the row count is 12, below 50" in result.stdout
    assert re.search(r"final +skipped", result.stdout)
    query = run_cli("query", "select condition, passed from gates", "--out", out, "--format", "csv")
    assert query.stdout.splitlines() == ["condition,passed", "min_rows,false", "min_distinct_2,false"]


def test_a_gate_inside_a_chain_of_filters_sees_the_stored_rows_and_changes_none(builder):
    def chain(gate: bool) -> Pipeline:
        p = Pipeline("chain")
        src = p.from_rows(ROWS, name="src")
        scored = src.filter(pl.col("margin").is_not_null(), reason="unscored", name="scored")
        positive = scored.filter((pl.col("margin") > 0) & pl.col("margin").is_not_nan(), reason="negative",
                                 name="positive")
        if gate:
            scored.gate(min_rows=len(KEPT), max_reject_share=0.5)
            positive.gate(min_margin=0.1, min_margin_share=1.0)
        p.output("out", positive.filter(pl.col("margin") < 2, reason="large", name="moderate"))
        return p

    builder.build(chain(gate=False))
    plain = builder.output("out")
    report = builder.build(chain(gate=True))
    assert report.nothing_done and [r.passed for r in report.gates] == [True, True, True]
    builder.build(chain(gate=True), rebuild=("scored",))  # the chain built again, a flush at each gate
    assert builder.output("out").equals(plain)
    assert builder.sql("select count(*) n from rejects")["n"][0] == len(ROWS) - plain.height


def test_an_output_held_back_by_a_gate_does_not_keep_an_earlier_builds_data(builder):
    builder.build(branching(strict=False, few_rows=60, warn=True))
    assert (builder.out / "dpo").exists()
    with pytest.raises(GateError):
        builder.build(branching())
    assert not (builder.out / "dpo").exists() and (builder.out / "lengths").exists()


def test_coverage_reads_expected_values_as_the_columns_type_and_refuses_null(builder):
    rows = [{**r, "score": float(i % 3)} for i, r in enumerate(ROWS)]
    builder.build(gated(rows, min_coverage=1.0, column="score", expected=[0, 1, 2]))  # ints against floats
    assert read_manifest(builder.out)["gates"][0]["measured"] == 1.0
    for missing in (None, float("nan")):
        with pytest.raises(CompileError, match="expected= holds None or NaN, which is never counted as present"):
            gated(rows, min_coverage=1.0, column="score", expected=[0, missing]).compile()


def test_numpy_bounds_are_numbers_and_a_value_just_short_of_its_bound_is_told_apart(builder):
    import numpy as np

    builder.build(gated(ROWS, min_rows=np.int64(len(KEPT))))
    rows = [{**r, "margin": 1.0} for r in ROWS[:40]] * 500 + [{**ROWS[0], "margin": 0.1}]
    with pytest.raises(GateError, match=r"is 0\.99995 \(19,999 of 20,000 rows\), below 1"):
        builder.build(gated(rows[:19_999] + rows[-1:], min_margin_share=1.0, min_margin=0.5))
