"""The operator contract.

An operator is a frozen dataclass whose fields are its parameters. It declares the input
columns it needs (``required_columns``), how it changes the schema (``output_schema``) and how it
transforms data (``apply``): polars LazyFrames in, a :class:`Result` out. Operators never know
which executor runs them or in how many processes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import polars as pl

from dataflow.dtypes import describe, matches

SCRATCH = "scratch"
REJECTS_SCHEMA = pl.Schema({"id": pl.String(), "node": pl.String(), "reason": pl.String(),
                            "score": pl.Float64(), "detail": pl.String()})


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

    ``rejects`` has an ``id`` and a ``reason`` column, optionally ``score`` and ``detail``.
    """

    output: pl.LazyFrame | pl.DataFrame
    rejects: pl.LazyFrame | pl.DataFrame | None = None


@dataclass(frozen=True)
class Operator:
    """Base class of every operator (see the module docstring)."""

    kind: ClassVar[str] = "batch"  # "source", "row", "batch" or "global"
    inputs_count: ClassVar[int] = 1  # number of upstream nodes; -1 for one or more
    is_view: ClassVar[bool] = False  # output == input minus rejects: store only the rejects
    version: ClassVar[str] = "1"  # bump to invalidate caches when semantics change

    def required_columns(self) -> dict[str, Any]:
        """Input columns the operator reads, with their type spec (see ``dataflow.dtypes``)."""
        return {}

    def check(self) -> list[str]:
        """Problems with the parameters, each a sentence that says how to fix it."""
        return []

    def output_schema(self, *schemas: pl.Schema) -> pl.Schema:
        """Schema of the output; by default polars infers it from the plan over empty inputs."""
        empty = [pl.LazyFrame(schema=s) for s in schemas]
        result = self.apply(*empty, ctx=Context(node="<compile>", workdir=Path(".")))
        out = result.output
        return out.collect_schema() if isinstance(out, pl.LazyFrame) else out.schema

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


def missing_or_mistyped(op: Operator, schema: pl.Schema) -> list[tuple[str, str]]:
    """(column, problem) pairs for declared input columns absent from or mistyped in ``schema``."""
    problems = []
    for column, spec in op.required_columns().items():
        if column not in schema:
            problems.append((column, "missing"))
        elif not matches(schema[column], spec):
            problems.append((column, f"is {schema[column]} but the operator needs {describe(spec)}"))
    return problems


@dataclass(frozen=True)
class Rejection(Exception):
    """Raised by a row function to reject its row with a reason (and optional detail)."""

    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


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

