"""The extension points of ARCHITECTURE.md as a user meets them: runtime fields that never rebuild,
outputs that record their canonical schema, executors and reports found by name."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import polars as pl
import pytest

from dataflow import Operator, Pipeline
from dataflow.build import build
from dataflow.errors import CompileError, DataflowError
from dataflow.executors import EXECUTORS, executor_class
from dataflow.operator import Kind, Result, runtime_field
from dataflow.operators import MathVerify, PreferencePairs
from dataflow.progress import Progress
from dataflow.records import outputs_of


def test_changing_worker_counts_rebuilds_nothing(builder):
    def pipeline(workers: int) -> Pipeline:
        p = Pipeline("workers")
        rows = [{"response": "The answer is 4.", "answer": "4"}, {"response": "It is 5.", "answer": "4"}]
        p.output("o", p.from_rows(rows, name="src").apply(MathVerify(workers=workers), name="verified"))
        return p

    builder.build(pipeline(1))
    report = builder.build(pipeline(2))
    assert report.nothing_done
    assert builder.output("o")["reward"].to_list() == [1.0, 0.0]


@dataclass(frozen=True)
class Doubled(Operator):
    column: str = "n"
    threads: int = runtime_field(1)
    kind = Kind.ROW

    def apply(self, frame: pl.LazyFrame, ctx) -> Result:
        return Result(frame.with_columns(pl.col(self.column) * 2))


def test_a_runtime_field_of_a_users_operator_is_not_a_parameter(builder):
    def pipeline(threads: int) -> Pipeline:
        p = Pipeline("runtime")
        p.output("o", p.from_rows([{"n": 1}], name="src").apply(Doubled(threads=threads), name="doubled"))
        return p

    assert builder.status(builder.build(pipeline(1)))["doubled"] == "built"
    assert builder.status(builder.build(pipeline(8)))["doubled"] == "cached"
    assert builder.status(builder.build(pipeline(8)))["doubled"] == "cached"


def scored_candidates(p: Pipeline):
    rows = [{"prompt": "Q", "prompt_id": "q", "response": r, "score": s} for r, s in (("good", 9.0), ("bad", 2.0))]
    return p.from_rows(rows, name="candidates")


def test_outputs_record_their_record_schema(builder):
    p = Pipeline("records")
    candidates = scored_candidates(p)
    p.output("dpo", candidates.apply(PreferencePairs(), name="pairs"), schema="preference")
    p.output("raw", candidates)
    builder.build(p)
    assert list(outputs_of(builder.out, schema="preference")) == ["dpo"]
    assert outputs_of(builder.out)["raw"]["schema"] is None
    manifest = json.loads((builder.out / "manifest.json").read_text())
    assert manifest["outputs"]["dpo"] == {"node": "pairs", "schema": "preference", "rows": 1, "path": "dpo",
                                         "skipped": False}
    assert "- records: `preference`" in (builder.out / "dpo" / "README.md").read_text()


def test_a_declared_record_schema_is_checked_at_compile_time():
    p = Pipeline("records")
    candidates = scored_candidates(p)
    p.output("dpo", candidates, schema="preference")
    p.output("sft", candidates, schema="sft_records")
    with pytest.raises(CompileError) as caught:
        p.compile()
    problems = caught.value.problems
    assert any("output 'dpo' is declared as 'preference' records but node 'candidates' has no column 'chosen'" in x
               for x in problems)
    assert any("output 'sft': unknown record schema 'sft_records'; choose from" in x for x in problems)


def test_a_record_column_of_the_wrong_type_is_named():
    p = Pipeline("records")
    p.output("prompts", p.from_rows([{"prompt": "text, not turns", "answer": "4"}], name="src"), schema="prompt")
    with pytest.raises(CompileError, match="column 'prompt' of node 'src' is String, not List"):
        p.compile()


def test_executors_are_found_by_name(builder):
    assert executor_class("local").__name__ == "LocalExecutor" and list(EXECUTORS) == ["local", "ray"]
    p = Pipeline("t")
    p.output("o", p.from_rows([{"a": 1}], name="src"))
    with pytest.raises(DataflowError, match="--executor spark: no such choice; choose one of local"):
        build(p, builder.out, Progress(io.StringIO()), executor="spark")
    assert not builder.out.exists()  # refused before anything ran
