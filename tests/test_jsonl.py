"""JSONL read in chunks gives the same table as reading every record at once, and leaves no scratch."""

from __future__ import annotations

import json

import polars as pl
import pytest

from dataflow import DataflowError, Pipeline
from dataflow.operators.core import jsonl

RECORDS = [{"text": f"row {i}", "score": i if i % 3 else i + 0.5} | ({"extra": [i]} if i > 40 else {})
           for i in range(1, 61)]


def build(builder, path, on_error="raise") -> pl.DataFrame:
    p = Pipeline("jsonl")
    p.output("o", p.read_jsonl(path, name="s", on_error=on_error))
    builder.build(p)
    return builder.output("o")


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(jsonl, "CHUNK_BYTES", 200)  # a few lines per chunk


def test_chunks_join_into_one_table(builder, tmp_path, small_chunks):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    out = build(builder, path)
    expected = pl.DataFrame(RECORDS, infer_schema_length=None)
    assert out.drop("id").equals(expected.select(out.drop("id").columns))
    assert out.schema["score"] == pl.Float64 and out["extra"][:40].is_null().all()
    assert out["id"].to_list() == [f"s-{i}" for i in range(1, 61)]
    assert not list((builder.out / ".dataflow").rglob("part-*.parquet"))


def test_the_kind_most_lines_hold_wins_even_when_it_comes_last(builder, tmp_path, small_chunks):
    path = tmp_path / "rows.jsonl"
    lines = [{"text": 1}] + [{"text": f"t{i}"} for i in range(2, 30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = build(builder, path, on_error="reject")
    assert out["id"].to_list() == [f"s-{i}" for i in range(2, 30)]
    assert builder.rejects("s").select("id", "detail").rows() == [
        ("s-1", "field 'text' is a number here but a string in most lines")]



def test_scalar_fields_keep_late_keys_and_refuse_integers_past_64_bits(builder, tmp_path, small_chunks):
    path = tmp_path / "rows.jsonl"
    rows = [{"text": f"row {i}", "score": i / 2} for i in range(1, 30)] + [{"text": "late", "score": 3, "flag": True}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"text": "wide", "score": 1, "big": 9223372036854775807}\n')
    out = build(builder, path)
    assert out["text"].to_list() == [r["text"] for r in rows] + ["wide"]
    assert out["score"].to_list() == [r["score"] for r in rows] + [1]
    assert out["flag"].to_list()[-2:] == [True, None]
    assert out["big"][-1] == 2**63 - 1  # the largest 64-bit integer, exact
    path.write_text(path.read_text() + '{"text": "wider", "big": 1180591620717411303424}\n')  # 2**70
    with pytest.raises(DataflowError, match="line 32: field 'big' holds an integer past 64 bits"):
        build(builder, path)  # orjson would read a float, polars an Int128 in one block and floats in others


def test_nan_and_infinity_written_by_python_are_read(builder, tmp_path, small_chunks):
    path = tmp_path / "rows.jsonl"
    rows = [{"text": f"t{i}", "score": float("nan") if i == 3 else float("inf") if i == 7 else i / 2}
            for i in range(1, 20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # Python writes NaN and Infinity
    out = build(builder, path)
    assert out["text"].to_list() == [r["text"] for r in rows]
    assert out["score"].is_nan().to_list() == [i == 3 for i in range(1, 20)]
    assert out["score"][6] == float("inf")
