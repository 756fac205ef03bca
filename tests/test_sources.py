"""Every source format, and bad input: a clear error naming file and line, or rejects on request."""

from __future__ import annotations

import json

import polars as pl
import pytest

from dataflow import DataflowError, Pipeline


def build_one(builder, make) -> pl.DataFrame:
    p = Pipeline("src")
    p.output("o", make(p))
    builder.build(p)
    return builder.output("o")


def test_jsonl_json_parquet_csv_rows(builder, tmp_path):
    rows = [{"text": "a", "n": 1}, {"text": "b", "n": 2}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    pl.DataFrame(rows).write_parquet(tmp_path / "d.parquet")
    pl.DataFrame(rows).write_csv(tmp_path / "d.csv")
    for make in (lambda p: p.read_jsonl(tmp_path / "d.jsonl", name="s"),
                 lambda p: p.read_json(tmp_path / "d.json", name="s"),
                 lambda p: p.read_parquet(tmp_path / "d.parquet", name="s"),
                 lambda p: p.read_csv(tmp_path / "d.csv", name="s"),
                 lambda p: p.from_rows(rows, name="s")):
        out = build_one(builder, make)
        assert out.select("id", "text", "n").rows() == [("s-1", "a", 1), ("s-2", "b", 2)]


def test_hugging_face_dataset_and_saved_directory(builder, tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["x", "y", "z"]})
    out = build_one(builder, lambda p: p.read_hf(ds, name="hf"))
    assert out["text"].to_list() == ["x", "y", "z"]
    datasets.DatasetDict({"train": ds}).save_to_disk(tmp_path / "saved")
    out = build_one(builder, lambda p: p.read_hf(tmp_path / "saved", split="train", name="hf"))
    assert out["id"].to_list() == ["hf-1", "hf-2", "hf-3"]


def test_own_id_column_is_used_and_must_be_unique(builder):
    out = build_one(builder, lambda p: p.from_rows([{"id": 7, "t": "a"}, {"id": 9, "t": "b"}], name="s"))
    assert out["id"].to_list() == ["7", "9"]
    with pytest.raises(DataflowError, match="duplicate values"):
        build_one(builder, lambda p: p.from_rows([{"id": 1, "t": "a"}, {"id": 1, "t": "b"}], name="d"))


def test_malformed_jsonl_line_names_file_and_line(builder, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b",}\n{"text": "c"}\n')
    with pytest.raises(DataflowError, match=r"bad.jsonl line 2: .*malformed_json.*on_error='reject'"):
        build_one(builder, lambda p: p.read_jsonl(path, name="s"))


def test_bad_lines_go_to_rejects_on_request(builder, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "b",}\n\n{"text": "\xff\xfe"}\n[1, 2]\n{"text": 5}\n{"text": "ok"}\n')
    out = build_one(builder, lambda p: p.read_jsonl(path, name="s", on_error="reject"))
    assert out.select("id", "text").rows() == [("s-1", "a"), ("s-7", "ok")]
    reasons = dict(builder.rejects("s").select("id", "reason").rows())
    assert reasons == {"s-2": "malformed_json", "s-4": "invalid_utf8", "s-5": "not_an_object",
                       "s-6": "type_mismatch"}


def test_wrong_type_without_opt_in_is_an_error_naming_the_field(builder, tmp_path):
    path = tmp_path / "types.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": 3}\n')
    with pytest.raises(DataflowError, match=r"line 3: field 'text' is a number here but a string"):
        build_one(builder, lambda p: p.read_jsonl(path, name="s"))


def test_csv_value_that_does_not_fit_its_column_names_row_and_column(builder, tmp_path):
    lines = ["n,text", *(f"{i},t{i}" for i in range(12_000)), "oops,t", "5,t"]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataflowError, match=r"d.csv row 12001, column 'n': 'oops' is not Int64"):
        build_one(builder, lambda p: p.read_csv(tmp_path / "d.csv", name="s"))
    out = build_one(builder, lambda p: p.read_csv(tmp_path / "d.csv", name="s", infer_types=False))
    assert out.schema["n"] == pl.String and out.filter(pl.col("id") == "s-12001")["n"].item() == "oops"
    assert out.height == 12_002


def test_blank_csv_lines_are_no_rows_and_a_one_column_file_keeps_its_empty_values(builder, tmp_path):
    (tmp_path / "d.csv").write_text('n,text\n1,a\n\n2,"two\n\nlines"\n,\n3,c\n\n')
    out = build_one(builder, lambda p: p.read_csv(tmp_path / "d.csv", name="s"))
    assert out.rows() == [("s-1", 1, "a"), ("s-3", 2, "two\n\nlines"), ("s-4", None, None), ("s-5", 3, "c")]
    (tmp_path / "one.csv").write_text("text\na\n\nb\n")
    out = build_one(builder, lambda p: p.read_csv(tmp_path / "one.csv", name="s"))
    assert out["text"].to_list() == ["a", None, "b"]


def test_csv_that_is_not_utf8_names_the_line(builder, tmp_path):
    (tmp_path / "d.csv").write_bytes(b"n,text\n1,a\n2,caf\xe9\n")
    with pytest.raises(DataflowError, match=r"d.csv line 3: not valid UTF-8"):
        build_one(builder, lambda p: p.read_csv(tmp_path / "d.csv", name="s"))


@pytest.mark.parametrize("text, on_error, message", [
    ("", "raise", "is empty: it holds no JSON lines"), ("\n  \n", "reject", "is empty: it holds no JSON lines"),
    ("{bad\n[1]\n", "reject", "no valid JSON object on any line: all 2 non-blank lines are bad \\(line 1: "),
    ("{bad\n[1]\n", "raise", "line 1: Expecting property name enclosed in double quotes at column 2"),
    ('{"n": 1}\n{"n": 2}\n{"n": "x"}\n', "raise", "line 3: field 'n' is a string here but a number")])
def test_a_jsonl_file_without_a_good_line_or_with_a_bad_one_is_a_compile_error(tmp_path, text, on_error, message):
    path = tmp_path / "empty.jsonl"
    path.write_text(text)
    p = Pipeline("empty")
    p.output("o", p.read_jsonl(path, name="s", on_error=on_error))
    with pytest.raises(DataflowError, match=message):
        p.compile()


def test_a_ten_megabyte_row(builder, tmp_path):
    path = tmp_path / "big.jsonl"
    big = "word " * 2_000_000
    path.write_text(json.dumps({"text": "small"}) + "\n" + json.dumps({"text": big}) + "\n")
    out = build_one(builder, lambda p: p.read_jsonl(path, name="s").map(n=pl.col("text").str.len_chars()))
    assert out["n"].to_list() == [5, len(big)]


def test_relative_paths_resolve_against_the_pipeline_file(tmp_path, monkeypatch):
    from dataflow.build import load_pipeline

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "pipe.py").write_text("from dataflow import Pipeline\np = Pipeline('rel')\n"
                                      "p.output('o', p.read_jsonl('data/x.jsonl'))\n")
    monkeypatch.chdir("/")
    assert load_pipeline(tmp_path / "pipe.py").compile().order == ["x"]


def test_csv_rows_that_do_not_fit_go_to_rejects_on_request(builder, tmp_path, monkeypatch):
    from dataflow.operators.core import sources

    monkeypatch.setattr(sources, "CSV_TYPE_ROWS", 3)
    (tmp_path / "d.csv").write_text("n,ok,text\n1,true,a\n2,false\n\n3,true,c,extra\n4,TRUE,d\nfour,false,e\n"
                                    "5,maybe,f\n6,false,\"g, h\"\n")
    out = build_one(builder, lambda p: p.read_csv(tmp_path / "d.csv", name="s", on_error="reject"))
    assert out.rows() == [("s-1", 1, True, "a"), ("s-5", 4, True, "d"), ("s-8", 6, False, "g, h")]
    assert builder.rejects("s").select("id", "reason", "detail").rows() == [
        ("s-2", "wrong_field_count", "line 3: 2 field(s), but the header has 3"),
        ("s-4", "wrong_field_count", "line 5: 4 field(s), but the header has 3"),
        ("s-6", "type_mismatch", "row 6, column 'n': 'four' is not Int64, the type its first 3 rows have"),
        ("s-7", "type_mismatch", "row 7, column 'ok': 'maybe' is not Boolean, the type its first 3 rows have")]
    with pytest.raises(DataflowError, match="line 3: 2 field"):
        build_one(builder, lambda p: p.read_csv(tmp_path / "d.csv", name="s"))


@pytest.mark.parametrize("seed", range(20))
def test_csv_read_with_rejects_matches_the_rows_read_one_by_one(builder, tmp_path, monkeypatch, seed):
    """Random CSV files of ints, floats, booleans and text, with rows of the wrong field count, blank lines and
    values that do not fit their column after the rows types come from: the kept rows and the rejects are those
    of a plain reading with Python's csv module."""
    import csv
    import io
    import random

    from dataflow.operators.core import sources

    rng = random.Random(seed)
    monkeypatch.setattr(sources, "CSV_TYPE_ROWS", 10)
    kinds = [rng.choice(["int", "float", "bool", "text"]) for _ in range(rng.randint(2, 4))]
    make = {"int": lambda: str(rng.randint(-50, 50)), "float": lambda: f"{rng.uniform(-5, 5):.3f}",
            "bool": lambda: rng.choice(["true", "false"]), "text": lambda: rng.choice(["a", "b c", "d,e", ""])}
    lines = []
    for i in range(60):
        fields = [make[k]() for k in kinds]
        if i >= 10 and rng.random() < 0.1:
            fields[rng.randrange(len(fields))] = "oops"
        if rng.random() < 0.05:
            fields = fields[:-1] if rng.random() < 0.5 else [*fields, "1"]
        lines.append("" if rng.random() < 0.05 else fields)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([f"c{j}" for j in range(len(kinds))])
    for fields in lines:
        buffer.write("\n") if fields == "" else writer.writerow(fields)
    (tmp_path / "d.csv").write_text(buffer.getvalue())
    parse = {"int": int, "float": float, "bool": lambda v: {"true": True, "false": False}[v], "text": str}
    kept, rejected = [], []
    for row, fields in enumerate(csv.reader(io.StringIO(buffer.getvalue())), 0):
        if row == 0 or not fields:
            continue
        if len(fields) != len(kinds):
            rejected.append((f"s-{row}", "wrong_field_count"))
            continue
        try:
            kept.append((f"s-{row}", *[None if v == "" else parse[k](v) for k, v in zip(kinds, fields)]))
        except (ValueError, KeyError):
            rejected.append((f"s-{row}", "type_mismatch"))
    out = build_one(builder, lambda p: p.read_csv(tmp_path / "d.csv", name="s", on_error="reject"))
    assert out.rows() == kept
    assert sorted(builder.rejects("s").select("id", "reason").rows()) == sorted(rejected)
