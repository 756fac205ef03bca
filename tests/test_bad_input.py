"""A catalogue of user errors: each exits 1 with a one-paragraph error that names where the problem
is (file, line, row, column or node), never a traceback; with ``on_error="reject"`` the bad rows go
to rejects and rows in = rows out + rejected."""

from __future__ import annotations

import gzip
import io
import json
import os
import random

import polars as pl
import pytest

from dataflow.cli import main

GOOD = '{"text": "a"}\n{"text": "b"}\n'


def damaged_parquet() -> bytes:
    """A Parquet file whose footer reads but whose data pages do not."""
    rng = random.Random(0)
    buffer = io.BytesIO()
    texts = ["".join(rng.choice("abcdefghij ") for _ in range(80)) for _ in range(5_000)]
    pl.DataFrame({"text": texts}).write_parquet(buffer, compression="zstd", row_group_size=1_000)
    data = bytearray(buffer.getvalue())
    start = len(data) // 3
    data[start:start + 200] = bytes(b ^ 0x55 for b in data[start:start + 200])
    return bytes(data)


def pipeline(source: str, name: str = "bad", output: str = "src") -> str:
    return (f"import polars as pl\nfrom dataflow import Pipeline, row_op\np = Pipeline({name!r})\n{source}\n"
            f"p.output('o', {output})\n")


def read(reader: str, file: str, options: str = "") -> str:
    return pipeline(f"src = p.{reader}({file!r}{options}, name='src')")


CASES = {  # name: (files, pipeline source, extra CLI args, what the error must name)
    # JSON Lines
    "jsonl: a malformed line": ({"in.jsonl": '{"text": "a"}\n{"text": \n'}, read("read_jsonl", "in.jsonl"), [], "in.jsonl line 2"),
    "jsonl: a line that is an array": ({"in.jsonl": '{"text": "a"}\n[1, 2]\n'}, read("read_jsonl", "in.jsonl"), [], "line 2"),
    "jsonl: a line that is a number": ({"in.jsonl": '{"text": "a"}\n42\n'}, read("read_jsonl", "in.jsonl"), [], "line 2"),
    "jsonl: a truncated last line": ({"in.jsonl": GOOD + '{"text": "c'}, read("read_jsonl", "in.jsonl"), [], "line 3"),
    "jsonl: bytes that are not UTF-8": ({"in.jsonl": GOOD.encode() + b'{"text": "\xff\xfe"}\n'}, read("read_jsonl", "in.jsonl"), [], "line 3"),
    "jsonl: a lone surrogate escape": ({"in.jsonl": GOOD + '{"text": "\\ud800"}\n'}, read("read_jsonl", "in.jsonl"), [], "line 3"),
    "jsonl: nesting deeper than Arrow reads": ({"in.jsonl": GOOD + '{"text": ' + "[" * 2000 + "]" * 2000 + "}\n"},
                                               read("read_jsonl", "in.jsonl"), [], "line 3"),
    "jsonl: an integer past 64 bits": ({"in.jsonl": '{"n": 1}\n{"n": 123456789012345678901234567890}\n'},
                                       read("read_jsonl", "in.jsonl"), [], "line 2"),
    "jsonl: a field of another kind": ({"in.jsonl": '{"n": 1}\n{"n": 2}\n{"n": "three"}\n'}, read("read_jsonl", "in.jsonl"), [],
                                       "line 3: field 'n'"),
    "jsonl: an empty file": ({"in.jsonl": ""}, read("read_jsonl", "in.jsonl"), [], "in.jsonl"),
    "jsonl: blank lines only": ({"in.jsonl": "\n \n\n"}, read("read_jsonl", "in.jsonl"), [], "in.jsonl"),
    "jsonl: bzip2-compressed": ({"in.jsonl": b"BZh91AY&SY" + b"\x00" * 20}, read("read_jsonl", "in.jsonl"), [], "bzip2"),
    "jsonl: ids with nulls": ({"in.jsonl": '{"id": "a"}\n{"id": null}\n'}, read("read_jsonl", "in.jsonl"), [], "column 'id'"),
    "jsonl: repeated ids": ({"in.jsonl": '{"id": "a"}\n{"id": "a"}\n'}, read("read_jsonl", "in.jsonl"), [], "duplicate"),
    "jsonl: a missing file": ({}, read("read_jsonl", "nope.jsonl"), [], "nope.jsonl"),
    "jsonl: a glob pattern": ({"a.jsonl": GOOD}, read("read_jsonl", "*.jsonl"), [],
                              "a pattern such as *.jsonl is not read"),
    "jsonl: a null line": ({"in.jsonl": GOOD + "null\n"}, read("read_jsonl", "in.jsonl"), [],
                           "line 3: expected a JSON object, got null (not_an_object)"),
    "jsonl: an unterminated string": ({"in.jsonl": GOOD + '{"text": "c'}, read("read_jsonl", "in.jsonl"), [],
                                      "line 3: Unterminated string starting at column 10 (malformed_json)"),
    "jsonl: no good line": ({"in.jsonl": "{bad\n[1]\n"}, read("read_jsonl", "in.jsonl", ", on_error='reject'"), [],
                            "no valid JSON object on any line"),
    "jsonl: a directory": ({"dir/x": ""}, read("read_jsonl", "dir"), [], "dir"),
    # CSV
    "csv: a row with a field too many": ({"in.csv": "a,b\n1,2\n3,4,5\n"}, read("read_csv", "in.csv"), [], "line 3"),
    "csv: a row with a field too few": ({"in.csv": "a,b\n1,2\n3\n"}, read("read_csv", "in.csv"), [], "line 3"),
    "csv: an unbalanced quote": ({"in.csv": 'a,b\n1,2\n"3,4\n5,6\n'}, read("read_csv", "in.csv"), [], "line 3"),
    "csv: an unbalanced quote in the header": ({"in.csv": '"a,b\n1,2\n'}, read("read_csv", "in.csv"), [], "line 1"),
    "csv: bytes that are not UTF-8": ({"in.csv": b"a,b\n1,2\n\xff,3\n"}, read("read_csv", "in.csv"), [], "line 3"),
    "csv: a value that does not fit its column": ({"in.csv": "a\n" + "1\n" * 10_001 + "x\n"}, read("read_csv", "in.csv"),
                                                  [], "row 10002, column 'a'"),
    "csv: an empty file": ({"in.csv": ""}, read("read_csv", "in.csv"), [], "in.csv"),
    "csv: a repeated column name": ({"in.csv": "a,a\n1,2\n"}, read("read_csv", "in.csv"), [], "'a'"),
    # Parquet and JSON
    "parquet: not a Parquet file": ({"in.parquet": "hello, world\n"}, read("read_parquet", "in.parquet"), [], "in.parquet"),
    "parquet: an empty file": ({"in.parquet": ""}, read("read_parquet", "in.parquet"), [], "in.parquet"),
    "parquet: a truncated file": ({"in.parquet": "TRUNCATED"}, read("read_parquet", "in.parquet"), [], "in.parquet"),
    "parquet: a damaged data page": ({"in.parquet": damaged_parquet()}, read("read_parquet", "in.parquet"), [],
                                     "in.parquet): parquet: File out of specification"),
    "json: not JSON": ({"in.json": "[{"}, read("read_json", "in.json"), [], "in.json"),
    "json: not an array": ({"in.json": '{"a": 1}'}, read("read_json", "in.json"), [], "in.json"),
    "json: an array of numbers": ({"in.json": "[1, 2]"}, read("read_json", "in.json"), [],
                                  "record 1: expected an object, got number"),
    "json: a field of another kind": ({"in.json": '[{"n": 1}, {"n": 2}, {"n": "x"}]'}, read("read_json", "in.json"), [],
                                      "record 3: field 'n' is a string here but a number in most records; "
                                      "fix the record"),
    "rows: a row that is not a dict": ({}, pipeline("src = p.from_rows([{'a': 1}, 'x'], name='src')"), [],
                                       "row 2 is a str, not a dict of column values"),
    "rows: a field of another kind": ({}, pipeline("src = p.from_rows([{'a': 1}, {'a': 2}, {'a': 'x'}])"), [],
                                      "row 3: field 'a' is a string here but a number in most rows; fix the row"),
    "json: nesting deeper than Arrow reads": ({"in.json": "[" + '{"a": ' + "[" * 2000 + "]" * 2000 + "}]"},
                                              read("read_json", "in.json"), [], "in.json"),
    # the pipeline file
    "pipeline: a syntax error": ({}, "from dataflow import Pipeline\np = Pipeline('x'\n", [], "p.py:2"),
    "pipeline: an exception": ({}, "from dataflow import Pipeline\np = Pipeline('x')\n1 / 0\n", [], "p.py:3"),
    "pipeline: an import that fails": ({}, "import no_such_module\n", [], "p.py:1"),
    "pipeline: no Pipeline": ({}, "x = 1\n", [], "found 0"),
    "pipeline: two Pipelines": ({}, "from dataflow import Pipeline\na = Pipeline('a')\nb = Pipeline('b')\n", [], "found 2"),
    "pipeline: a name with a slash": ({"in.jsonl": GOOD}, pipeline("src = p.read_jsonl('in.jsonl')", name="a/b"), [],
                                      "pipeline name 'a/b'"),
    "pipeline: a name with spaces": ({"in.jsonl": GOOD}, pipeline("src = p.read_jsonl('in.jsonl')", name="my data"), [],
                                     "pipeline name 'my data'"),
    "pipeline: an empty name": ({"in.jsonl": GOOD}, pipeline("src = p.read_jsonl('in.jsonl')", name=""), [], "pipeline name"),
    "pipeline: no output": ({"in.jsonl": GOOD}, "from dataflow import Pipeline\np = Pipeline('x')\np.read_jsonl('in.jsonl')\n",
                            [], "no output"),
    "pipeline: a cycle": ({}, "from dataflow import Pipeline\nfrom dataflow.operators import Select\np = Pipeline('x')\n"
                              "p.add(Select(('a',)), 'b', name='a')\np.add(Select(('a',)), 'a', name='b')\np.output('o', 'a')\n",
                          [], "cycle"),
    "pipeline: a node name that is SQL": ({"in.jsonl": GOOD}, pipeline("src = p.read_jsonl('in.jsonl', name='select')"), [],
                                          "'select'"),
    "pipeline: a node named like a query view": ({"in.jsonl": GOOD}, pipeline(
        "src = p.read_jsonl('in.jsonl', name='runs')"), [], "node name 'runs' is taken by the query view"),
    "pipeline: a parameter declared twice": ({"in.jsonl": GOOD}, pipeline(
        "n = p.param('n', 3)\nm = p.param('n', 'x')\nsrc = p.read_jsonl('in.jsonl')"), [],
        "parameter 'n' is declared twice"),
    "pipeline: an unknown --set": ({"in.jsonl": GOOD}, read("read_jsonl", "in.jsonl"), ["--set", "nope=1"], "nope"),
    "pipeline: a --set of the wrong type": ({"in.jsonl": GOOD}, pipeline("n = p.param('n', 3)\nsrc = p.read_jsonl('in.jsonl')"),
                                            ["--set", "n=three"], "--set n=three"),
    "pipeline: a --set without a value": ({"in.jsonl": GOOD}, read("read_jsonl", "in.jsonl"), ["--set", "n"], "--set n"),
    # where the build goes
    "out: a file, not a directory": ({"in.jsonl": GOOD, "taken": "x"}, read("read_jsonl", "in.jsonl"), ["--out", "taken"],
                                     "taken"),
    "out: inside a file": ({"in.jsonl": GOOD, "taken": "x"}, read("read_jsonl", "in.jsonl"), ["--out", "taken/out"], "taken"),
    "out: an unknown executor": ({"in.jsonl": GOOD}, read("read_jsonl", "in.jsonl"), ["--executor", "spark"], "spark"),
    # columns and types
    "columns: a filter on a missing column": ({"in.jsonl": GOOD}, pipeline("src = p.read_jsonl('in.jsonl')",
                                              output="src.filter(pl.col('txt') == 'a')"), [], "column 'txt'"),
    "columns: a string compared with a number": ({"in.jsonl": GOOD}, pipeline("src = p.read_jsonl('in.jsonl')",
                                                 output="src.filter(pl.col('text') > 5)"), [],
                                                 "does not compile (1 problem(s)):\n  - node 'filter' (Filter): cannot compare string"),
    "columns: a string function on a number": ({"in.jsonl": '{"n": 1}\n'}, pipeline(
        "src = p.read_jsonl('in.jsonl')", output="src.map(m=pl.col('n').str.len_chars())"), [],
        "does not compile (1 problem(s)):\n  - node 'map' (WithColumns): invalid series dtype"),
    "columns: a join on a missing key": ({"in.jsonl": GOOD}, pipeline("src = p.read_jsonl('in.jsonl')",
                                         output="src.join(src, on='nope')"), [], "nope"),
    "columns: a dedup on a missing column": ({"in.jsonl": GOOD}, pipeline("src = p.read_jsonl('in.jsonl')",
                                             output="src.dedup('nope')"), [], "column 'nope'"),
    "columns: an unknown record schema": ({"in.jsonl": GOOD}, pipeline("src = p.read_jsonl('in.jsonl')",
                                          output="src.validate('alpaca')"), [], "unknown schema"),
    "params: a negative sample": ({"in.jsonl": GOOD}, pipeline("src = p.read_jsonl('in.jsonl')", output="src.sample(-1)"), [],
                                  "node"),
    "params: a negative split seed": ({"in.jsonl": GOOD}, pipeline(
        "src = p.read_jsonl('in.jsonl')\ntrain, evaluation = src.split(eval_fraction=0.5, seed=-1)",
        output="train"), [], "seed must be an int >= 0, not -1"),
    "params: an eval fraction above 1": ({"in.jsonl": GOOD}, pipeline(
        "src = p.read_jsonl('in.jsonl')\ntrain, evaluation = src.split(eval_fraction=1.5)", output="train"), [], "fraction"),
    "params: an unknown model spec": ({"in.jsonl": GOOD}, pipeline(
        "from dataflow.operators import Generate\nsrc = p.read_jsonl('in.jsonl')", output="src.apply(Generate('{text}', model='gpt9'))"),
        [], "gpt9"),
    "functions: a row function that fails": ({"in.jsonl": GOOD}, pipeline(
        "src = p.read_jsonl('in.jsonl')", output="src.map(lambda row: {'n': 1 / 0}, outputs={'n': float})"), [], "row id="),
    "functions: a row function of the wrong type": ({"in.jsonl": GOOD}, pipeline(
        "src = p.read_jsonl('in.jsonl')", output="src.map(lambda row: {'n': 'x'}, outputs={'n': int})"), [], "row id="),
}

REJECTED = {  # name: (files, pipeline source, rows in, rows out) with on_error="reject"
    "a malformed line": ({"in.jsonl": '{"text": "a"}\n{"text": \n{"text": "c"}\n'},
                         read("read_jsonl", "in.jsonl", ", on_error='reject'"), 3, 2),
    "nesting deeper than Arrow reads": ({"in.jsonl": GOOD + '{"text": ' + "[" * 2000 + "]" * 2000 + "}\n"},
                                        read("read_jsonl", "in.jsonl", ", on_error='reject'"), 3, 2),
    "an integer past 64 bits": ({"in.jsonl": '{"n": 1}\n{"n": 123456789012345678901234567890}\n'},
                                read("read_jsonl", "in.jsonl", ", on_error='reject'"), 2, 1),
    "a lone surrogate": ({"in.jsonl": GOOD + '{"text": "\\ud800"}\n'}, read("read_jsonl", "in.jsonl", ", on_error='reject'"), 3, 2),
    "a row function of the wrong type": ({"in.jsonl": GOOD + '{"text": "bad"}\n'}, pipeline(
        "src = p.read_jsonl('in.jsonl')",
        output="src.map(lambda row: {'n': 'x' if row['text'] == 'bad' else 1}, outputs={'n': int}, on_error='reject')"), 3, 2),
}

READ = {  # inputs that are fine once read right: name -> (files, pipeline source, rows, column values)
    "a gzip-compressed file": ({"in.jsonl.gz": gzip.compress(GOOD.encode())}, read("read_jsonl", "in.jsonl.gz"), ["a", "b"]),
    "a byte-order mark": ({"in.jsonl": "\ufeff" + GOOD}, read("read_jsonl", "in.jsonl"), ["a", "b"]),
    "a byte-order mark in a gzip file": ({"in.jsonl.gz": gzip.compress(("\ufeff" + GOOD).encode())},
                                         read("read_jsonl", "in.jsonl.gz"), ["a", "b"]),
    "repeated keys, the last one wins": ({"in.jsonl": '{"text": "x", "text": "a"}\n{"text": "b"}\n'},
                                          read("read_jsonl", "in.jsonl"), ["a", "b"]),
    "CRLF line ends": ({"in.jsonl": GOOD.replace("\n", "\r\n")}, read("read_jsonl", "in.jsonl"), ["a", "b"]),
}


def error_of(err: str) -> str:
    """The error paragraph: what stderr holds after the progress lines."""
    assert "Traceback" not in err, err
    assert err.startswith("error: ") or "\nerror: " in err, err
    return err if err.startswith("error: ") else err[err.rindex("\nerror: ") + 1:]


def build(tmp_path, files: dict, source: str, args: list[str], capsys) -> tuple[int, str]:
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    (tmp_path / "p.py").write_text(source)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = main(["build", "p.py", *args] if "--out" in args else ["build", "p.py", "--out", "out", *args])
    finally:
        os.chdir(cwd)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", CASES)
def test_a_user_error_is_one_paragraph_naming_the_place(tmp_path, capsys, name):
    files, source, args, where = CASES[name]
    code, err = build(tmp_path, files, source, args, capsys)
    assert code == 1, err
    assert where in error_of(err), err


@pytest.mark.parametrize("name", REJECTED)
def test_rejected_rows_add_up(tmp_path, capsys, name):
    files, source, rows_in, rows_out = REJECTED[name]
    code, err = build(tmp_path, files, source, [], capsys)
    assert code == 0, err
    out = pl.read_parquet(tmp_path / "out" / "o" / "data.parquet")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    rejected = sum(node["rejected"] for node in manifest["nodes"].values())
    assert (out.height, rejected) == (rows_out, rows_in - rows_out)


@pytest.mark.parametrize("name", READ)
def test_inputs_that_read_right(tmp_path, capsys, name):
    files, source, texts = READ[name]
    code, err = build(tmp_path, files, source, [], capsys)
    assert code == 0, err
    assert pl.read_parquet(tmp_path / "out" / "o" / "data.parquet")["text"].to_list() == texts


def test_show_refuses_a_negative_limit(tmp_path, capsys):
    code, err = build(tmp_path, {"in.jsonl": GOOD}, read("read_jsonl", "in.jsonl"), [], capsys)
    assert code == 0
    assert main(["show", "o", "--out", str(tmp_path / "out"), "--limit", "-1"]) == 1
    assert error_of(capsys.readouterr().err).startswith("error: --limit")


def test_a_read_only_out_directory(tmp_path, capsys):
    if os.getuid() == 0:
        pytest.skip("root writes into read-only directories")
    (tmp_path / "ro").mkdir(mode=0o555)
    code, err = build(tmp_path, {"in.jsonl": GOOD}, read("read_jsonl", "in.jsonl"), ["--out", "ro/out"], capsys)
    assert code == 1 and "ro/out" in error_of(err)


def test_a_full_disk_is_named(tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    if os.getuid() != 0 or os.system(f"mount -t tmpfs -o size=64k tmpfs {full} 2>/dev/null"):
        pytest.skip("needs root to mount a tiny filesystem")
    try:
        rows = "".join(json.dumps({"text": os.urandom(500).hex(), "n": i}) + "\n" for i in range(2000))
        code, err = build(tmp_path, {"in.jsonl": rows}, read("read_jsonl", "in.jsonl"), ["--out", "full/out"], capsys)
        assert code == 1 and "No space left" in error_of(err), err
    finally:
        os.system(f"umount {full}")


def test_the_catalogue_is_large():
    assert len(CASES) + len(REJECTED) + len(READ) + 3 >= 60
