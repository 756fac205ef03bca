"""Declared outputs as a user loads them: standard Arrow types that mix with ordinary hub datasets,
written only when their node changed, and a warning where an output is nearly empty."""

from __future__ import annotations

import io

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataflow import Pipeline
from dataflow.operators import ToConversation
from dataflow.outputs import standard_type
from dataflow.records import NEARLY_EMPTY, read_manifest
from dataflow.reports.summary import render

datasets = pytest.importorskip("datasets")

ORDINARY = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]


def chats_pipeline(n: int) -> Pipeline:
    rows = [{"instruction": f"question {i}", "output": f"answer {i}", "tags": [f"t{i}"]} for i in range(n)]
    p = Pipeline("chats")
    chats = p.from_rows(rows, name="src").apply(ToConversation(), name="chats")
    p.output("chats", chats)
    p.output("even", chats.filter(pl.col("id").str.extract(r"(\d+)$").cast(pl.Int64) % 2 == 0, name="even"))
    return p


def large_types(dtype: pa.DataType) -> list[str]:
    """Every large or view type in ``dtype``, at any depth."""
    found = [str(dtype)] if any(check(dtype) for check in (
        pa.types.is_large_string, pa.types.is_large_binary, pa.types.is_large_list, pa.types.is_string_view,
        pa.types.is_binary_view, pa.types.is_list_view, pa.types.is_large_list_view)) else []
    children = [dtype.field(i).type for i in range(dtype.num_fields)] if dtype.num_fields else []
    return found + [t for child in children for t in large_types(child)]


@pytest.mark.parametrize("output", ["chats", "even"])  # a stored node, and a view (a filter's rows)
def test_an_output_concatenates_and_interleaves_with_an_ordinary_hub_dataset(builder, output):
    builder.build(chats_pipeline(6))
    path = builder.out / output / "data.parquet"
    assert [t for f in pq.read_schema(path) for t in large_types(f.type)] == []
    ours = datasets.load_dataset("parquet", data_files=str(path), split="train").select_columns(["messages"])
    ordinary = datasets.Dataset.from_list(ORDINARY)
    both = datasets.concatenate_datasets([ours, ordinary])
    assert both.num_rows == ours.num_rows + 1 and both[-1] == ORDINARY[0]
    mixed = datasets.interleave_datasets([ours, ordinary], stopping_strategy="all_exhausted")
    assert ORDINARY[0] in list(mixed) and ours[0] in list(mixed)
    # polars, DuckDB and the catalog read it as before
    assert pl.read_parquet(path).get_column("messages").to_list() == list(ours["messages"])
    assert duckdb.sql(f"select count(*) from read_parquet('{path}')").fetchall() == [(ours.num_rows,)]
    assert builder.sql(f"select count(*) n from {output}")["n"].to_list() == [ours.num_rows]


def test_outputs_are_written_one_stored_row_group_at_a_time(builder):
    builder.build(chats_pipeline(1_000))
    fingerprint = (builder.out / "chats" / ".fingerprint").read_text()
    stored = builder.out / ".dataflow" / "cache" / fingerprint / "data.parquet"
    for output, rows in (("chats", 1_000), ("even", 500)):  # a stored node, and a view of it
        written = pq.ParquetFile(builder.out / output / "data.parquet")
        assert (written.metadata.num_rows, written.num_row_groups) == (rows, pq.ParquetFile(stored).num_row_groups)
    assert pl.read_parquet(builder.out / "chats" / "data.parquet").equals(pl.read_parquet(stored))
    even = pl.read_parquet(stored).filter(pl.col("id").str.extract(r"(\d+)$").cast(pl.Int64) % 2 == 0)
    assert pl.read_parquet(builder.out / "even" / "data.parquet").equals(even)


def test_an_output_that_is_up_to_date_is_not_written_again(builder):
    first = builder.build(chats_pipeline(6))
    assert sorted(first.outputs_written) == ["chats", "even"]
    files = {name: (builder.out / name / "data.parquet").stat() for name in ("chats", "even")}
    again = builder.build(chats_pipeline(6))
    assert again.outputs_written == [] and again.nothing_done
    for name, before in files.items():
        after = (builder.out / name / "data.parquet").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_standard_types_reach_every_depth():
    nested = pa.struct([pa.field("turns", pa.large_list(pa.struct([pa.field("text", pa.large_string())]))),
                        pa.field("tags", pa.map_(pa.large_string(), pa.large_list(pa.int64()))),
                        pa.field("blob", pa.large_binary()), pa.field("n", pa.int64())])
    assert standard_type(nested) == pa.struct([
        pa.field("turns", pa.list_(pa.struct([pa.field("text", pa.string())]))),
        pa.field("tags", pa.map_(pa.string(), pa.list_(pa.int64()))),
        pa.field("blob", pa.binary()), pa.field("n", pa.int64())])
    assert standard_type(pa.list_(pa.string_view(), 2)) == pa.list_(pa.string(), 2)


def summary(builder) -> str:
    stream = io.StringIO()
    render(read_manifest(builder.out), stream)
    return stream.getvalue()


def test_a_nearly_empty_output_is_named_in_the_summary_and_its_dataset_card(builder):
    builder.build(chats_pipeline(5))  # ids src-1 to src-5: 5 chats, 2 even ones, both under NEARLY_EMPTY rows
    text = summary(builder)
    assert "warning: output 'even' is nearly empty: 2 rows; the nearest step that dropped rows is 'even' " \
           "(3 rejected)" in text
    assert "where node = 'even'" in text
    assert "warning: output 'chats' is nearly empty: 5 rows" in text
    assert "output 'even' is nearly empty: 2 rows" in (builder.out / "even" / "README.md").read_text()

    builder.build(chats_pipeline(2 * NEARLY_EMPTY))
    assert "warning" not in summary(builder)
    assert "Warning" not in (builder.out / "even" / "README.md").read_text()


def test_an_empty_output_says_empty(builder):
    p = Pipeline("none")
    p.output("none", p.from_rows([{"x": 1}], name="src").filter(pl.col("x") > 1, reason="too small", name="kept"))
    builder.build(p)
    assert "warning: output 'none' is empty: 0 rows; the nearest step that dropped rows is 'kept'" in summary(builder)
