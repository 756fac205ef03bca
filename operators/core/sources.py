"""Source operators: JSONL, JSON, Parquet, CSV, Hugging Face datasets and in-memory rows.

Every source gives each row a stable string ``id``: the data's own ``id`` column if it has one
(it must be unique and non-null), else ``<node>-<n>`` where ``n`` is the 1-based line number in
a JSONL file and the 1-based record number otherwise.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from dataflow.errors import DataflowError
from dataflow.filehash import file_digest
from dataflow.operator import Context, Kind, Operator, Result, identity_field, on_error_problems, rejects_frame
from dataflow.operators.core.jsonl import (NUMBER, compression_problem, file_schema, json_kind, read_jsonl,
                                           records_to_frame)

CSV_TYPE_ROWS = 10_000


class Source(Operator):
    """Base of the source operators: no inputs, a schema known before the build (from metadata, the first
    records, or, for JSONL, a pass over the file that the build reuses)."""

    kind = Kind.SOURCE
    inputs_count = 0

    def peek_schema(self) -> pl.Schema:
        """Schema of the rows (without ``id``)."""
        raise NotImplementedError

    def output_schema(self) -> pl.Schema:
        schema = self.peek_schema()
        return pl.Schema({"id": pl.String(), **{k: v for k, v in schema.items() if k != "id"}})


@dataclass(frozen=True)
class FileSource(Source):
    path: Path = identity_field()  # its content is hashed

    def check(self) -> list[str]:
        if not Path(self.path).exists():
            glob = " (a pattern such as *.jsonl is not read: name one file, or p.concat a source per file)" \
                if any(c in str(self.path) for c in "*?[") else ""
            return [f"file not found: {self.path}{glob}"]
        if not Path(self.path).is_file():
            return [f"{self.path} is a directory, not a file: name the file to read"]
        return []

    def label(self) -> str:
        return Path(self.path).stem

    def fingerprint_extras(self) -> dict[str, Any]:
        return {"content": file_digest(Path(self.path))}


def with_ids(frame: pl.LazyFrame, node: str, where: str, numbers: pl.Expr | None = None) -> pl.LazyFrame:
    """Put a string ``id`` column first: the data's own ids (checked), or ``<node>-<number>``."""
    if "id" in frame.collect_schema():
        frame = frame.with_columns(pl.col("id").cast(pl.String)).select("id", pl.exclude("id"))
        check_ids(frame.select("id"), where)
        return frame
    columns = pl.all()
    if numbers is None:  # a row index streams; int_range(pl.len()) would hold the whole column
        row = "__dataflow_row"
        frame, numbers, columns = frame.with_row_index(row, offset=1), pl.col(row), pl.exclude(row)
    return frame.select((pl.lit(f"{node}-") + numbers.cast(pl.String)).alias("id"), columns)  # faster than pl.format


def check_ids(ids: pl.LazyFrame, where: str) -> None:
    """Fail if data-supplied ids have nulls or duplicates (counted in one streaming pass)."""
    counts = ids.select(nulls=pl.col("id").null_count(), rows=pl.len(),
                        distinct=pl.col("id").n_unique()).collect(engine="streaming").row(0, named=True)
    if counts["nulls"]:
        raise DataflowError(f"{where}: column 'id' has {counts['nulls']} null value(s); ids must be unique and "
                            f"non-null. Drop or rename the column to have ids generated.")
    if counts["distinct"] < counts["rows"]:
        dups = ids.group_by("id").len().filter(pl.col("len") > 1).head(3).collect()["id"].to_list()
        raise DataflowError(f"{where}: column 'id' has duplicate values, e.g. {sorted(dups)}; ids must be "
                            f"unique. Drop or rename the column to have ids generated.")


@dataclass(frozen=True)
class ReadJsonl(FileSource):
    """Reads a JSON Lines file. ``on_error='reject'`` sends malformed lines to rejects."""

    on_error: str = "raise"

    def check(self) -> list[str]:
        problems = super().check() + on_error_problems(self.on_error)
        if not problems and (compressed := compression_problem(Path(self.path))):
            problems.append(compressed)
        return problems

    def peek_schema(self) -> pl.Schema:
        return file_schema(Path(self.path), str(self.path), self.on_error)

    def apply(self, ctx: Context) -> Result:
        where = str(self.path)
        frame, rejects = read_jsonl(Path(self.path), where, self.on_error, ctx.node, ctx.scratch())
        lazy = with_ids(frame, ctx.node, where, pl.col(NUMBER)).drop(NUMBER)
        return Result(lazy, rejects_frame(rejects))


@dataclass(frozen=True)
class ReadJson(FileSource):
    """Reads a JSON file holding an array of objects."""

    def _records(self, node: str) -> pl.DataFrame:
        try:
            value = json.loads(Path(self.path).read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataflowError(f"{self.path}: not valid JSON: {exc}") from exc
        except RecursionError:
            raise DataflowError(f"{self.path}: values nested more than about 1,000 levels deep") from None
        if not isinstance(value, list):
            raise DataflowError(f"{self.path}: expected a JSON array of objects, got {json_kind(value)}")
        for i, record in enumerate(value, 1):
            if not isinstance(record, dict):
                raise DataflowError(f"{self.path} record {i}: expected an object, got {json_kind(record)}")
        frame, _ = records_to_frame(list(enumerate(value, 1)), str(self.path), "record", "raise", node)
        return frame

    def peek_schema(self) -> pl.Schema:
        return self._records("").drop(NUMBER).schema

    def apply(self, ctx: Context) -> Result:
        frame = with_ids(self._records(ctx.node).lazy(), ctx.node, str(self.path), pl.col(NUMBER)).drop(NUMBER)
        return Result(frame)


@dataclass(frozen=True)
class ReadParquet(FileSource):
    """Reads a Parquet file (streamed; only the footer is read at compile time)."""

    def peek_schema(self) -> pl.Schema:
        try:
            return pl.scan_parquet(self.path).collect_schema()
        except pl.exceptions.PolarsError as exc:
            raise ValueError(f"{self.path} is not a readable Parquet file ({str(exc).splitlines()[0]})") from exc

    def apply(self, ctx: Context) -> Result:
        frame = with_ids(pl.scan_parquet(self.path), ctx.node, str(self.path))
        return Result(frame)


@dataclass(frozen=True)
class ReadCsv(FileSource):
    """Reads a CSV file with a header row, streamed. Column types come from the first
    ``CSV_TYPE_ROWS`` rows, or every column is text with ``infer_types=False``. Before the data is
    read, one pass checks the file's shape: a row with more or fewer fields than the header, a
    quoted field that never ends, a repeated column name or a line that is not UTF-8 is an error
    naming the line, as is a value that does not fit its column's type. With ``on_error='reject'``,
    rows of the wrong field count and rows holding such a value are rejects (``wrong_field_count``,
    ``type_mismatch``); the rest of the list stays an error. A blank line in a file of two or more
    columns is left out (counted in the ``blank_lines`` metric); the other rows keep the ids they
    would have with it."""

    separator: str = ","
    infer_types: bool = True
    on_error: str = "raise"

    def check(self) -> list[str]:
        return super().check() + on_error_problems(self.on_error)

    def _scan(self, infer_types: bool, ragged: bool = False) -> pl.LazyFrame:
        return pl.scan_csv(self.path, separator=self.separator, infer_schema=infer_types,
                           infer_schema_length=CSV_TYPE_ROWS, truncate_ragged_lines=ragged)

    def peek_schema(self) -> pl.Schema:
        try:
            return self._scan(self.infer_types, ragged=self.on_error == "reject").collect_schema()
        except pl.exceptions.PolarsError as exc:
            raise ValueError(f"{self.path}: cannot read as CSV ({str(exc).splitlines()[0]})") from exc

    def apply(self, ctx: Context) -> Result:
        problem, blank, ragged = csv_shape(Path(self.path), self.separator, self.on_error == "reject")
        if problem:
            raise DataflowError(f"{self.path} {problem}")
        rejects = [{"id": f"{ctx.node}-{row}", "reason": "wrong_field_count", "detail": why}
                   for row, why in ragged.items()]
        scan = self._scan(self.infer_types, ragged=bool(ragged))
        left_out = [*blank, *ragged]
        try:  # one streaming pass that parses every field, so a bad value fails here, named
            _rows(scan, left_out).select(pl.all().null_count()).collect(engine="streaming")
            numbered = _rows(scan, left_out, numbered=True)
        except pl.exceptions.PolarsError as exc:
            if self.on_error == "raise":
                raise DataflowError(self._explain(exc)) from exc
            numbered, misfits = self._cast_text(bool(ragged), left_out)
            rejects += [{"id": f"{ctx.node}-{row}", "reason": "type_mismatch", "detail": why} for row, why in misfits]
        if blank:
            ctx.record("blank_lines", len(blank))  # polars reads each as a row of nulls
        if not left_out and not rejects:
            return Result(with_ids(scan, ctx.node, str(self.path)))
        return Result(with_ids(numbered, ctx.node, str(self.path), pl.col(NUMBER)).drop(NUMBER), rejects_frame(rejects))

    def _misfit(self, name: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
        """Whether a text value of column ``name`` does not read as ``dtype``, and the value read."""
        text = pl.col(name)
        if dtype == pl.Boolean:
            lower = text.str.to_lowercase()
            value = pl.when(lower == "true").then(True).when(lower == "false").then(False)
        else:
            value = text.cast(dtype, strict=False)
        return text.is_not_null() & value.is_null(), value.alias(name)

    def _misfit_message(self, row: int, name: str, value: str, dtype: pl.DataType) -> str:
        return f"row {row}, column '{name}': {value!r} is not {dtype}, the type its first {CSV_TYPE_ROWS:,} rows have"

    def _cast_text(self, ragged: bool, left_out: list[int]) -> tuple[pl.LazyFrame, list[tuple[int, str]]]:
        """The file's rows but ``left_out``, read as text and cast to their column types, numbered (``NUMBER``);
        and (row, why) for each row left out of them for a value that does not fit its column."""
        text = _rows(self._scan(False, ragged), left_out, numbered=True)
        schema = self.peek_schema()
        typed = {name: self._misfit(name, dtype) for name, dtype in schema.items() if dtype != pl.String}
        misfits: dict[int, str] = {}
        for name, (misfit, _) in typed.items():
            bad = text.filter(misfit).select(NUMBER, name).collect(engine="streaming")
            for row, value in bad.iter_rows():
                misfits.setdefault(row, self._misfit_message(row, name, value, schema[name]))
        kept = text.filter(~pl.col(NUMBER).is_in(list(misfits))).with_columns(value for _, value in typed.values())
        return kept, sorted(misfits.items())

    def _explain(self, error: pl.exceptions.PolarsError) -> str:
        """Name the first line that is not UTF-8, or row whose value does not fit its column's type;
        else polars' own message."""
        reason = f"{self.path}: cannot read as CSV: {str(error).splitlines()[0]}"
        if (line := first_line_not_utf8(Path(self.path))) is not None:
            return f"{self.path} line {line}: not valid UTF-8. Convert the file to UTF-8 (e.g. with iconv)."
        try:
            text = self._scan(False).with_row_index("__row", offset=1)
            for name, dtype in self.peek_schema().items():
                if dtype == pl.String:
                    continue
                misfit, _ = self._misfit(name, dtype)
                bad = text.filter(misfit).select("__row", name).head(1).collect(engine="streaming")
                if bad.height:
                    row, value = bad.row(0)
                    return (f"{self.path} {self._misfit_message(row, name, value, dtype)}. Pass infer_types=False "
                            f"to read_csv to read every column as text, and cast it in a later node, or "
                            f"on_error='reject' to send such rows to rejects.")
        except pl.exceptions.PolarsError:
            pass  # not readable even as text: polars' own message says why
        return reason


def _rows(scan: pl.LazyFrame, left_out: list[int], numbered: bool = False) -> pl.LazyFrame:
    """A scan's rows but those numbered ``left_out`` (1-based), with their numbers (``NUMBER``) if asked."""
    if not left_out and not numbered:
        return scan
    rows = scan.with_row_index(NUMBER, offset=1).with_columns(pl.col(NUMBER).cast(pl.Int64))
    rows = rows.filter(~pl.col(NUMBER).is_in(left_out)) if left_out else rows
    return rows if numbered else rows.drop(NUMBER)


def csv_shape(path: Path, separator: str, keep_going: bool = False
              ) -> tuple[str | None, list[int], dict[int, str]]:
    """Where a CSV file is not a table (the line and what is wrong there, or None), the numbers of the
    rows that are blank lines in a file of two or more columns, and, with ``keep_going``, each row of
    the wrong field count and why (instead of the first as the problem)."""
    start, blank, ragged = 1, [], {}  # where the record being read starts
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter=separator, strict=True)
            header = next(reader, None)
            if not header:
                return "line 1: no header row (the file is empty)", [], {}
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                return f"line 1: the header repeats column name(s) {repeated}; give every column its own name", [], {}
            start = reader.line_num + 1
            for row, record in enumerate(reader, 1):
                if record and len(record) != len(header):
                    why = f"{len(record)} field(s), but the header has {len(header)}"
                    if not keep_going:
                        return (f"line {reader.line_num}: {why}; fix the row (a separator inside a value needs "
                                f"quotes), or read with on_error='reject' to send such rows to rejects"), [], {}
                    ragged[row] = f"line {reader.line_num}: {why}"
                if not record and len(header) > 1:
                    blank.append(row)
                start = reader.line_num + 1
    except csv.Error as exc:
        return f"line {start}: {exc} (a quoted field that starts here may never end)", [], {}
    except UnicodeDecodeError:
        return (f"line {first_line_not_utf8(path)}: not valid UTF-8. Convert the file to UTF-8 (e.g. with iconv).",
                [], {})
    return None, blank, ragged


def first_line_not_utf8(path: Path) -> int | None:
    """The 1-based number of the first line that is not valid UTF-8, or None."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


@dataclass(frozen=True)
class ReadHF(Source):
    """Reads a Hugging Face ``datasets.Dataset``, or a dataset saved with ``save_to_disk``."""

    dataset: Any = identity_field()  # its content or datasets fingerprint is hashed
    split: str | None = None

    def label(self) -> str:
        return "dataset"

    def check(self) -> list[str]:
        if isinstance(self.dataset, (str, Path)) and not Path(self.dataset).is_dir():
            return [f"saved dataset directory not found: {self.dataset}"]
        return []

    def _load(self):
        import datasets

        ds = self.dataset
        if isinstance(ds, (str, Path)):
            ds = datasets.load_from_disk(str(ds))
        if isinstance(ds, datasets.DatasetDict):
            if self.split not in ds:
                given = "pass split=... to pick one" if self.split is None else f"it has no split {self.split!r}"
                raise DataflowError(f"dataset has splits {list(ds)}; {given}")
            ds = ds[self.split]
        return ds

    def fingerprint_extras(self) -> dict[str, Any]:
        if isinstance(self.dataset, (str, Path)):
            return {"content": file_digest(Path(self.dataset))}
        return {"dataset": self._load()._fingerprint}

    def peek_schema(self) -> pl.Schema:
        ds = self._load()
        return pl.from_arrow(ds.data.table.slice(0, 0)).schema

    def apply(self, ctx: Context) -> Result:
        ds = self._load()
        if ds._indices is not None:
            ds = ds.flatten_indices()
        frame = with_ids(pl.from_arrow(ds.data.table).lazy(), ctx.node, "dataset")
        return Result(frame)


@dataclass(frozen=True)
class FromRows(Source):
    """In-memory rows: a list of dicts."""

    rows: tuple[dict, ...]

    def label(self) -> str:
        return "rows"

    def check(self) -> list[str]:
        odd = next(((i, row) for i, row in enumerate(self.rows, 1) if not isinstance(row, dict)), None)
        return [f"row {odd[0]} is a {type(odd[1]).__name__}, not a dict of column values: give every row as "
                f"{{'column': value, ...}}"] if odd else []

    def _frame(self) -> pl.DataFrame:
        frame, _ = records_to_frame(list(enumerate(self.rows, 1)), "from_rows", "row", "raise", "")
        return frame

    def peek_schema(self) -> pl.Schema:
        return self._frame().drop(NUMBER).schema

    def apply(self, ctx: Context) -> Result:
        frame = with_ids(self._frame().lazy(), ctx.node, "rows", pl.col(NUMBER)).drop(NUMBER)
        return Result(frame)
