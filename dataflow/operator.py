"""The operator contract.

An operator is a frozen dataclass whose fields are its parameters. It declares the input
columns it needs (``required_columns``), how it changes the schema (``output_schema``) and how it
transforms data (``apply``): polars LazyFrames in, a :class:`Result` out. Its ``kind`` tells an
executor how the operator may be run (see :class:`Kind`); operators never know which executor
runs them or in how many processes.

Fields are fingerprint parameters unless declared otherwise: :func:`runtime_field` for how an
operator runs (worker counts, later CPU/GPU resources), :func:`identity_field` for a value
hashed by what it names (a file's content, a model's weights) in ``fingerprint_extras``.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import polars as pl

from dataflow.dtypes import describe, matches

SCRATCH = "scratch"
REJECTS_SCHEMA = pl.Schema({"id": pl.String(), "node": pl.String(), "reason": pl.String(),
                            "score": pl.Float64(), "detail": pl.String()})
ON_ERROR = ("raise", "reject")


class Kind(str, enum.Enum):
    """How an executor may run an operator."""

    SOURCE = "source"  # no input: reads data
    ROW = "row"  # each output row depends on one input row: runs on any split of the rows
    BATCH = "batch"  # like ROW, but wants whole record batches (models, vectorized kernels)
    GLOBAL = "global"  # needs its whole input at once (dedup, sampling, pairing, LLM requests)
    VIEW = "view"  # a ViewOperator: its output is its input minus rejected rows


@dataclass
class Context:
    """What an operator may know about the run: its node name, scratch space, progress."""

    node: str
    workdir: Path
    rows_in: int | None = None
    report: Callable[[int], None] = lambda rows: None
    metrics: dict[str, Any] = field(default_factory=dict)

    def progress(self, rows: int) -> None:
        """Report that ``rows`` more input rows were processed."""
        self.report(rows)

    def scratch(self) -> Path:
        """A directory for files needed only until the node is written; removed then."""
        path = self.workdir / SCRATCH
        path.mkdir(exist_ok=True)
        return path

    def count(self, metric: str, amount: int | float = 1) -> None:
        """Add to a node metric shown in the build summary (e.g. ``llm_calls``, ``cache_hits``)."""
        self.metrics[metric] = self.metrics.get(metric, 0) + amount

    def record(self, metric: str, value: Any) -> None:
        """Set a node metric shown in the build summary (e.g. ``distinct_2``)."""
        self.metrics[metric] = value


@dataclass
class Result:
    """An operator's output rows and, if it dropped any, the rejected rows with reasons.

    ``rejects`` has an ``id`` and a ``reason`` column, optionally ``score`` and ``detail``
    (see :func:`rejects_frame`).
    """

    output: pl.LazyFrame | pl.DataFrame
    rejects: pl.LazyFrame | pl.DataFrame | None = None


def runtime_field(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field that says how an operator runs (worker counts, CPUs, GPUs), never what it
    computes: changing it rebuilds nothing."""
    return field(default=default, metadata={"runtime": True}, **kwargs)


def identity_field(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field hashed by what it names (a file's content, a model's identity) through the
    operator's ``fingerprint_extras``, not as written: moving a file rebuilds nothing."""
    return field(default=default, metadata={"identity": True}, **kwargs)


def fingerprint_parameters(op: Operator) -> dict[str, Any]:
    """The fields that are fingerprint parameters (all but runtime and identity fields)."""
    return {f.name: getattr(op, f.name) for f in dataclasses.fields(op)
            if not (f.metadata.get("runtime") or f.metadata.get("identity"))}


@dataclass(frozen=True)
class Operator:
    """Base class of every operator (see the module docstring)."""

    kind: ClassVar[Kind] = Kind.BATCH
    inputs_count: ClassVar[int] = 1  # number of upstream nodes; -1 for one or more
    version: ClassVar[str] = "1"  # bump to invalidate caches when semantics change

    def required_columns(self) -> dict[str, Any]:
        """Input columns the operator reads, with their type spec (see ``dataflow.dtypes``)."""
        return {}

    def check(self) -> list[str]:
        """Problems with the parameters, each a sentence that says how to fix it."""
        return []

    def output_schema(self, *schemas: pl.Schema) -> pl.Schema:
        """Schema of the output; by default the plan run over empty inputs, so a type error in an
        expression (a string compared with a number) fails at compile time."""
        empty = [pl.LazyFrame(schema=s) for s in schemas]
        result = self.apply(*empty, ctx=Context(node="<compile>", workdir=Path(".")))
        return result.output.lazy().collect().schema

    def apply(self, *frames: pl.LazyFrame, ctx: Context) -> Result:
        raise NotImplementedError

    def label(self) -> str:
        """Default node name: the class name in snake_case."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    def with_base_dir(self, base_dir: Path) -> Operator:
        """This operator with relative file paths in its parameters resolved against
        ``base_dir`` (the pipeline file's directory). Operators that read files override it."""
        return self

    def fingerprint_extras(self) -> dict[str, Any]:
        """Extra inputs of the fingerprint beyond parameters and code (e.g. file content)."""
        return {}


@dataclass(frozen=True)
class ViewOperator(Operator):
    """An operator whose output is its input minus the rows it rejects (a filter). An executor
    stores only the rejects, and may fuse a chain of views into one pass over their input."""

    kind: ClassVar[Kind] = Kind.VIEW

    def keep(self) -> pl.Expr:
        """True for rows that pass."""
        raise NotImplementedError

    def reject_score(self) -> pl.Expr | None:
        """The rejects' score for a failing row; None when there is none."""
        return None

    def reject_labels(self) -> dict[str, str]:
        """The rejects' ``reason`` and ``detail``, the same for every row this view drops."""
        raise NotImplementedError

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        labels = {k: pl.lit(v) for k, v in self.reject_labels().items()}
        score = self.reject_score()
        rejects = frame.filter(~self.keep()).select("id", score=pl.lit(None) if score is None else score, **labels)
        return Result(frame.filter(self.keep()), rejects)


def missing_or_mistyped(op: Operator, schema: pl.Schema) -> list[tuple[str, str]]:
    """(column, problem) pairs for declared input columns absent from or mistyped in ``schema``."""
    problems = []
    for column, spec in op.required_columns().items():
        if column not in schema:
            problems.append((column, "missing"))
        elif not matches(schema[column], spec):
            problems.append((column, f"is {schema[column]} but the operator needs {describe(spec)}"))
    return problems


def on_error_problems(on_error: str) -> list[str]:
    """The compile problem of an ``on_error`` parameter that is neither 'raise' nor 'reject'."""
    return [] if on_error in ON_ERROR else [f"on_error must be 'raise' or 'reject', not {on_error!r}"]


@dataclass(frozen=True)
class Rejection(Exception):
    """Raised by a row function to reject its row with a reason (and optional detail)."""

    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


def rejects_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rejected rows (dicts with ``id``, ``reason`` and optionally ``score`` and ``detail``) as a
    frame in the rejects' columns; the executor adds the node."""
    return pl.DataFrame(rows, schema={c: t for c, t in REJECTS_SCHEMA.items() if c != "node"})


def normalized_rejects(rejects: pl.LazyFrame | pl.DataFrame, node: str) -> pl.LazyFrame:
    """An operator's rejects in the rejects' columns, with the node filled in."""
    frame = rejects.lazy()
    have = frame.collect_schema()
    columns = [pl.lit(node, pl.String).alias(name) if name == "node"
               else pl.col(name).cast(dtype) if name in have else pl.lit(None, dtype).alias(name)
               for name, dtype in REJECTS_SCHEMA.items()]
    return frame.select(columns)


def with_rejects_split(frame: pl.LazyFrame, error_column: str, reason: str = "error") -> Result:
    """Split a frame that carries an error column into kept rows and rejects.

    The error column holds ``None`` for good rows and ``"reason\\tdetail"`` for bad ones.
    """
    bad = pl.col(error_column).is_not_null()
    output = frame.filter(~bad).drop(error_column)
    parts = pl.col(error_column).str.split_exact("\t", 1)
    rejects = frame.filter(bad).select(
        "id",
        reason=parts.struct.field("field_0").fill_null(reason),
        detail=parts.struct.field("field_1"),
    )
    return Result(output, rejects)
