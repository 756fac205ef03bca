"""Compile fails fast: every problem at once, naming node, column and fix, before any data is read."""

from __future__ import annotations


import json

import duckdb
import polars as pl
import pytest

from dataflow import CompileError, Pipeline, row_op
from dataflow.operators import Sample
from dataflow.pipeline import SQL_RESERVED


def problems_of(p: Pipeline) -> list[str]:
    with pytest.raises(CompileError) as info:
        p.compile()
    return info.value.problems


def test_all_problems_reported_at_once():
    p = Pipeline("bad")
    src = p.from_rows([{"text": "a", "score": 1}], name="src")

    @row_op(inputs={"text": str}, outputs={"n": int})
    def count(row):
        return {"n": 1}

    src.filter(pl.col("txt").str.len_chars() > 3, name="typo")
    src.cast({"text": int}).apply(count, name="mistyped")
    src.apply(Sample(fraction=2.0), name="sampled")
    p.add(Sample(n=1), "later", name="earlier")
    p.add(Sample(n=1), "earlier", name="later")
    p.output("out", src)
    p.output("out", src)
    problems = problems_of(p)
    text = "\n".join(problems)
    assert "node 'typo' (Filter): column 'txt' not found. Did you mean 'text'?" in text
    assert "node 'mistyped' (RowFunction): column 'text' is Int64 but the operator needs String" in text
    assert "node 'sampled' (Sample): fraction must be between 0 and 1, not 2.0" in text
    assert "cycle: earlier -> later -> earlier" in text or "cycle: later -> earlier -> later" in text
    assert "output name 'out' is declared twice" in text
    assert len(problems) == 5


def test_missing_column_names_the_upstream_node_and_columns():
    p = Pipeline("missing")
    src = p.from_rows([{"text": "a"}], name="src")

    @row_op(inputs={"body": str}, outputs={"n": int})
    def count(row):
        return {"n": 1}

    p.output("o", src.apply(count, name="counted"))
    [problem] = problems_of(p)
    assert problem.startswith("node 'counted' (RowFunction): column 'body' not found in the output of 'src'")
    assert "It has: id, text" in problem


def test_unknown_input_and_output_references():
    p = Pipeline("refs")
    p.from_rows([{"a": 1}], name="source")
    p.add(Sample(n=1), "sorce", name="s")
    p.output("o", "nope")
    text = "\n".join(problems_of(p))
    assert "input 'sorce' is not a node of this pipeline. Did you mean 'source'?" in text
    assert "output 'o': node 'nope' does not exist" in text


def test_missing_source_file_and_duplicate_node_names(tmp_path):
    p = Pipeline("files")
    p.read_jsonl(tmp_path / "absent.jsonl", name="raw")
    p.from_rows([{"a": 1}], name="raw")
    p.output("o", "raw")
    text = "\n".join(problems_of(p))
    assert f"file not found: {tmp_path / 'absent.jsonl'}" in text
    assert "node name 'raw' is used twice" in text


def test_compile_reads_a_jsonl_file_once_and_the_build_reuses_that_pass(tmp_path, builder, monkeypatch):
    from dataflow.operators.core import jsonl

    big = tmp_path / "big.jsonl"
    unique = json.dumps({"text": str(tmp_path)})  # content no earlier run remembered
    big.write_text(unique + '\n' + '{"text": "x"}\n' * 200_000 + '{"text": "y", "late": 1}\n')
    p = Pipeline("fast")
    src = p.read_jsonl(big, name="src")
    node = src
    for i in range(20):
        node = node.filter(pl.col("text") != str(i), name=f"f{i}")
    p.output("o", node.select("id", "late", name="late"))
    passes = []
    survey = jsonl.survey_jsonl
    monkeypatch.setattr(jsonl, "survey_jsonl", lambda *args, **kw: passes.append(args) or survey(*args, **kw))
    assert len(p.compile().order) == 22
    builder.build(p)
    assert len(passes) == 1  # compile and build shared one pass over the file
    assert builder.output("o")["late"].to_list()[-1] == 1
    jsonl._KEPT.surveys.clear()  # a new process: the schema is remembered under the file's content hash
    p.compile()
    assert len(passes) == 1


def test_a_pipeline_needs_an_output():
    p = Pipeline("none")
    p.from_rows([{"a": 1}])
    assert problems_of(p) == ["the pipeline declares no output: add p.output('name', node)"]


def test_names_must_be_usable_in_sql():
    p = Pipeline("names")
    src = p.from_rows([{"a": 1}], name="select")
    p.output("my-output", src.limit(1))
    text = "\n".join(problems_of(p))
    assert "node name 'select' is an SQL keyword" in text
    assert "output name 'my-output' is not an identifier" in text
    assert "limit_step" in p.nodes  # automatic names avoid keywords


def test_reserved_names_are_every_keyword_duckdb_refuses_as_a_table():
    con = duckdb.connect()
    refused = set()
    for (keyword,) in con.execute("select keyword_name from duckdb_keywords()").fetchall():
        con.execute(f'create or replace view "{keyword}" as select 1 as n')
        try:
            con.execute(f"select n from {keyword} order by n")
        except duckdb.Error:
            refused.add(keyword)
    assert refused == SQL_RESERVED
