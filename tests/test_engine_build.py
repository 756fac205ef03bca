"""Incremental builds: caching, precise invalidation, rejects, lineage, outputs, manifest."""

from __future__ import annotations

import json

import polars as pl
import pytest

from dataflow import DataflowError, Pipeline, row_op
from dataflow.build import load_pipeline

ROWS = [{"text": "the cat sat on the mat"}, {"text": "hi"}, {"text": "a dog barked at the moon tonight"},
        {"text": "THE CAT SAT ON THE MAT"}, {"text": "ok"}]


def small_pipeline(min_words: int = 3) -> Pipeline:
    p = Pipeline("small")
    src = p.from_rows(ROWS, name="src")
    words = src.map(n_words=pl.col("text").str.split(" ").list.len(), name="words")
    long = words.filter(pl.col("n_words") >= min_words, reason="too short", score="n_words", name="long")
    unique = long.dedup("text", name="deduped")
    p.output("result", unique)
    return p


def test_second_build_does_no_work(builder):
    first = builder.build(small_pipeline())
    assert set(builder.status(first).values()) == {"built", "view"}
    second = builder.build(small_pipeline())
    assert second.nothing_done
    assert set(builder.status(second).values()) == {"cached"}
    assert builder.output("result")["text"].to_list() == ["the cat sat on the mat", "a dog barked at the moon tonight"]


def test_changed_parameter_rebuilds_only_downstream(builder):
    builder.build(small_pipeline(3))
    report = builder.build(small_pipeline(2))
    assert builder.status(report) == {"src": "cached", "words": "cached", "long": "view", "deduped": "built"}
    long = next(s for s in report.stats if s.name == "long")
    assert "parameter 'predicate' changed" in long.reason


def test_every_dropped_row_has_a_reason(builder):
    builder.build(small_pipeline())
    short = builder.rejects("long")
    assert short["id"].to_list() == ["src-2", "src-5"]
    assert set(short["reason"]) == {"too short"}
    assert short["score"].to_list() == [1.0, 1.0]
    dup = builder.rejects("deduped")
    assert dup["id"].to_list() == ["src-4"]
    assert json.loads(dup["detail"][0]) == {"duplicate_of": "src-1"}


def test_a_duplicates_detail_is_json_whatever_its_survivors_id_and_key_columns_do_not_run_into_each_other(builder):
    from dataflow import Pipeline

    rows = [{"id": 'say "hi"', "a": "x\x1fy", "b": "z"}, {"id": "C:\\data\\x1", "a": "x", "b": "y\x1fz"},
            {"id": "copy", "a": "x\x1fy", "b": "z"}]
    p = Pipeline("ids")
    p.output("o", p.from_rows(rows, name="src").dedup("a", "b", name="deduped"))
    builder.build(p)
    assert builder.output("o")["id"].to_list() == ['say "hi"', "C:\\data\\x1"]  # the key columns differ
    dup = builder.rejects("deduped")
    assert dup["id"].to_list() == ["copy"] and json.loads(dup["detail"][0]) == {"duplicate_of": 'say "hi"'}
    assert builder.sql("select json_extract_string(detail, '$.duplicate_of') s from rejects")["s"].to_list() == [
        'say "hi"']


def test_filter_node_is_queryable_as_input_minus_rejects(builder):
    builder.build(small_pipeline())
    assert builder.sql("select id from long order by id")["id"].to_list() == ["src-1", "src-3", "src-4"]


def test_ids_are_stable_and_kept_through_steps(builder):
    builder.build(small_pipeline())
    out = builder.output("result")
    assert out["id"].to_list() == ["src-1", "src-3"]
    assert builder.sql("select text from src where id = 'src-3'")["text"][0] == ROWS[2]["text"]


def test_function_code_change_invalidates_the_node(builder):
    def pipeline(fn):
        p = Pipeline("fn")
        src = p.from_rows(ROWS, name="src")
        p.output("o", src.apply(fn, name="scored"))
        return p

    @row_op(inputs={"text": str}, outputs={"score": int})
    def length_v1(row):
        return {"score": len(row["text"])}

    @row_op(inputs={"text": str}, outputs={"score": int})
    def length_v2(row):
        return {"score": len(row["text"]) * 2}

    builder.build(pipeline(length_v1))
    assert builder.status(builder.build(pipeline(length_v1)))["scored"] == "cached"
    report = builder.build(pipeline(length_v2))
    assert builder.status(report) == {"src": "cached", "scored": "built"}
    assert builder.output("o")["score"][0] == 2 * len(ROWS[0]["text"])


def test_source_content_is_hashed_not_mtime(builder, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a"}\n{"text": "b"}\n')

    def pipeline():
        p = Pipeline("files")
        p.output("o", p.read_jsonl(data, name="src"))
        return p

    builder.build(pipeline())
    data.touch()
    assert builder.build(pipeline()).nothing_done
    data.write_text('{"text": "a"}\n{"text": "c"}\n')
    report = builder.build(pipeline())
    assert report.stats[0].reason == "source file content changed"
    assert builder.output("o")["text"].to_list() == ["a", "c"]


def test_failing_user_function_names_node_and_row_and_keeps_finished_nodes(builder):
    class Calls:  # a stateful object is identified by its type, not its contents
        ids: list[str] = []

    calls = Calls()

    def pipeline(fail: bool):
        p = Pipeline("fails")
        src = p.from_rows(ROWS, name="src")

        def count(row):
            calls.ids.append(row["id"])
            return {"n": len(row["text"])}

        counted = src.map(count, outputs={"n": int}, name="counted")

        def explode(row):
            if fail and row["id"] == "src-3":
                raise ValueError("bad row")
            return {"m": 1}

        p.output("o", counted.map(explode, outputs={"m": int}, name="exploding"))
        return p

    with pytest.raises(DataflowError, match=r"node 'exploding' failed on row id=src-3: ValueError: bad row"):
        builder.build(pipeline(fail=True))
    assert len(calls.ids) == len(ROWS)
    report = builder.build(pipeline(fail=False))
    assert builder.status(report)["counted"] == "cached"
    assert len(calls.ids) == len(ROWS)  # the finished node was not recomputed


def test_on_error_reject_sends_failing_rows_to_rejects(builder):
    p = Pipeline("reject")

    def parse(row):
        return {"value": int(row["text"])}

    src = p.from_rows([{"text": "1"}, {"text": "two"}, {"text": "3"}], name="src")
    p.output("o", src.map(parse, outputs={"value": int}, on_error="reject", name="parsed"))
    builder.build(p)
    assert builder.output("o")["value"].to_list() == [1, 3]
    rejects = builder.rejects("parsed")
    assert rejects["id"].to_list() == ["src-2"]
    assert "ValueError" in rejects["detail"][0]


def test_fan_out_concat_and_join(builder):
    p = Pipeline("graph")
    left = p.from_rows([{"k": 1, "a": "x"}, {"k": 2, "a": "y"}, {"k": 3, "a": "z"}], name="lhs")
    right = p.from_rows([{"k": 1, "b": "one"}, {"k": 3, "b": "three"}], name="rhs")
    joined = left.join(right, on="k", name="joined")
    both = p.concat(left, right, name="combined")
    p.output("joined", joined)
    p.output("combined", both)
    builder.build(p)
    j = builder.output("joined")
    assert j.select("id", "b", "id_right").rows() == [("lhs-1", "one", "rhs-1"), ("lhs-3", "three", "rhs-2")]
    assert builder.rejects("joined")["id"].to_list() == ["lhs-2"]
    assert builder.output("combined").height == 5


def test_rebuild_flag_forces_node_and_downstream(builder):
    builder.build(small_pipeline())
    report = builder.build(small_pipeline(), rebuild=("words",))
    assert builder.status(report) == {"src": "cached", "words": "built", "long": "view", "deduped": "built"}


def test_manifest_and_dataset_card(builder):
    builder.build(small_pipeline())
    manifest = json.loads((builder.out / "manifest.json").read_text())
    assert manifest["outputs"]["result"]["rows"] == 2
    assert manifest["nodes"]["long"]["rejected"] == 2
    assert manifest["versions"]["polars"] == pl.__version__
    card = (builder.out / "result" / "README.md").read_text()
    assert "| long | Filter | 5 | 3 | 2 |" in card


def test_params_override_from_command_line(tmp_path):
    file = tmp_path / "p.py"
    file.write_text("from dataflow import Pipeline\np = Pipeline('x')\nn = p.param('n', 10)\n"
                    "flag = p.param('flag', False)\np.output('o', p.from_rows([{'a': 1}]).limit(n))\n")
    pipeline = load_pipeline(file, {"n": "5", "flag": "true"})
    assert pipeline.params == {"n": 5, "flag": True}
    with pytest.raises(DataflowError, match="no parameter 'm'"):
        load_pipeline(file, {"m": "1"})
    with pytest.raises(DataflowError, match="not a valid int"):
        load_pipeline(file, {"n": "many"})


def test_empty_input_builds_empty_outputs(builder):
    p = Pipeline("empty")
    src = p.from_rows([{"text": "x"}], name="src")
    nothing = src.filter(pl.col("text") == "y", name="nothing")
    p.output("o", nothing.map(n=pl.col("text").str.len_chars(), name="lengths"))
    builder.build(p)
    out = builder.output("o")
    assert out.height == 0 and out.columns == ["id", "text", "n"]


OPERATOR_MODULE = '''
from dataclasses import dataclass
import polars as pl
from dataflow import Operator, Result

TEMPLATE = "{template}"

def render(text):
    return TEMPLATE.format(text=text)

@dataclass(frozen=True)
class Templated(Operator):
    def output_schema(self, schema):
        return pl.Schema({{**schema, "rendered": pl.String()}})

    def apply(self, frame, ctx):
        return Result(frame.with_columns(rendered=pl.col("text").map_elements(render, return_dtype=pl.String)))
'''


def test_operator_module_templates_are_part_of_its_code_version(builder, tmp_path, monkeypatch):
    import importlib
    import sys

    from dataflow.fingerprint import class_code_hash

    monkeypatch.syspath_prepend(str(tmp_path))

    def pipeline(template: str):
        (tmp_path / "my_ops.py").write_text(OPERATOR_MODULE.format(template=template))
        sys.modules.pop("my_ops", None)
        importlib.invalidate_caches()
        module = importlib.import_module("my_ops")
        class_code_hash.cache_clear()
        p = Pipeline("templated")
        p.output("o", p.from_rows(ROWS[:1], name="src").apply(module.Templated(), name="rendered"))
        return p

    builder.build(pipeline("Q: {text}"))
    assert builder.build(pipeline("Q: {text}")).nothing_done
    report = builder.build(pipeline("Question: {text}"))
    assert builder.status(report)["rendered"] == "built"
    assert builder.output("o")["rendered"][0] == "Question: " + ROWS[0]["text"]


def test_concat_refuses_repeated_ids(builder):
    p = Pipeline("self_concat")
    src = p.from_rows(ROWS, name="src")
    p.output("o", p.concat(src, src, name="twice"))
    with pytest.raises(DataflowError, match=r"node 'twice': ids repeat across the concatenated inputs"):
        builder.build(p)


def test_a_rebuilt_node_refreshes_the_outputs_that_show_it(builder):
    from dataflow.operators import GlobalFunction

    def draw(table):
        import random

        return table.with_columns(n=pl.lit(random.random()))

    def pipeline():
        p = Pipeline("refresh")
        p.output("o", p.from_rows([{"a": 1}], name="src").apply(GlobalFunction(draw, {}, {"n": float}), name="drawn"))
        return p

    builder.build(pipeline())
    first = builder.output("o")["n"][0]
    report = builder.build(pipeline(), rebuild=("drawn",))
    assert report.outputs_written == ["o"]
    assert builder.output("o")["n"][0] != first
    assert builder.output("o")["n"][0] == builder.sql("select n from drawn")["n"][0]
