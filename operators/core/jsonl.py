"""JSON records checked exactly, and JSON Lines files read fast in bounded memory.

Reading a JSONL file takes two passes over it. The first decodes every line with orjson and
notes the JSON kind (string, number, ...) of each field: a line that is not UTF-8, not JSON or
not an object, or whose field has a different kind than in most lines, is named in an error or
rejected. It takes a block of about CHUNK_BYTES at a time, checking all its lines in a few steps
at C speed (one orjson call per line, whole-block searches, field kinds counted column by
column); a block where a line fails a step is looked at again line by line. A large uncompressed file
is surveyed in parts, one forked process per core, and the parts' findings merged in order.

The second pass reads the good lines with polars, which is fast but would silently turn a number
into a string where other lines hold strings: the first pass has ruled such lines out. A file
where every line is a good object whose fields each hold one scalar kind is scanned by polars as
it is, with the schema the first pass found (polars maps the file, so its pages count in the
process's resident memory as file pages the kernel can drop). Any other file is handed to polars
a block at a time (a block without bad lines as it is), only the block being read in memory, and
the blocks are written to uncompressed Parquet parts in the node's scratch directory (one part
per run of blocks with the same schema) and scanned.

The first pass also rules out what polars would read differently or not at all: an integer past
64 bits, a lone surrogate escape (both bad lines), and repeated keys in an object (such a line is
read by Python's json, so the last value wins in both passes, as in every JSON parser here). A
gzip-compressed file is read as it is; a byte-order mark at the start is left out.

The schema a pipeline compiles against comes from the first pass over the whole file (so a field first
seen late, or null in the first lines, is there), nested types from the lines polars reads for them;
it is remembered under the file's content hash, and the build reuses the pass made for it.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import multiprocessing
import re
import sys
import zlib
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from dataflow.errors import DataflowError, json_error
from dataflow.filehash import file_digest, remember_fact, remembered_fact

BAD_LINE_HINT = "fix the line, or read with on_error='reject' to send bad lines to rejects and go on"
CHUNK_BYTES = 4 << 20  # JSON text handed to polars at once (its nested-type inference takes ~20x that)
PARALLEL_BYTES = 32 << 20  # a plain file at least this large is surveyed in parts, a process each
MOST_PROCESSES = 8
ANNOUNCED_BYTES = 512 << 20  # a compile-time first pass over a file this large says so before it starts
NUMBER = "__n"  # the line (or record) number column, until ids are made from it
KINDS = {str: "string", int: "number", float: "number", bool: "bool", list: "list", dict: "object", type(None): "null"}
SCALARS = {str: pl.String, int: pl.Int64, float: pl.Float64, bool: pl.Boolean}
LONG_DIGITS = re.compile(rb"\d{19}")  # an integer this long may not fit 64 bits
DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")  # finds LONG_DIGITS in a whole block at once
LONG_ZEROS = b"0" * 19
BLANK_INSIDE = re.compile(rb"\n[ \t\r]*\n")  # a blank line after the first (a literal first: fast to search)
INT64 = range(-(1 << 63), 1 << 63)
SCHEMA_SAMPLE_LINES = 1000  # good lines polars reads for the nested types of the compile-time schema
SCHEMA_FACT = "jsonl-schema-2"  # the name a file's schema is remembered under (a new way to find it: a new name)
COMPRESSED = {b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstandard", b"PK\x03\x04": "zip"}


class _Gzip(gzip.GzipFile):
    """A gzip file whose damage (cut short, a bad checksum) is an error naming the file."""

    def read(self, size: int = -1) -> bytes:
        with _gzip_damage(self.name):
            return super().read(size)

    def readline(self, size: int = -1) -> bytes:
        with _gzip_damage(self.name):
            return super().readline(size)


@contextmanager
def _gzip_damage(name: str) -> Iterator[None]:
    try:
        yield
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataflowError(f"{name}: the gzip data is damaged or cut short ({exc}); download or compress the "
                            f"file again") from None


def open_lines(path: Path):
    """A file's bytes: gzip-compressed files decompressed, a UTF-8 byte-order mark left out."""
    with open(path, "rb") as fh:
        start = fh.read(4)
    fh = _Gzip(path, "rb") if start[:2] == b"\x1f\x8b" else open(path, "rb")
    fh.seek(3 if fh.read(3) == b"\xef\xbb\xbf" else 0)
    return fh


def compression_problem(path: Path) -> str | None:
    """Why a file cannot be read as JSON Lines because of how it is compressed (gzip is read)."""
    with open(path, "rb") as fh:
        start = fh.read(6)
    kind = next((name for magic, name in COMPRESSED.items() if start.startswith(magic)), None)
    return f"{path} is {kind}-compressed: decompress it first, or compress it with gzip" if kind else None


def json_kind(value: Any) -> str:
    return json_kind_of(type(value))


def json_kind_of(kind: type) -> str:
    return KINDS.get(kind) or kind.__name__


class KindSurvey:
    """How many records hold each JSON kind in each field, and the first record of each. Records
    are counted by shape (their keys and value types), which most records of a file share. Inside
    nested values (lists and objects) each path (``messages[].content``) is counted the same way,
    a record counted once per kind it holds there."""

    def __init__(self) -> None:
        self.shapes: dict[tuple, list[int]] = {}  # (keys, types) -> [records, first record]
        self.paths: dict[tuple, list[int]] = {}  # (path, kind) -> [records, first record]

    def add(self, numbers: Sequence[int], records: Sequence[dict]) -> None:
        """Count records (numbered in the same order) by shape, and the kinds inside their nested values."""
        shape = _one_shape(records)
        if shape:
            counts, firsts = {shape: len(records)}, {shape: numbers[0]}
            nested = [key for key, kind in zip(*shape) if kind is dict or kind is list]
            if nested:
                self._count_paths(numbers, ([(key, record[key]) for key in nested] for record in records))
        else:
            shapes = [(tuple(record), tuple(map(type, record.values()))) for record in records]
            counts, firsts = Counter(shapes), dict(zip(reversed(shapes), reversed(numbers)))  # earliest wins
            self._count_paths(numbers, ([(k, v) for k, v in record.items() if type(v) is dict or type(v) is list]
                                        for record in records))
        _count(self.shapes, counts, firsts)

    def _count_paths(self, numbers: Sequence[int], nested: Iterable[list[tuple[str, Any]]]) -> None:
        sets: dict[frozenset, list[int]] = {}  # the (path, kind) pairs of a record -> [records, first record]
        for number, fields in zip(numbers, nested):
            found: set[tuple] = set()
            for key, value in fields:
                _walk(value, (key,), found)
            if found:
                seen = sets.get(held := frozenset(found))
                if seen:
                    seen[0] += 1
                else:
                    sets[held] = [1, number]
        counts: Counter = Counter()
        firsts: dict[tuple, int] = {}
        for held, (records, first) in sets.items():
            for pair in held:
                counts[pair] += records
                firsts[pair] = min(firsts.get(pair, first), first)
        _count(self.paths, counts, firsts)

    def merge(self, later: KindSurvey) -> None:
        """Add the counts of a survey of later records."""
        for mine, theirs in ((self.shapes, later.shapes), (self.paths, later.paths)):
            _count(mine, {key: n for key, (n, _) in theirs.items()}, {key: first for key, (_, first) in theirs.items()})

    def usual_kinds(self, where: str, unit: str, on_error: str) -> dict[str | tuple, str]:
        """The kind most records hold, for each field (a name) or path inside nested values (a tuple)
        that holds more than one; with ``on_error='raise'``, an error naming the first record holding
        another kind."""
        counts: dict[str | tuple, dict[str, int]] = {}
        first: dict[tuple[str | tuple, str], int] = {}
        held = [((key, json_kind_of(kind)), records, number) for (keys, types), (records, number) in self.shapes.items()
                for key, kind in zip(keys, types) if kind is not type(None)]
        for (place, name), records, number in held + [(pair, n, f) for pair, (n, f) in self.paths.items()]:
            by_kind = counts.setdefault(place, {})
            by_kind[name] = by_kind.get(name, 0) + records
            first[place, name] = min(first.get((place, name), number), number)
        usual = {key: max(by_kind, key=by_kind.__getitem__) for key, by_kind in counts.items() if len(by_kind) > 1}
        if usual and on_error == "raise":
            number, _, key, kind = min((first[key, k], str(key), key, k) for key in usual for k in counts[key]
                                       if k != usual[key])
            hint = BAD_LINE_HINT if unit == "line" else f"fix the {unit}"
            raise DataflowError(f"{where} {unit} {number}: {_kind_message(key, kind, usual[key], unit)}; {hint}")
        return usual

    def scalar_schema(self) -> pl.Schema | None:
        """The table's schema when every field holds strings, numbers or booleans (polars reads
        faster with it than inferring), in the order fields first appear; None otherwise."""
        types: dict[str, set[type]] = {}
        for keys, kinds in self.shapes:
            for key, kind in zip(keys, kinds):
                types.setdefault(key, set()).add(kind)
        schema = {key: scalar_type(found - {type(None)}) for key, found in types.items()}
        return None if None in schema.values() else pl.Schema(schema)


def scalar_type(kinds: set[type]) -> pl.DataType | None:
    """The polars type of a field holding values of these Python types (no None): Float64 for ints and floats,
    Null for none; None where they mix other kinds or are nested."""
    if kinds == {int, float}:
        return pl.Float64
    if len(kinds) > 1 or not kinds <= set(SCALARS):
        return None
    return SCALARS[next(iter(kinds))] if kinds else pl.Null


def _one_shape(records: Sequence[dict]) -> tuple | None:
    """The shape all records share, found field by field at C speed; None if they do not share one."""
    keys = list(map(tuple, records))
    if not keys or keys.count(keys[0]) < len(keys):
        return None
    types = [list(map(type, map(itemgetter(key), records))) for key in keys[0]]
    if any(column.count(column[0]) < len(column) for column in types):
        return None
    return keys[0], tuple(column[0] for column in types)


def _count(table: dict[tuple, list[int]], counts: dict[tuple, int], firsts: dict[tuple, int]) -> None:
    for key, count in counts.items():
        seen = table.get(key)
        if seen:
            seen[0] += count
        else:
            table[key] = [count, firsts[key]]


def _walk(value: Any, path: tuple, found: set[tuple]) -> None:
    """Add the (path, kind) of every value inside a list or object (``None`` in a path: any list item)."""
    items = value.items() if type(value) is dict else zip(repeat(None), value)
    for key, item in items:
        if item is not None:
            inner = (*path, key)
            found.add((inner, json_kind(item)))
            if type(item) is dict or type(item) is list:
                _walk(item, inner, found)


def mismatch(record: dict, usual: dict[str | tuple, str], unit: str) -> str | None:
    """Why ``record`` holds a field, or a value inside one, in another kind than most records (None if it
    does not)."""
    nested: set[str] = set()
    for key, expected in usual.items():
        if isinstance(key, tuple):
            nested.add(key[0])
            continue
        value = record.get(key)
        if value is not None and json_kind(value) != expected:
            return _kind_message(key, json_kind(value), expected, unit)
    for root in sorted(nested):
        value, found = record.get(root), set()
        if type(value) is dict or type(value) is list:
            _walk(value, (root,), found)
        for path, kind in sorted(found, key=str):
            if usual.get(path, kind) != kind:
                return _kind_message(path, kind, usual[path], unit)
    return None


def _kind_message(key: str | tuple, found: str, expected: str, unit: str) -> str:
    name = key if isinstance(key, str) else key[0] + "".join("[]" if k is None else f".{k}" for k in key[1:])
    return f"field '{name}' is a {found} here but a {expected} in most {unit}s"


def records_to_frame(records: list[tuple[int, dict]], where: str, unit: str, on_error: str,
                     node: str) -> tuple[pl.DataFrame, list[dict]]:
    """Build a frame from (number, record) pairs, and rejects for records of a mismatched kind."""
    survey = KindSurvey()
    survey.add([n for n, _ in records], [r for _, r in records])
    usual = survey.usual_kinds(where, unit, on_error)
    bad = {n: ("type_mismatch", why) for n, r in records if usual and (why := mismatch(r, usual, unit))}
    for n, r in records:
        if n not in bad and (key := _long_integer(r)) is not None:
            why = f"field '{key}' holds an integer past 64 bits; give it as a string (or a float)"
            if on_error == "raise":
                raise DataflowError(f"{where} {unit} {n}: {why}")
            bad[n] = ("integer_too_large", why)
    kept = [(n, r) for n, r in records if n not in bad]
    rejects = [{"id": f"{node}-{n}", "reason": reason, "detail": m} for n, (reason, m) in bad.items()]
    try:
        frame = pl.DataFrame([r for _, r in kept], infer_schema_length=None)
    except Exception as exc:
        raise DataflowError(f"{where}: the {unit}s do not form a table: {exc}") from exc
    numbers = pl.Series(NUMBER, [n for n, _ in kept], dtype=pl.Int64)
    return frame.with_columns(numbers) if frame.width else pl.DataFrame({NUMBER: numbers}), rejects


@dataclass
class Survey:
    """What pass 1 found: the lines to leave out, why the bad ones are bad, the field kinds."""

    problems: dict[int, tuple[str, str]] = field(default_factory=dict)  # line -> (reason, detail)
    blank: list[int] = field(default_factory=list)
    lenient: set[int] = field(default_factory=set)  # objects only Python's json reads (NaN, Infinity)
    kinds: KindSurvey = field(default_factory=KindSurvey)
    stop: int | None = None  # the last line looked at, when a limit cut the survey short

    @property
    def skip(self) -> set[int]:
        return set(self.problems) | set(self.blank)

    def merge(self, later: Survey) -> None:
        """Add what the survey of the lines after this one's found."""
        self.problems.update(later.problems)
        self.blank += later.blank
        self.lenient |= later.lenient
        self.kinds.merge(later.kinds)


def survey_jsonl(path: Path, where: str, on_error: str, limit: int | None = None) -> Survey:
    """Pass 1 over the file, or over its first ``limit`` non-blank lines. A large uncompressed file is
    surveyed in parts, each in a forked process but the first, and the surveys merged in order (a
    bad line in an earlier part is raised first)."""
    if limit is not None:
        survey = Survey()
        with open_lines(path) as fh:
            _survey_lines(survey, enumerate(fh, 1), where, on_error, limit)
        return survey
    parts = line_ranges(path, survey_processes())
    if len(parts) == 1:
        return _survey_part(path, parts[0], where, on_error)
    with ProcessPoolExecutor(len(parts) - 1, mp_context=multiprocessing.get_context("fork")) as pool:
        later = [pool.submit(_survey_part, path, part, where, on_error) for part in parts[1:]]
        survey = _survey_part(path, parts[0], where, on_error)
        for part in later:
            survey.merge(part.result())
    return survey


def survey_processes() -> int:
    """Processes for a survey: as many as polars has threads (forked, so on Linux only)."""
    return min(pl.thread_pool_size(), MOST_PROCESSES) if sys.platform == "linux" else 1


def line_ranges(path: Path, parts: int) -> list[tuple[int, int | None, int]]:
    """(first byte, end byte, number of the first line) of up to ``parts`` runs of whole lines that
    make up the file: one run to the end for a gzip file or one below PARALLEL_BYTES."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if parts < 2 or size < PARALLEL_BYTES or fh.read(2) == b"\x1f\x8b":
            return [(0, None, 1)]
        cuts = [0]
        for k in range(1, parts):
            fh.seek(max(size * k // parts, cuts[-1]))
            fh.readline()  # the rest of the line the cut falls in
            if fh.tell() >= size:
                break
            if fh.tell() > cuts[-1]:
                cuts.append(fh.tell())
        fh.seek(0)
        numbers = [1]
        for start, end in zip(cuts, cuts[1:]):
            numbers.append(numbers[-1] + sum(block.count(b"\n") for block in _read(fh, end - start)))
    return list(zip(cuts, [*cuts[1:], None], numbers))


def _read(fh, size: int | None) -> Iterator[bytes]:
    """The next ``size`` bytes of ``fh`` (all that is left: None) in pieces of up to CHUNK_BYTES."""
    while (size is None or size > 0) and (data := fh.read(min(CHUNK_BYTES, size or CHUNK_BYTES))):
        size = None if size is None else size - len(data)
        yield data


def _survey_part(path: Path, part: tuple[int, int | None, int], where: str, on_error: str) -> Survey:
    survey = Survey()
    for first, block in _blocks(path, part):
        if not _survey_block(survey, first, block):
            _survey_lines(survey, enumerate(io.BytesIO(block), first), where, on_error)
    return survey


def _survey_block(survey: Survey, first: int, block: bytes) -> bool:
    """Survey a block whose lines are all good objects or blank, each checked in C-speed steps; False,
    surveying nothing, if a line needs a closer look (it may be bad or read by Python's json)."""
    lines = block.split(b"\n")
    if not lines[-1]:
        lines.pop()
    numbers: Sequence[int] = range(first, first + len(lines))
    blank: list[int] = []
    if lines and (not lines[0].strip() or not lines[-1].strip() or BLANK_INSIDE.search(block)):
        empty = [not line.strip() for line in lines]
        blank = [n for n, e in zip(numbers, empty) if e]
        numbers = [n for n, e in zip(numbers, empty) if not e]
        lines = [line for line, e in zip(lines, empty) if not e]
    try:
        values = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        return False
    if set(map(type, values)) != {dict}:
        return False
    if any(map(_long_integer_problem, _long_digit_lines(block))):
        return False
    sizes = list(map(len, values))  # a line has at least as many colons as keys: as many, it repeats none
    keys = list(map(bytes.count, lines, repeat(b":"))) if block.count(b":") != sum(sizes) else sizes
    suspects = [i for i, (k, n) in enumerate(zip(keys, sizes)) if k != n] if keys != sizes else []
    if any(_repeated_keys(values[i], lines[i]) for i in suspects):  # the others have no repeated key
        return False
    survey.kinds.add(numbers, values)
    survey.blank.extend(blank)
    return True


def _survey_lines(survey: Survey, lines: Iterable[tuple[int, bytes]], where: str, on_error: str,
                  limit: int | None = None) -> None:
    """Survey (number, line) pairs one by one, up to ``limit`` non-blank lines."""
    good, seen = [], 0
    for number, raw in lines:
        if not raw.strip():
            survey.blank.append(number)
            continue
        if limit is not None and seen == limit:
            survey.stop = number - 1
            break
        seen += 1
        try:
            value, problem, lenient = orjson.loads(raw), None, False
        except orjson.JSONDecodeError:  # orjson is strict; Python's json also reads NaN and Infinity
            (value, problem), lenient = _python_json(raw), True
        if problem is None and not isinstance(value, dict):
            problem = ("not_an_object", f"expected a JSON object, got {json_kind(value)}")
        if problem is None:
            problem = _polars_problem(value, raw, lenient)
        if problem is None and not lenient and _repeated_keys(value, raw):
            lenient = True  # Python's json reads it as orjson did: the last of the repeated keys wins
        if problem is None:
            good.append((number, value))
            if lenient:
                survey.lenient.add(number)
            continue
        if on_error == "raise":
            raise _bad_line(where, number, problem)
        survey.problems[number] = problem
    survey.kinds.add([n for n, _ in good], [v for _, v in good])


def _bad_line(where: str, number: int, problem: tuple[str, str]) -> DataflowError:
    return DataflowError(f"{where} line {number}: {problem[1]} ({problem[0]}); {BAD_LINE_HINT}")


def _polars_problem(value: dict, raw: bytes, lenient: bool) -> tuple[str, str] | None:
    """What polars cannot hold: an integer past 64 bits, a lone surrogate (only Python's json
    reads those)."""
    if LONG_DIGITS.search(raw) and (problem := _long_integer_problem(raw)):
        return problem
    if lenient:
        try:
            orjson.dumps(value)
        except TypeError as exc:  # a lone surrogate escape, e.g. "\ud800"
            return "invalid_unicode", f"a string that is not valid Unicode ({exc})"
    return None


def _long_integer_problem(raw: bytes) -> tuple[str, str] | None:
    """An integer past 64 bits in a line (orjson reads such integers as floats: read it exactly)."""
    exact = _python_json(raw)[0]
    if exact is not None and (key := _long_integer(exact)) is not None:
        return "integer_too_large", (f"field '{key}' holds an integer past 64 bits; write it as a string "
                                     f"(or a float) in the file")
    return None


def _long_digit_lines(block: bytes) -> Iterator[bytes]:
    """The lines of a block holding 19 digits in a row (shorter integers fit 64 bits), found at C speed."""
    digits = block.translate(DIGITS_AS_ZERO)
    start = digits.find(LONG_ZEROS)
    while start >= 0:
        start = block.rfind(b"\n", 0, start) + 1
        end = block.find(b"\n", start) + 1 or len(block)
        yield block[start:end]
        start = digits.find(LONG_ZEROS, end)


def _long_integer(value: Any, key: str = "") -> str | None:
    """The field holding an integer that 64 bits cannot hold, if any."""
    if isinstance(value, int) and not isinstance(value, bool):
        return key if value not in INT64 else None
    if isinstance(value, dict):
        return next((found for k, v in value.items() if (found := _long_integer(v, k)) is not None), None)
    if isinstance(value, list):
        return next((found for v in value if (found := _long_integer(v, key)) is not None), None)
    return None


def _repeated_keys(value: dict, raw: bytes) -> bool:
    """Whether an object of the line repeats a key (polars would keep the first value, JSON parsers
    the last). Cheap when no key repeats: every key is followed by a colon, so a line with as many
    colons as keys repeats none, nor does one with as many as its re-encoding (unless it escapes one)."""
    colons = raw.count(b":")
    if colons == len(value) or (colons == orjson.dumps(value).count(b":") and b"\\u003" not in raw):
        return False
    repeated = False

    def pairs(items: list[tuple[str, Any]]) -> dict:
        nonlocal repeated
        repeated = repeated or len({k for k, _ in items}) < len(items)
        return dict(items)

    json.loads(raw, object_pairs_hook=pairs)
    return repeated


def load_line(raw: bytes) -> Any:
    """A line's value: orjson's, or Python's json's where only it reads the line (NaN, Infinity)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _python_json(raw: bytes) -> tuple[Any, tuple[str, str] | None]:
    """Python's json reading of a line: (value, None), or (None, why it is not JSON)."""
    try:
        return json.loads(raw.decode("utf-8")), None
    except UnicodeDecodeError as exc:
        return None, ("invalid_utf8", f"invalid UTF-8 at byte {exc.start} of the line")
    except json.JSONDecodeError as exc:
        return None, ("malformed_json", json_error(exc))
    except RecursionError:
        return None, ("too_deep", "values nested more than about 1,000 levels deep")


def _blocks(path: Path, part: tuple[int, int | None, int] = (0, None, 1)) -> Iterator[tuple[int, bytes]]:
    """(number of the first line, text) for runs of whole lines of about CHUNK_BYTES, of the file or
    of a part of it (from ``line_ranges``)."""
    start, end, number = part
    rest = b""
    with open_lines(path) as fh:
        if start:
            fh.seek(start)
        for data in _read(fh, None if end is None else end - fh.tell()):
            data = rest + data
            cut = data.rfind(b"\n") + 1
            block, rest = data[:cut], data[cut:]
            if block:
                yield number, block
                number += block.count(b"\n")
    if rest:
        yield number, rest  # the last line, without its missing newline


def jsonl_chunks(path: Path, where: str, survey: Survey, check: Callable[[int, bytes], bool] | None = None,
                 schema: pl.Schema | None = None) -> Iterator[pl.DataFrame]:
    """Pass 2: frames of about CHUNK_BYTES of JSON, with NUMBER, of the lines (up to the survey's
    stop) it did not find bad, accepted by ``check``. A block with no such line to leave out, or to
    read with Python's json, goes to polars whole."""
    skip, stop = survey.skip, survey.stop
    marks = sorted(skip | survey.lenient)
    for first, block in _blocks(path):
        block += b"" if block.endswith(b"\n") else b"\n"
        last = first + block.count(b"\n") - 1
        if stop is not None and first > stop:
            return
        if check is None and (stop is None or last <= stop) and bisect_left(marks, first) == bisect_right(marks, last):
            yield _frame(block, range(first, last + 1), where, schema)
            continue
        kept = [(n, raw) for n, raw in enumerate(block.split(b"\n")[:-1], first)
                if n not in skip and (stop is None or n <= stop) and (check is None or check(n, raw))]
        plain = [(n, raw) for n, raw in kept if n not in survey.lenient]
        frames = [_frame(b"\n".join(raw for _, raw in plain) + b"\n", [n for n, _ in plain], where, schema)] if plain else []
        lenient = [(n, json.loads(raw)) for n, raw in kept if n in survey.lenient]
        if lenient:
            frames.append(pl.DataFrame([v for _, v in lenient], infer_schema_length=None)
                          .with_columns(pl.Series(NUMBER, [n for n, _ in lenient], dtype=pl.Int64)))
        if frames:
            yield pl.concat(frames, how="diagonal_relaxed").sort(NUMBER)


def _frame(text: bytes, numbers: Sequence[int], where: str, schema: pl.Schema | None) -> pl.DataFrame:
    try:
        try:
            frame = pl.read_ndjson(io.BytesIO(text), schema=schema) if schema else None
        except pl.exceptions.PolarsError:  # e.g. an integer beyond 64 bits: let polars infer
            frame = None
        if frame is None:
            frame = pl.read_ndjson(io.BytesIO(text), infer_schema_length=None)
    except pl.exceptions.PolarsError as exc:
        raise DataflowError(f"{where} lines {numbers[0]}-{numbers[-1]} do not form a table: "
                            f"{str(exc).splitlines()[0]}") from exc
    column = pl.Series(NUMBER, numbers, dtype=pl.Int64)
    return frame.with_columns(column) if frame.width else pl.DataFrame({NUMBER: column})


def good_lines(path: Path, where: str, on_error: str, node: str, limit: int | None = None,
               survey: Survey | None = None) -> tuple[Iterator[pl.DataFrame], list[dict[str, Any]]]:
    """Both passes (the first unless ``survey`` is its result): frames of the good lines, and
    rejects (filled while the frames are read)."""
    survey = survey if survey is not None else survey_jsonl(path, where, on_error, limit)
    usual = survey.kinds.usual_kinds(where, "line", on_error)
    rejects = [{"id": f"{node}-{n}", "reason": r, "detail": d} for n, (r, d) in survey.problems.items()]

    def kind_matches(number: int, raw: bytes) -> bool:
        why = mismatch(load_line(raw), usual, "line")
        if why:
            rejects.append({"id": f"{node}-{number}", "reason": "type_mismatch", "detail": why})
        return why is None

    schema = survey.kinds.scalar_schema()
    return jsonl_chunks(path, where, survey, kind_matches if usual else None, schema), rejects


def plain_schema(path: Path, where: str, on_error: str, survey: Survey) -> pl.Schema | None:
    """The schema of a file polars reads as it is, line n its row n, exactly as the two passes would: not
    compressed, no byte-order mark, every line a good object (none blank, bad or read by Python's json)
    and every field of one scalar kind. None for any other file."""
    if survey.problems or survey.blank or survey.lenient or not survey.kinds.shapes:
        return None
    if survey.kinds.usual_kinds(where, "line", on_error):
        return None
    with open(path, "rb") as fh:
        start = fh.read(3)
    return None if start[:2] == b"\x1f\x8b" or start == b"\xef\xbb\xbf" else survey.kinds.scalar_schema()


def read_jsonl(path: Path, where: str, on_error: str, node: str, scratch: Path
               ) -> tuple[pl.LazyFrame, list[dict[str, Any]]]:
    """The good lines of a JSONL file, and the rejects (with ``on_error='reject'``) of the others.
    A file the first pass finds plain is scanned by polars as it is; the good lines of any other
    are written as Parquet parts under ``scratch`` and scanned."""
    survey = surveyed(path, where, on_error)
    if on_error == "raise" and survey.problems:
        raise _bad_line(where, min(survey.problems), survey.problems[min(survey.problems)])
    if (schema := plain_schema(path, where, on_error, survey)) is not None:
        return pl.scan_ndjson(path, schema=schema).with_row_index(NUMBER, offset=1) \
            .with_columns(pl.col(NUMBER).cast(pl.Int64)), []
    import pyarrow.parquet as pq  # here, not at the top: only the parts need it, and a build starts without it
    chunks, rejects = good_lines(path, where, on_error, node, survey=survey)
    parts: list[Path] = []
    writer = None
    try:
        for chunk in chunks:  # one Parquet part per run of chunks with the same schema
            table = chunk.to_arrow()
            if writer is None or table.schema != writer.schema:
                if writer is not None:
                    writer.close()
                parts.append(scratch / f"part-{len(parts):05d}.parquet")
                writer = pq.ParquetWriter(parts[-1], table.schema, compression="none",
                                          use_dictionary=False)  # scratch: written and read ~3x faster
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    if not parts:
        return pl.LazyFrame(schema={NUMBER: pl.Int64}), rejects
    return pl.concat([pl.scan_parquet(p) for p in parts], how="diagonal_relaxed"), rejects


def surveyed(path: Path, where: str, on_error: str, digest: str | None = None) -> Survey:
    """The first pass over the file (of content hash ``digest``, if known), made once per content of the
    file in a process: the compile-time schema and the build share it. A pass that ends serves both modes
    (with ``on_error='raise'`` one ends only if no line is bad: it raises at the first)."""
    version = _version(path, digest)
    survey = _KEPT.surveys.get(version)
    if survey is None:
        survey = survey_jsonl(path, where, on_error)
        _KEPT.keep(version, survey)
    return survey


def _version(path: Path, digest: str | None = None) -> tuple[str, str]:
    return str(path.resolve()), digest or file_digest(path)


class KeptSurveys:
    """The last few first passes of this process, by file and content (an object, not a dict, so that
    operator fingerprints, which count a module's dicts as constants, do not see it change)."""

    def __init__(self, most: int) -> None:
        self.most, self.surveys = most, {}

    def keep(self, version: tuple, survey: Survey) -> None:
        self.surveys[version] = survey
        while len(self.surveys) > self.most:
            self.surveys.pop(next(iter(self.surveys)))


_KEPT = KeptSurveys(4)


def file_schema(path: Path, where: str, on_error: str) -> pl.Schema:
    """The columns of the file's good lines and their types, as the build reads them: each field's kind
    over every line; a nested type as polars reads it from a sample of the lines holding it (a struct
    field or list item type first seen past the sample is missing from it). Remembered under the
    file's content hash. With ``on_error='raise'``, a bad line or a field of another kind than most
    lines hold is an error here, before the build."""
    digest = file_digest(path)
    if (known := remembered_fact(digest, SCHEMA_FACT)) is not None:
        return pl.read_ipc(io.BytesIO(known)).schema
    size = path.stat().st_size
    if size >= ANNOUNCED_BYTES and _version(path, digest) not in _KEPT.surveys:
        print(f"[compile] {where}: reading the whole file ({size / (1 << 30):.1f} GiB) once for its schema; the "
              f"build reuses this pass", file=sys.stderr, flush=True)
    schema = _schema_of(path, where, surveyed(path, where, on_error, digest), on_error)
    stored = io.BytesIO()
    pl.DataFrame(schema=schema).write_ipc(stored)
    remember_fact(digest, SCHEMA_FACT, stored.getvalue())
    return schema


def _schema_of(path: Path, where: str, survey: Survey, on_error: str) -> pl.Schema:
    if not survey.kinds.shapes:
        if survey.problems:
            first = min(survey.problems)
            raise DataflowError(f"{where} has no valid JSON object on any line: all {len(survey.problems)} "
                                f"non-blank lines are bad (line {first}: {survey.problems[first][1]})")
        raise DataflowError(f"{where} is empty: it holds no JSON lines")
    usual = survey.kinds.usual_kinds(where, "line", on_error)
    held: dict[str, dict[type, int]] = {}  # field -> its kinds in the lines kept -> the first line of each
    for (keys, types), (_, first) in sorted(survey.kinds.shapes.items(), key=lambda shape: shape[1][1]):
        fields = [(key, kind) for key, kind in zip(keys, types) if kind is not type(None)]
        if any(json_kind_of(kind) != usual.get(key, json_kind_of(kind)) for key, kind in fields):
            continue  # the build leaves such lines out
        for key in keys:
            held.setdefault(key, {})
        for key, kind in fields:
            held[key][kind] = min(held[key].get(kind, first), first)
    nested = {key: min(kinds.values()) for key, kinds in held.items() if kinds and not set(kinds) <= set(SCALARS)}
    read = _nested_types(path, where, survey, usual, nested) if nested else {}
    return pl.Schema({key: read.get(key, pl.Null) if key in nested else scalar_type(set(kinds))
                      for key, kinds in held.items()})


def _nested_types(path: Path, where: str, survey: Survey, usual: dict[str | tuple, str],
                  first_lines: dict[str, int]) -> pl.Schema:
    """Polars' types of nested fields, read from the first SCHEMA_SAMPLE_LINES lines of the file and of
    the SCHEMA_SAMPLE_LINES lines from where each field first holds a value (``first_lines``), leaving
    out the lines the build does (bad lines, and those holding a field in another kind than most:
    ``usual``)."""
    starts = sorted({1, *first_lines.values()})

    def sampled(number: int, raw: bytes) -> bool:
        start = starts[bisect_right(starts, number) - 1]
        return number < start + SCHEMA_SAMPLE_LINES and mismatch(load_line(raw), usual, "line") is None

    upto = dataclasses.replace(survey, stop=starts[-1] + SCHEMA_SAMPLE_LINES - 1)
    frames = list(jsonl_chunks(path, where, upto, sampled))
    return pl.concat(frames, how="diagonal_relaxed").schema if frames else pl.Schema()
