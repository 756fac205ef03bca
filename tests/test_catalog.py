"""The catalog's views as a user queries them: ``nodes.metrics`` a struct whose fields are SQL columns,
``edges`` the DAG, ``runs`` with the parameters of each run, ``rejects`` with the run that made each,
and the node table of ``dataflow nodes``."""

from __future__ import annotations

import polars as pl

from dataflow import Pipeline
from dataflow.catalog import nodes_table
from dataflow.operators import MinHashDedup
from dataflow.records import read_manifest

TEXTS = ["the cat sat on the mat today", "the cat sat on the mat today again", "a dog ran in the park",
         "the cat sat on the mat today", "stars shine at night over the sea", "hi there"]


def pipeline(min_words: int = 3) -> Pipeline:
    p = Pipeline("catalog")
    words = p.param("min_words", min_words)
    rows = p.from_rows([{"text": t} for t in TEXTS], name="docs")
    near = rows.apply(MinHashDedup(column="text", ngram=2, threshold=0.5), name="near")
    long = near.map(words=pl.col("text").str.split(" ").list.len(), name="counted") \
        .filter(pl.col("words") >= words, reason="too short", name="long")
    extra = p.from_rows([{"text": "one more line of text"}], name="extra")
    p.output("kept", p.concat(long, extra, name="merged"))
    return p


def test_node_metrics_are_a_struct_whose_fields_are_columns(builder):
    builder.build(pipeline())
    found = builder.sql("select name, metrics.duplicate_pairs as pairs, metrics.candidate_pairs >= "
                        "metrics.duplicate_pairs as checked, metrics.exact_duplicates as copies from nodes "
                        "where metrics.duplicate_pairs is not null")
    recorded = read_manifest(builder.out)["nodes"]["near"]["metrics"]
    assert found.rows() == [("near", recorded["duplicate_pairs"], True, recorded["exact_duplicates"])]
    assert recorded["duplicate_pairs"] == 1 and recorded["exact_duplicates"] == 1  # "... again"; the repeated text
    schema = builder.sql("select metrics from nodes").schema["metrics"]
    assert isinstance(schema, pl.Struct) and "clusters_with_duplicates" in {f.name for f in schema.fields}


def test_edges_are_the_dag(builder):
    builder.build(pipeline())
    edges = builder.sql("select upstream, node, position from edges order by node, position").rows()
    assert edges == [("near", "counted", 0), ("counted", "long", 0), ("long", "merged", 0), ("extra", "merged", 1),
                     ("docs", "near", 0)]
    sources = builder.sql("select name from nodes where name not in (select node from edges)")["name"].to_list()
    assert sources == ["docs", "extra"]


def test_nodes_table_lists_each_node_with_operator_inputs_and_status(builder):
    builder.build(pipeline())
    table = nodes_table(builder.out)
    assert table.columns[:4] == ["name", "operator", "inputs", "status"]
    rows = {r["name"]: r for r in table.to_dicts()}
    assert rows["merged"]["operator"] == "Concat" and rows["merged"]["inputs"] == "long, extra"
    assert rows["long"]["status"] == "view" and rows["long"]["rejected"] == 1
    builder.build(pipeline())
    assert set(nodes_table(builder.out)["status"]) == {"cached"}


def test_runs_hold_the_parameters_of_each_run(builder):
    builder.build(pipeline())
    builder.build(pipeline(min_words=7))
    # two builds may start within one second (the resolution of `started`): compare as a set
    assert sorted(builder.sql("select params.min_words as w from runs")["w"].to_list()) == [3, 7]


def test_every_reject_names_the_run_that_made_it(builder):
    builder.build(pipeline())
    first = builder.sql("select run_id from runs")["run_id"][0]
    assert set(builder.sql("select run_id from rejects")["run_id"]) == {first}
    builder.build(pipeline(min_words=7))  # 'long' is rebuilt, 'near' is cached from the first run
    second = builder.sql("select run_id from runs where run_id != ?".replace("?", f"'{first}'"))["run_id"][0]
    by_node = dict(builder.sql("select node, any_value(run_id) from rejects group by node").rows())
    assert by_node == {"near": first, "long": second}


def test_rejects_are_named_by_the_build_queried_when_another_pipeline_made_the_node(builder):
    builder.build(pipeline())
    p = Pipeline("renamed")  # the same nodes, named otherwise: found cached, made by the 'catalog' build
    rows = p.from_rows([{"text": t} for t in TEXTS], name="docs")
    near = rows.apply(MinHashDedup(column="text", ngram=2, threshold=0.5), name="near_duplicates_out")
    p.output("distinct_docs", near)
    builder.build(p)
    assert builder.sql("select distinct node from rejects")["node"].to_list() == ["near_duplicates_out"]


def test_llm_cost_metrics_can_be_asked_of_a_build_without_a_model(builder):
    p = Pipeline("plain")
    p.output("o", p.from_rows([{"text": t} for t in TEXTS], name="docs"))
    builder.build(p)
    assert builder.sql("select name, metrics.llm_calls, metrics.cache_hits from nodes").rows() == [("docs", None, None)]


def test_a_query_error_keeps_duckdbs_suggestion(builder):
    import pytest

    from dataflow.catalog import query
    from dataflow.errors import DataflowError

    builder.build(pipeline())
    with pytest.raises(DataflowError, match=r'not found in FROM clause!\nCandidate bindings: "text"(.|\n)*Available '
                                            r'views: counted, docs'):
        query(builder.out, "select texts from docs")


def test_columns_differing_only_in_case_are_named_as_duckdb_names_them(builder, capsys):
    from dataflow.cli import main

    p = Pipeline("case")
    rows = p.from_rows([{"a": 1, "A": 2}, {"a": 3, "A": 4}], name="rows")
    p.output("kept", rows.filter(pl.col("a") > 1, name="big"))
    builder.build(p)
    assert builder.sql('select * from rows order by id').rows() == [("rows-1", 1, 2), ("rows-2", 3, 4)]
    assert builder.sql('select "A" from rows order by id').to_series().to_list() == [1, 3]  # DuckDB: "A" is a
    assert main(["query", 'select "A_1" from rows order by id', "--out", str(builder.out), "--format", "csv"]) == 0
    printed = capsys.readouterr()
    assert printed.out.split() == ["A_1", "2", "4"]
    assert printed.err == ("note: 'rows' has columns whose names differ only in case; in queries A as A_1 (DuckDB "
                           "ignores case in names). Rename one in the pipeline to keep its name.\n")
    assert main(["show", "kept", "--out", str(builder.out)]) == 0
    assert "note: 'kept' has columns" in capsys.readouterr().err
