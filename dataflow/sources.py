"""Source operators: JSONL, JSON, Parquet, CSV, Hugging Face datasets and in-memory rows.

Every source gives each row a stable string ``id``: the data's own ``id`` column if it has one
(it must be unique and non-null), else ``<node>-<n>`` where ``n`` is the 1-based line number in
a JSONL file and the 1-based record number otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

from dataflow.errors import DataflowError
from dataflow.filehash import file_digest
from dataflow.operator import Context, Operator, Result

SCHEMA_SAMPLE_LINES = 1000
_BAD_LINE_HINT = "fix the line, or read with on_error='reject' to send bad lines to rejects and go on"


class Source(Operator):
    """Base of the source operators: no inputs, a schema known without reading all the data."""

    kind = "source"
    inputs_count = 0
    fingerprint_exclude: ClassVar[tuple[str, ...]] = ("path",)  # content is hashed instead

    def peek_schema(self) -> pl.Schema:
        """Schema of the rows (without ``id``), read from metadata or the first records."""
        raise NotImplementedError

    def output_schema(self) -> pl.Schema:
        schema = self.peek_schema()
        return pl.Schema({"id": pl.String(), **{k: v for k, v in schema.items() if k != "id"}})


@dataclass(frozen=True)
class FileSource(Source):
    path: Path

    def check(self) -> list[str]:
        if not Path(self.path).exists():
            return [f"file not found: {self.path}"]
        return []

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
    return frame.select(pl.format(f"{node}-{{}}", numbers).alias("id"), columns)


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


def _json_kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def records_to_frame(records: list[tuple[int, dict]], where: str, unit: str, on_error: str,
                     node: str) -> tuple[pl.DataFrame, list[dict]]:
    """Build a frame from (number, record) pairs; a field whose JSON type differs from its type in
    most records is an error, or a reject with ``on_error='reject'``."""
    kinds: dict[str, dict[str, list[int]]] = {}
    for number, record in records:
        for key, value in record.items():
            kind = _json_kind(value)
            if kind:
                kinds.setdefault(key, {}).setdefault(kind, []).append(number)
    bad: dict[int, str] = {}
    for key, by_kind in kinds.items():
        if len(by_kind) > 1:
            usual = max(by_kind, key=lambda k: len(by_kind[k]))
            for kind, numbers in by_kind.items():
                if kind == usual:
                    continue
                message = f"field '{key}' is a {kind} here but a {usual} in most {unit}s"
                if on_error == "raise":
                    raise DataflowError(f"{where} {unit} {numbers[0]}: {message}; {_BAD_LINE_HINT}")
                for number in numbers:
                    bad.setdefault(number, message)
    kept = [(n, r) for n, r in records if n not in bad]
    rejects = [{"id": f"{node}-{n}", "reason": "type_mismatch", "detail": m} for n, m in bad.items()]
    try:
        frame = pl.DataFrame([r for _, r in kept], infer_schema_length=None)
    except Exception as exc:
        raise DataflowError(f"{where}: the {unit}s do not form a table: {exc}") from exc
    numbers = pl.Series("__n", [n for n, _ in kept], dtype=pl.Int64)
    return frame.with_columns(numbers) if frame.width else pl.DataFrame({"__n": numbers}), rejects


def parse_jsonl(data: bytes, where: str, on_error: str, limit: int | None = None
                ) -> tuple[list[tuple[int, dict]], list[tuple[int, str, str]]]:
    """Parse JSONL bytes line by line: (line number, record) pairs and (line, reason, detail) problems."""
    records, problems = [], []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        if limit is not None and len(records) >= limit:
            break
        try:
            value = json.loads(raw.decode("utf-8"))
            problem = None if isinstance(value, dict) else (
                "not_an_object", f"expected a JSON object, got {type(value).__name__}")
        except UnicodeDecodeError as exc:
            problem = ("invalid_utf8", f"invalid UTF-8 at byte {exc.start} of the line")
        except json.JSONDecodeError as exc:
            problem = ("malformed_json", f"{exc.msg} at column {exc.colno}")
        if problem is None:
            records.append((number, value))
        elif on_error == "raise":
            raise DataflowError(f"{where} line {number}: {problem[1]} ({problem[0]}); {_BAD_LINE_HINT}")
        else:
            problems.append((number, *problem))
    return records, problems


@dataclass(frozen=True)
class ReadJsonl(FileSource):
    """Reads a JSON Lines file. ``on_error='reject'`` sends malformed lines to rejects."""

    on_error: str = "raise"

    def label(self) -> str:
        return Path(self.path).stem

    def check(self) -> list[str]:
        problems = super().check()
        if self.on_error not in ("raise", "reject"):
            problems.append(f"on_error must be 'raise' or 'reject', not {self.on_error!r}")
        return problems

    def peek_schema(self) -> pl.Schema:
        with open(self.path, "rb") as fh:
            head = b"".join(line for _, line in zip(range(SCHEMA_SAMPLE_LINES), fh))
        records, _ = parse_jsonl(head, str(self.path), "reject")
        if not records:
            raise ValueError(f"{self.path} has no valid JSON records in its first lines")
        frame, _ = records_to_frame(records, str(self.path), "line", "reject", "")
        return frame.drop("__n").schema

    def apply(self, ctx: Context) -> Result:
        # Parsed line by line: polars' own reader silently turns a number into a string when
        # another line has a string there, and cannot say which line is malformed.
        where = str(self.path)
        records, problems = parse_jsonl(Path(self.path).read_bytes(), where, self.on_error)
        frame, rejects = records_to_frame(records, where, "line", self.on_error, ctx.node)
        rejects += [{"id": f"{ctx.node}-{n}", "reason": r, "detail": d} for n, r, d in problems]
        lazy = with_ids(frame.lazy(), ctx.node, where, pl.col("__n")).drop("__n")
        return Result(lazy, pl.DataFrame(rejects, schema={"id": pl.String, "reason": pl.String,
                                                           "detail": pl.String}))


@dataclass(frozen=True)
class ReadJson(FileSource):
    """Reads a JSON file holding an array of objects."""

    def label(self) -> str:
        return Path(self.path).stem

    def _records(self, node: str) -> pl.DataFrame:
        try:
            value = json.loads(Path(self.path).read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataflowError(f"{self.path}: not valid JSON: {exc}") from exc
        if not isinstance(value, list):
            raise DataflowError(f"{self.path}: expected a JSON array of objects, got {type(value).__name__}")
        for i, record in enumerate(value, 1):
            if not isinstance(record, dict):
                raise DataflowError(f"{self.path} record {i}: expected an object, got {type(record).__name__}")
        frame, _ = records_to_frame(list(enumerate(value, 1)), str(self.path), "record", "raise", node)
        return frame

    def peek_schema(self) -> pl.Schema:
        return self._records("").drop("__n").schema

    def apply(self, ctx: Context) -> Result:
        frame = with_ids(self._records(ctx.node).lazy(), ctx.node, str(self.path), pl.col("__n")).drop("__n")
        return Result(frame)


@dataclass(frozen=True)
class ReadParquet(FileSource):
    """Reads a Parquet file (streamed; only the footer is read at compile time)."""

    def label(self) -> str:
        return Path(self.path).stem

    def peek_schema(self) -> pl.Schema:
        return pl.scan_parquet(self.path).collect_schema()

    def apply(self, ctx: Context) -> Result:
        frame = with_ids(pl.scan_parquet(self.path), ctx.node, str(self.path))
        return Result(frame)


@dataclass(frozen=True)
class ReadCsv(FileSource):
    """Reads a CSV file with a header row."""

    separator: str = ","

    def label(self) -> str:
        return Path(self.path).stem

    def _scan(self) -> pl.LazyFrame:
        return pl.scan_csv(self.path, separator=self.separator, infer_schema_length=10_000)

    def peek_schema(self) -> pl.Schema:
        return self._scan().collect_schema()

    def apply(self, ctx: Context) -> Result:
        try:
            frame = self._scan().collect()
        except pl.exceptions.PolarsError as exc:
            raise DataflowError(f"{self.path}: cannot read as CSV: {str(exc).splitlines()[0]}") from exc
        lazy = with_ids(frame.lazy(), ctx.node, str(self.path))
        return Result(lazy)


@dataclass(frozen=True)
class ReadHF(Source):
    """Reads a Hugging Face ``datasets.Dataset``, or a dataset saved with ``save_to_disk``."""

    dataset: Any
    split: str | None = None
    fingerprint_exclude = ("dataset",)

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
                raise DataflowError(f"dataset has splits {list(ds)}; pass split=... to pick one")
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

    def _frame(self) -> pl.DataFrame:
        frame, _ = records_to_frame(list(enumerate(self.rows, 1)), "from_rows", "row", "raise", "")
        return frame

    def peek_schema(self) -> pl.Schema:
        return self._frame().drop("__n").schema

    def apply(self, ctx: Context) -> Result:
        frame = with_ids(self._frame().lazy(), ctx.node, "rows", pl.col("__n")).drop("__n")
        return Result(frame)
