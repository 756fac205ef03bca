"""Mix, PyramidSample's keep_lower and Curriculum against plain-Python readings of their definitions, on
real rows of pipelines/data in random input orders, with several seeds; and their bad input."""

from __future__ import annotations

import json
from collections import Counter

import polars as pl
import pytest
from conftest import REPO, run, shuffled

from dataflow import Pipeline
from dataflow.records import LLM_COST
from dataflow.errors import CompileError, DataflowError
from dataflow.operators import Curriculum, Mix, PyramidSample

DATA = REPO / "pipelines" / "data"
SEEDS = [0, 1, 7, 2024]


def rows(file: str, prefix: str) -> pl.DataFrame:
    """The JSON object lines of a data file (instructions.jsonl has defect lines), with ids."""
    objects = [row for line in (DATA / file).read_text().splitlines() if isinstance(row := parsed(line), dict)]
    table = pl.DataFrame(objects, infer_schema_length=None)
    return table.with_columns(id=pl.format(f"{prefix}-{{}}", pl.int_range(1, table.height + 1)))


def parsed(line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


INSTRUCTIONS = rows("instructions.jsonl", "instructions").rename({"source": "origin"})
MATH = rows("math_word_problems.jsonl", "math")
ONE_STEP = rows("one_step_problems.jsonl", "steps")


def hashes(keys: list[str], seed: int) -> dict[str, int]:
    return dict(zip(keys, pl.Series(keys, dtype=pl.String).hash(seed).to_list()))


def quotas(weights: dict[str, float], total: int) -> dict[str, int]:
    """Largest remainder, read plainly: floors, then one more for the largest remainders (ties: order)."""
    exact = {s: w / sum(weights.values()) * total for s, w in weights.items()}
    counts = {s: int(e) for s, e in exact.items()}
    left = total - sum(counts.values())
    for s in sorted(exact, key=lambda s: (-(exact[s] - counts[s]), list(exact).index(s)))[:left]:
        counts[s] += 1
    return counts


def expected_mix(inputs: dict[str, pl.DataFrame], counts: dict[str, int], seed: int) -> list[tuple]:
    """(id, source, source_id, copy) of the mix in output order, by the definition in Mix's docstring."""
    out = []
    for source, table in inputs.items():
        ids = table["id"].to_list()
        keyed = hashes([f"{source}:{i}" for i in ids], seed)
        ranked = sorted(ids, key=lambda i: (keyed[f"{source}:{i}"], i))
        whole, extra = divmod(counts[source], len(ranked)) if ranked else (0, 0)
        for position, row_id in enumerate(ranked):
            for copy in range(whole + (position < extra)):
                out.append((f"{source}:{row_id}" if copy == 0 else f"{source}#{copy}:{row_id}", source, row_id, copy))
    order = hashes([row[0] for row in out], seed)
    return sorted(out, key=lambda row: (order[row[0]], row[0]))


def mixed(op: Mix, inputs: dict[str, pl.DataFrame], seed: int) -> pl.DataFrame:
    return run(op, *[shuffled(table, seed + k) for k, table in enumerate(inputs.values())])[0]


def mix_rows(out: pl.DataFrame) -> list[tuple]:
    return out.select("id", "source", "source_id", "source_copy").rows()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weights,total", [({"math": 0.9, "general": 0.1}, 60), ({"math": 1, "general": 2}, 100),
                                           ({"math": 0.5, "general": 0.5}, 7), ({"math": 0, "general": 3.5}, 301)])
def test_mix_by_weights_takes_largest_remainder_counts_of_the_lowest_hashes(seed, weights, total):
    inputs = {"math": MATH, "general": INSTRUCTIONS}
    op = Mix(("math", "general"), weights=weights, total=total, seed=seed)
    out = mixed(op, inputs, seed)
    assert mix_rows(out) == expected_mix(inputs, quotas(weights, total), seed)
    assert dict(Counter(out["source"])) == {s: n for s, n in quotas(weights, total).items() if n}
    assert out.equals(mixed(op, inputs, seed + 100))  # the input order does not matter


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("counts", [{"math": 200, "steps": 60, "general": 10}, {"math": 81, "steps": 0, "general": 5},
                                    {"math": 3, "steps": 180, "general": 0}])
def test_mix_with_replacement_repeats_every_row_floor_or_ceil_times(seed, counts):
    inputs = {"math": MATH, "steps": ONE_STEP, "general": INSTRUCTIONS}
    out = mixed(Mix(tuple(inputs), counts=counts, oversample="replace", seed=seed), inputs, seed)
    assert mix_rows(out) == expected_mix(inputs, counts, seed)
    assert out["id"].n_unique() == out.height
    for source, table in inputs.items():
        times = Counter(out.filter(pl.col("source") == source)["source_id"])
        low, high = counts[source] // table.height, -(-counts[source] // table.height)
        assert sum(times.values()) == counts[source]
        assert {times.get(i, 0) for i in table["id"]} <= {low, high}


def test_mix_keeps_each_rows_columns_and_nulls_the_missing_ones():
    out, _ = run(Mix(("math", "general"), counts={"math": 5, "general": 5}, seed=3), MATH, INSTRUCTIONS)
    assert set(out.columns) == {*MATH.columns, *INSTRUCTIONS.columns, "source", "source_id", "source_copy"}
    originals = {row["id"]: row for table in (MATH, INSTRUCTIONS) for row in table.iter_rows(named=True)}
    for row in out.iter_rows(named=True):
        original = originals[row["source_id"]]
        assert all(row[c] == original.get(c) for c in {*MATH.columns, *INSTRUCTIONS.columns} - {"id"})


def test_an_input_with_a_source_column_fails_to_compile_with_the_fix():
    p = Pipeline("clash")
    general = p.read_jsonl(DATA / "instructions.jsonl", on_error="reject", name="general")
    p.output("o", p.mix({"general": general}, counts={"general": 10}, name="mixed"))
    with pytest.raises(CompileError, match=r"node 'mixed' \(Mix\): input 'general' already has column\(s\) "
                                           r"\['source'\].*rename\(\{'source': 'origin'\}\)"):
        p.compile()


def test_replayed_inputs_with_the_same_ids_get_unique_ids_in_a_build(builder):
    p = Pipeline("replay")
    new = p.read_jsonl(DATA / "math_word_problems.jsonl", name="problems")
    p.output("o", p.mix({"new": new, "replay": new}, weights={"new": 0.75, "replay": 0.25}, total=120,
                      oversample="replace", seed=5, name="mixed"))
    builder.build(p)
    out = builder.output("o")
    assert out.height == 120 and out["id"].n_unique() == 120
    assert dict(Counter(out["source"])) == {"new": 90, "replay": 30}
    metrics = builder.sql("select metrics from nodes where name = 'mixed'")["metrics"][0]
    assert metrics == {**dict.fromkeys(LLM_COST), "new_asked": 90, "new_available": 80, "new_taken": 90,
                       "new_oversampled": 10, "replay_asked": 30, "replay_available": 80, "replay_taken": 30,
                       "replay_oversampled": 0}


def test_an_input_with_too_few_rows_stops_the_build_naming_node_input_and_fix(builder):
    p = Pipeline("short")
    math = p.read_jsonl(DATA / "math_word_problems.jsonl", name="problems")
    p.output("o", p.mix({"math": math}, counts={"math": 81}, name="mixed"))
    with pytest.raises(DataflowError, match="node 'mixed': input 'math' has 80 rows but the mix asks for 81: .*"
                                            "oversample='replace'"):
        builder.build(p)


def test_an_empty_input_cannot_be_oversampled():
    empty = MATH.clear()
    assert run(Mix(("math", "none"), counts={"math": 2, "none": 0}), MATH, empty)[0].height == 2
    with pytest.raises(DataflowError, match="node 't': input 'none' has 0 rows but the mix asks for 1: give it weight"):
        run(Mix(("math", "none"), counts={"math": 2, "none": 1}, oversample="replace"), MATH, empty)


@pytest.mark.parametrize("arguments,message", [
    ({"weights": {"math": 1, "code": 1}, "total": 10}, r"weights name unknown source\(s\) \['code'\]"),
    ({"weights": {"math": 0, "general": 0}, "total": 10}, "weights must add up to a positive number"),
    ({"weights": {"math": -1, "general": 2}, "total": 10}, "weights must be non-negative"),
    ({"weights": {"math": 1, "general": 1}}, "weights= need total="),
    ({"counts": {"math": -3, "general": 2}}, "counts must be non-negative ints"),
    ({"counts": {"math": 3}}, r"counts miss source\(s\) \['general'\]"),
    ({"counts": {"math": 3, "general": 1}, "weights": {"math": 1, "general": 1}}, "give exactly one of weights="),
    ({"counts": {"math": 3, "general": 1}, "oversample": "cycle"}, "oversample must be 'error' or 'replace'"),
])
def test_bad_mix_arguments_fail_to_compile_naming_the_node(arguments, message):
    p = Pipeline("bad")
    math, general = p.from_rows([{"q": "1+1"}], name="m"), p.from_rows([{"q": "hi"}], name="g")
    p.output("o", p.mix({"math": math, "general": general}, name="mixed", **arguments))
    with pytest.raises(CompileError, match=f"node 'mixed' \\(Mix\\): {message}"):
        p.compile()


def pyramid_rows() -> pl.DataFrame:
    return INSTRUCTIONS.with_columns(quality=pl.col("output").str.len_chars() % 10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("keep_lower,size", [(0.15, 100), (0.2, 37), (0.5, 200)])
def test_keep_lower_fills_its_share_with_the_lowest_hashes_below_every_tier(seed, keep_lower, size):
    table = pyramid_rows()
    shares, minimums = {"top": 0.3, "good": 0.7}, {"top": 8, "good": 5}
    op = PyramidSample(score="quality", shares=shares, size=size, thresholds=minimums, seed=seed,
                       keep_lower=keep_lower)
    out, _ = run(op, shuffled(table, seed))
    wanted = quotas({**{t: s * (1 - keep_lower) for t, s in shares.items()}, "lower": keep_lower}, size)
    tier = {i: None if q is None else next((t for t, m in minimums.items() if q >= m), "lower")
            for i, q in table.select("id", "quality").rows()}  # a row without an output is unscored
    keyed = hashes(table["id"].to_list(), seed)
    expected = {i for t, n in wanted.items() for i in sorted((i for i in tier if tier[i] == t), key=keyed.get)[:n]}
    assert set(out["id"]) == expected
    assert all(tier[i] == t for i, t in out.select("id", "tier").rows())
    assert (out["tier"] == "lower").sum() == min(wanted["lower"], list(tier.values()).count("lower"))


def test_keep_lower_records_its_share_and_zero_changes_nothing(builder):
    p = Pipeline("lower")
    table = p.from_rows(pyramid_rows().drop("id").to_dicts(), name="src")
    arguments = {"score": "quality", "shares": {"top": 0.3, "good": 0.7}, "size": 40,
                 "thresholds": {"top": 8, "good": 5}}
    p.output("kept", table.apply(PyramidSample(**arguments, keep_lower=0.2), name="kept"))
    p.output("plain", table.apply(PyramidSample(**arguments), name="plain"))
    p.output("zero", table.apply(PyramidSample(**arguments, keep_lower=0.0), name="zero"))
    builder.build(p)
    metrics = builder.sql("select metrics from nodes where name = 'kept'")["metrics"][0]
    assert (metrics["lower_selected"], metrics["lower_share"]) == (8, 0.2)
    assert builder.output("zero").equals(builder.output("plain"))


@pytest.mark.parametrize("arguments,message", [
    ({"thresholds": {"top": 8, "rest": None}, "keep_lower": 0.15}, "last tier 'rest' has no minimum"),
    ({"thresholds": {"top": 8, "rest": 3}, "keep_lower": 1.0}, "keep_lower must be a share"),
    ({"thresholds": {"top": 8, "lower": 3}, "keep_lower": 0.1}, "rename your tier 'lower'"),
])
def test_bad_keep_lower_fails_to_compile(arguments, message):
    p = Pipeline("bad")
    shares = dict.fromkeys(arguments["thresholds"], 0.5)
    p.output("o", p.from_rows([{"q": 1.0}]).apply(PyramidSample(score="q", shares=shares, size=2, **arguments),
                                                  name="pyr"))
    with pytest.raises(CompileError, match=f"node 'pyr' \\(PyramidSample\\): .*{message}"):
        p.compile()


LEVEL = {"easy": 0, "medium": 1, "hard": 2}


def difficulties() -> pl.DataFrame:
    return MATH.with_columns(level=pl.col("difficulty").replace_strict(LEVEL, return_dtype=pl.Int64),
                             pass_rate=(pl.col("question").str.len_chars() % 5) / 4)


def expected_curriculum(table: pl.DataFrame, by: str, descending: bool, stages: int, seed: int) -> list[tuple]:
    keyed = hashes(table["id"].to_list(), seed)
    sign = -1 if descending else 1

    def key(row: dict) -> tuple:
        missing = row[by] is None or row[by] != row[by]
        return missing, 0 if missing else sign * row[by], keyed[row["id"]], row["id"]

    ordered = sorted(table.iter_rows(named=True), key=key)
    return [(row["id"], i * stages // len(ordered)) for i, row in enumerate(ordered)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("by,descending,stages", [("level", False, 3), ("pass_rate", True, 4), ("level", True, 7),
                                                  ("pass_rate", False, 1)])
def test_curriculum_orders_by_difficulty_then_hash_in_equal_count_stages(seed, by, descending, stages):
    table = difficulties()
    out, _ = run(Curriculum(by=by, descending=descending, stages=stages, seed=seed), shuffled(table, seed))
    assert out.select("id", "stage").rows() == expected_curriculum(table, by, descending, stages, seed)
    sizes = Counter(out["stage"]).values()
    assert len(sizes) == stages and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("seed", SEEDS)
def test_curriculum_puts_null_and_nan_difficulties_last_when_asked(seed):
    table = difficulties().with_columns(pass_rate=pl.when(pl.col("level") == 2).then(None)
                                        .when(pl.col("level") == 1).then(float("nan")).otherwise("pass_rate"))
    out, _ = run(Curriculum(by="pass_rate", descending=True, stages=3, nulls="last", seed=seed), shuffled(table, seed))
    assert out.select("id", "stage").rows() == expected_curriculum(table, "pass_rate", True, 3, seed)


def test_null_difficulties_stop_the_build_naming_node_column_and_count(builder):
    p = Pipeline("nulls")
    problems = p.read_jsonl(DATA / "math_word_problems.jsonl", name="problems")
    level = pl.col("difficulty").replace_strict({"easy": 0, "medium": 1}, default=None, return_dtype=pl.Int64)
    p.output("o", problems.map(level=level).apply(Curriculum(by="level"), name="ordered"))
    hard = MATH.filter(pl.col("difficulty") == "hard").height
    with pytest.raises(DataflowError, match=f"node 'ordered': column 'level' is null or NaN in {hard} of 80 rows.*"
                                            "nulls='last'"):
        builder.build(p)


@pytest.mark.parametrize("arguments,message", [({"by": "level", "stages": 0}, "stages must be an int of at least 1"),
                                               ({"by": "level", "nulls": "first"}, "nulls must be 'error' or 'last'"),
                                               ({"by": "question"}, "column 'question' is String")])
def test_bad_curriculum_arguments_fail_to_compile(arguments, message):
    p = Pipeline("bad")
    p.output("o", p.from_rows([{"question": "1+1", "level": 1}]).apply(Curriculum(**arguments), name="ordered"))
    with pytest.raises(CompileError, match=f"node 'ordered' \\(Curriculum\\): .*{message}"):
        p.compile()
