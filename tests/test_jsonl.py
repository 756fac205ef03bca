"""JSONL read in chunks gives the same table as reading every record at once, and leaves no scratch."""

from __future__ import annotations

import gzip
import io
import json
import random

import orjson
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


GOOD = [b'{"a": "x%d", "b": %d}', b'{"a": "y%d", "b": %d.5, "big": 9223372036854775807}', b'{"b": %d, "a": "%d"}',
        b'{"a": "1234567890123456789%d", "c": [%d]}', b'{"a":"z%d","b":-%d,"big":-9223372036854775808}']
FLAT = [GOOD[0], GOOD[2], GOOD[4]]  # only scalar fields
NESTED = [b'{"a": "n%d", "d": {"x": %d}}', b'{"a": "m%d", "d": {"x": %d, "x": 7}}']
BAD = [b'{"a": ', b'[1, 2]', b'"text"', b'1,2', b'{"a": "x"} {"a": "y"}', b'{"a": "\xff"}', b'{"a": "x", "b": NaN}',
       b'{"a": "x", "b": Infinity}', b'{"a": "x", "big": 12345678901234567890}', b'{"a": "\\ud800"}',
       b'{"a": "x", "a": "y", "b": 1}', b'{"a" : "p", "a"\t:"q"}', b'{"a":"r","e":"\\u003a","a":"s"}',
       b'{"a": 5}', b'{"a": true}', b'', b'   ', b'\t']


def reference(data: bytes, where: str, node: str, on_error: str):
    """The module's rules applied line by line, simply: (frame, rejects), or the error's message."""
    data = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).removeprefix(b"\xef\xbb\xbf")
    good, rejects = [], []
    for number, raw in enumerate(io.BytesIO(data), 1):
        if not raw.strip():
            continue
        problem = None
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            problem = ("invalid_utf8", f"invalid UTF-8 at byte {exc.start} of the line")
        except json.JSONDecodeError as exc:
            problem = ("malformed_json", f"{exc.msg.removesuffix(' at')} at column {exc.colno}")
        if problem is None and not isinstance(value, dict):
            problem = ("not_an_object", f"expected a JSON object, got {jsonl.json_kind(value)}")
        if problem is None:
            too_long = [k for k, v in value.items() if type(v) is int and not -2**63 <= v < 2**63]
            if too_long:
                problem = ("integer_too_large", f"field '{too_long[0]}' holds an integer past 64 bits; "
                           f"write it as a string (or a float) in the file")
            try:
                orjson.dumps(value)
            except TypeError as exc:
                problem = problem or ("invalid_unicode", f"a string that is not valid Unicode ({exc})")
        if problem is None:
            good.append((number, value))
        elif on_error == "raise":
            return f"{where} line {number}: {problem[1]} ({problem[0]}); {jsonl.BAD_LINE_HINT}"
        else:
            rejects.append({"id": f"{node}-{number}", "reason": problem[0], "detail": problem[1]})
    kinds = [jsonl.json_kind(v["a"]) for _, v in good if v.get("a") is not None]  # only field 'a' mixes kinds
    usual = max(set(kinds), key=kinds.count) if len(set(kinds)) > 1 else None
    odd = [(n, jsonl.json_kind(v["a"])) for n, v in good if usual and v.get("a") is not None
           and jsonl.json_kind(v["a"]) != usual]
    for number, kind in odd:
        detail = f"field 'a' is a {kind} here but a {usual} in most lines"
        if on_error == "raise":
            return f"{where} line {number}: {detail}; {jsonl.BAD_LINE_HINT}"
        rejects.append({"id": f"{node}-{number}", "reason": "type_mismatch", "detail": detail})
    kept = [(n, v) for n, v in good if n not in dict(odd)]
    frame = pl.DataFrame([v for _, v in kept], infer_schema_length=None)
    return frame.with_columns(pl.Series(jsonl.NUMBER, [n for n, _ in kept], dtype=pl.Int64)), rejects


@pytest.mark.parametrize("seed", range(40))
def test_reader_matches_the_rules_read_line_by_line(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    monkeypatch.setattr(jsonl, "CHUNK_BYTES", rng.choice([64, 200, 1000, 1 << 20]))
    monkeypatch.setattr(jsonl, "PARALLEL_BYTES", 0)  # surveyed in parts, a forked process each, or in one
    monkeypatch.setattr(jsonl, "survey_processes", lambda: rng.choice([1, 2, 3, 7]))
    shapes = (GOOD if seed % 3 else FLAT) + (NESTED if seed % 2 else [])  # FLAT alone: polars may read the file
    bad_share = rng.choice([0.0, 0.05, 0.3])
    bad = rng.choice([BAD, BAD[-5:-3], BAD[-3:]])  # every kind of bad line, only kind mismatches, only blank lines
    lines = [rng.choice(bad) if rng.random() < bad_share else rng.choice(shapes) % (i, i) for i in range(300)]
    data = b"\n".join(lines) + (b"\n" if seed % 3 else b"")
    data = (b"\xef\xbb\xbf" if seed % 5 == 1 else b"") + data
    path = tmp_path / "rows.jsonl"
    path.write_bytes(gzip.compress(data) if seed % 4 == 3 else data)
    for on_error in ("raise", "reject"):
        expected = reference(path.read_bytes(), "f", "s", on_error)
        try:
            frame, rejects = jsonl.read_jsonl(path, "f", on_error, "s", tmp_path)
            frame = frame.collect()
        except DataflowError as exc:
            assert str(exc) == expected
            continue
        assert not isinstance(expected, str), f"expected the error {expected}"
        assert rejects == expected[1]
        assert sorted(frame.columns) == sorted(expected[0].columns)  # in an order the rules leave open
        assert frame.select(expected[0].columns).equals(expected[0])


@pytest.mark.parametrize("block", [b'{"a": 1}\n\n{"a": 2}\n  \r\n{"a": 3}\n', b'\n{"a": 1}\n{"a": 2}\n\t\n{"a": 3}'])
def test_blank_lines_do_not_send_a_block_line_by_line(block):
    survey = jsonl.Survey()
    assert jsonl._survey_block(survey, 10, block)  # what the line-by-line survey would find, at once
    expected = jsonl.Survey()
    jsonl._survey_lines(expected, enumerate(io.BytesIO(block), 10), "f", "raise")
    assert survey.blank == expected.blank and survey.kinds.shapes == expected.kinds.shapes


def test_a_repeated_key_with_space_before_its_colon_is_read_as_json_parsers_do(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a" : "first", "a" :"last"}\n' * 3)
    frame, rejects = jsonl.read_jsonl(path, "f", "raise", "s", tmp_path)
    assert frame.collect()["a"].to_list() == ["last"] * 3 and rejects == []


def test_parts_of_a_file_hold_whole_lines_numbered_as_in_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "PARALLEL_BYTES", 0)
    path = tmp_path / "rows.jsonl"
    lines = [b'{"a": "%s"}' % (b"x" * (i % 37)) for i in range(500)]
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines))  # a byte-order mark, no newline at the end
    for parts in (2, 3, 8):
        ranges = jsonl.line_ranges(path, parts)
        assert len(ranges) == parts
        read = [(n, line) for part in ranges for first, block in jsonl._blocks(path, part)
                for n, line in enumerate(block.split(b"\n"), first) if line]
        assert read == list(enumerate(lines, 1))


@pytest.mark.parametrize("seed", range(8))
def test_a_plain_file_is_read_by_polars_as_the_two_passes_would(tmp_path, seed):
    rng = random.Random(seed)
    shapes = FLAT + [b'{"b": %d, "a": "\\u00e9\\n%d", "c": null}', b'{"a": "q%d", "b": %d.25, "d": true}\r']
    lines = [rng.choice(shapes) % (i, i) for i in range(rng.randint(1, 400))]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(lines) + rng.choice([b"", b"\n"]))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    frame, rejects = jsonl.read_jsonl(path, "f", "raise", "s", scratch)
    expected, _ = reference(path.read_bytes(), "f", "s", "raise")
    assert rejects == [] and not list(scratch.iterdir())  # no part written: polars read the file itself
    frame = frame.collect()
    assert sorted(frame.columns) == sorted(expected.columns) and frame.select(expected.columns).equals(expected)


@pytest.mark.parametrize("damage", ["cut short", "bad checksum"])
def test_a_damaged_gzip_file_is_an_error_naming_it(builder, tmp_path, damage):
    data = gzip.compress(b"".join(b'{"n": %d, "text": "line %d"}\n' % (i, i * 7919) for i in range(20_000)))
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(data[:len(data) * 9 // 10] if damage == "cut short" else data[:-8] + bytes(8))
    with pytest.raises(DataflowError, match=f"{path}: the gzip data is damaged or cut short"):
        build(builder, path, on_error="reject")


def test_rows_with_an_integer_past_64_bits_are_named_or_rejected(builder):
    p = Pipeline("big")
    p.output("out", p.from_rows([{"a": 1}, {"a": 2**70}], name="rows"))
    with pytest.raises(DataflowError, match="from_rows row 2: field 'a' holds an integer past 64 bits"):
        builder.build(p)
    records = [(1, {"a": 1, "b": [0]}), (2, {"a": 2, "b": [2**70]})]
    frame, rejects = jsonl.records_to_frame(records, "rows.json", "record", "reject", "rows")
    assert frame["a"].to_list() == [1] and [r["reason"] for r in rejects] == ["integer_too_large"]
    assert "field 'b' holds an integer past 64 bits" in rejects[0]["detail"]


def test_a_field_first_seen_late_or_null_at_first_is_in_the_compile_time_schema(builder, tmp_path):
    path = tmp_path / "late.jsonl"
    rows = [{"text": f"row {i}", "score": None if i <= 1200 else i / 10} | ({"system": "be brief"} if i > 1200 else {})
            for i in range(1, 1501)]
    path.write_text("{bad\n" * 1100 + "".join(json.dumps(r) + "\n" for r in rows))  # bad lines first, rejected
    p = Pipeline("late")
    src = p.read_jsonl(path, name="s", on_error="reject")
    p.output("o", src.filter(pl.col("score") > 125).select("id", "system", "score", name="sel"))
    assert dict(p.compile().nodes["s"].schema) == {"id": pl.String, "text": pl.String, "score": pl.Float64,
                                                   "system": pl.String}
    builder.build(p)
    assert builder.output("o").rows()[0] == ("s-2351", "be brief", 125.1)
    assert builder.rejects("s").height == 1100


def random_value(rng: random.Random, kind: str):
    return {"s": lambda: rng.choice(["a", "bb", "c c"]), "i": lambda: rng.randint(-5, 10**6), "f": rng.random,
            "b": lambda: rng.random() < 0.5, "l": lambda: [rng.randint(0, 9) for _ in range(rng.randint(0, 3))],
            "d": lambda: {"x": rng.randint(0, 3)} | ({"y": "z"} if rng.random() < 0.5 else {}),
            "n": lambda: None}[kind]()


@pytest.mark.parametrize("seed", range(30))
def test_the_compile_time_schema_is_the_schema_the_build_reads(tmp_path, monkeypatch, seed):
    """Fields of every kind, each from a random line on, null or of another kind now and then, among bad and blank
    lines: the schema a pipeline compiles against has the columns of the build's frame, the same scalar types
    and the same kinds of nested type (a struct's fields and a list's items come from a sample of lines)."""
    monkeypatch.setenv("DATAFLOW_CACHE_DIR", str(tmp_path / "cache"))  # nothing remembered from other runs
    rng = random.Random(seed)
    monkeypatch.setattr(jsonl, "SCHEMA_SAMPLE_LINES", rng.choice([5, 20, 1000]))
    monkeypatch.setattr(jsonl, "CHUNK_BYTES", rng.choice([200, 1 << 20]))
    n = rng.choice([5, 50, 400])
    fields = {f"k{j}": (rng.choice("sifbld"), rng.choice([1, 2, n // 2, n - 1]), rng.random()) for j in range(5)}
    lines = []
    for _ in range(n):
        record = {key: random_value(rng, kind if rng.random() > 0.2 else rng.choice("nsf"))
                  for key, (kind, start, share) in fields.items() if len(lines) + 1 >= start and rng.random() < share}
        lines.append(rng.choice(["{bad", "", "[1]"]) if rng.random() < 0.03 else json.dumps(record))
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    try:
        schema = jsonl.file_schema(path, "f", "reject")
    except DataflowError as exc:
        assert "no valid JSON object" in str(exc) or "is empty" in str(exc)
        return
    jsonl._KEPT.surveys.clear()
    frame, _ = jsonl.read_jsonl(path, "f", "reject", "s", tmp_path)
    built = frame.collect().drop(jsonl.NUMBER).schema
    assert sorted(schema) == sorted(built)
    for column, dtype in built.items():
        if isinstance(dtype, pl.Struct):
            assert {f.name for f in schema[column].fields} <= {f.name for f in dtype.fields}
        else:
            assert isinstance(schema[column], pl.List) if isinstance(dtype, pl.List) else schema[column] == dtype


def test_a_large_files_first_pass_at_compile_time_is_announced_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATAFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(jsonl, "ANNOUNCED_BYTES", 10)
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n')
    assert jsonl.file_schema(path, "src", "reject") == pl.Schema({"a": pl.Int64})
    assert capsys.readouterr().err == ("[compile] src: reading the whole file (0.0 GiB) once for its schema; the "
                                       "build reuses this pass\n")
    assert jsonl.file_schema(path, "src", "reject") == pl.Schema({"a": pl.Int64})  # remembered: no pass
    assert capsys.readouterr().err == ""


def test_a_value_of_another_kind_inside_a_nested_field_is_named_or_rejected(builder, tmp_path):
    chats = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}],
              "meta": {"n": i, "score": i / 2 if i % 2 else i}} for i in range(20)]
    chats[7]["messages"][0]["content"] = [{"type": "text", "text": "content parts"}]  # polars made this a JSON string
    chats[9]["meta"]["n"] = "nine"  # and this "9"-like text, the other n's too
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in chats))
    with pytest.raises(DataflowError, match=r"line 8: field 'messages\[\].content' is a list here but a string in "
                                            r"most lines"):
        build(builder, path)
    out = build(builder, path, on_error="reject")
    assert out["id"].to_list() == [f"s-{i}" for i in range(1, 21) if i not in (8, 10)]
    assert out.schema["meta"] == pl.Struct({"n": pl.Int64, "score": pl.Float64})  # int and float: both numbers
    assert builder.rejects("s").select("id", "detail").rows() == [
        ("s-10", "field 'meta.n' is a string here but a number in most lines"),
        ("s-8", "field 'messages[].content' is a list here but a string in most lines")]
    p = Pipeline("rows")
    p.output("o", p.from_rows(chats, name="r"))
    with pytest.raises(DataflowError, match="row 8: field 'messages"):
        p.compile()


def without_nulls(value):
    """A value with null object fields left out and numbers as floats: what a kept line must read back as."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


@pytest.mark.parametrize("seed", range(12))
def test_nested_values_read_back_unchanged_or_their_line_is_rejected(tmp_path, monkeypatch, seed):
    """Random nested records with now and then a value of another kind somewhere inside: every kept line reads
    back as written, and a line is rejected exactly when one of its values has another kind than most lines
    hold at that place (a brute-force count over every line's paths)."""
    rng = random.Random(seed)
    monkeypatch.setattr(jsonl, "CHUNK_BYTES", rng.choice([300, 1 << 20]))
    monkeypatch.setattr(jsonl, "PARALLEL_BYTES", 0)  # surveyed in parts, a forked process each, or in one
    monkeypatch.setattr(jsonl, "survey_processes", lambda: rng.choice([1, 3]))
    odd = {"s": lambda: rng.randint(0, 9), "i": lambda: "text", "l": lambda: {"x": 1}, "d": lambda: ["x"]}

    def value(kind, depth):
        if rng.random() < 0.02:
            return odd[kind]()
        if kind == "l":
            return [value("s" if depth else "d", depth + 1) for _ in range(rng.randint(0, 3))]
        if kind == "d":
            return {key: value(rng.choice("si") if depth else "l", depth + 1) for key in rng.sample("abc", 2)}
        return rng.choice(["p", "q r"]) if kind == "s" else rng.randint(0, 99)

    records = [{"text": f"t{i}", "tree": value("d", 0)} for i in range(200)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    kinds = {str: "string", int: "number", list: "list", dict: "object"}

    def places(value, place):  # every (place, kind) in a value, itself included; None stands for any list item
        inner = value.items() if isinstance(value, dict) else [(None, v) for v in value] if isinstance(value, list) \
            else []
        return {(place, kinds[type(value)])} | {pair for key, v in inner for pair in places(v, (*place, key))}

    held = [places(record["tree"], ("tree",)) for record in records]
    lines = {}
    for found in held:
        for place, kind in found:
            lines.setdefault(place, {}).setdefault(kind, 0)
            lines[place][kind] += 1
    if any(len(set(counts.values())) < len(counts) for counts in lines.values() if len(counts) > 1):
        pytest.skip("two kinds tie at a place: which one is usual is left open")
    usual = {place: max(counts, key=counts.get) for place, counts in lines.items()}
    expected_kept = [i for i, found in enumerate(held) if all(usual[place] == kind for place, kind in found)]
    frame, rejects = jsonl.read_jsonl(path, "f", "reject", "s", tmp_path)
    frame = frame.collect().sort(jsonl.NUMBER)
    assert frame[jsonl.NUMBER].to_list() == [i + 1 for i in expected_kept]
    assert len(rejects) == len(records) - len(expected_kept)
    for row, i in zip(frame.drop(jsonl.NUMBER).to_dicts(), expected_kept):
        assert without_nulls(row) == without_nulls(records[i])
