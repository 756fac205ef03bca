"""Stage gates (data contracts): conditions a node must meet before anything after it is built.

    pairs.gate(min_rows=50, min_distinct_2=0.3, column="chosen")
    pairs.gate(min_margin=0.5, min_margin_share=0.6, warn=True)

A gate is not a node: it changes neither its node's data nor any fingerprint, so adding or changing
one rebuilds nothing. Once its node is built or found cached, the build measures the node as stored
and checks each condition. A failed condition stops the node's outputs and every node downstream of
it (they are "skipped"); independent branches still build, every finished node stays cached, and the
build then fails with one report of every failed condition. With ``warn=True`` a failed condition
only warns. Every result is recorded (the manifest, the summary, the ``gates`` view).

What each condition measures (a measure of nothing, such as a share of no rows, fails):

- ``min_rows``: the rows out.
- ``max_reject_share``: rejected rows / rows in, as the build recorded them (a source's rows in are
  its rows out plus its rejects; a node of several inputs counts the rows of all, so a join's unmatched
  left rows are a share of the left and right rows).
- ``min_distinct_2`` (``column=``): unique word bigrams / word bigrams of the column's texts. A text
  is a string value, or a conversation's assistant turns joined by a newline; its words are the runs of
  non-whitespace characters of its NFKC-normalized lower case; bigrams never join two texts. It is the
  ``distinct_2`` that ``DiversityMetrics`` records.
- ``min_valid_share`` (``schema=``): rows valid as records of that schema (those ``node.validate(schema)``
  keeps) / rows.
- ``min_coverage`` (``column=``, ``expected=[...]``): expected values present at least once in the
  column / expected values; the result names the missing ones.
- ``min_margin_share`` (``min_margin=``, ``margin_column=``, default ``margin`` as ``PreferencePairs``
  writes it): rows whose margin is at least ``min_margin`` (null and NaN are not) / rows.

A node found cached keeps the measures the previous build of the pipeline took of it.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from dataflow.dtypes import matches
from dataflow.fingerprint import digest
from dataflow.operator import Context, missing_or_mistyped
from dataflow.operators.core.validate import Validate
from dataflow.operators.columns import column_text
from dataflow.progress import Progress
from dataflow.records import GateResult, NodeStats, manifest_gates, node_rows
from dataflow.schemas import MESSAGES, SCHEMAS
from dataflow.store import Store

CONDITIONS = ("min_rows", "max_reject_share", "min_distinct_2", "min_valid_share", "min_coverage",
              "min_margin_share")
NEEDS = {"min_distinct_2": ("column",), "min_valid_share": ("schema",), "min_coverage": ("column", "expected"),
         "min_margin_share": ("min_margin",)}  # the arguments a condition measures with
SHOWN_MISSING = 5  # missing expected values named in a result


@dataclass(frozen=True)
class Gate:
    """The conditions a gate puts on one node (see the module docstring); all are optional."""

    node: str
    min_rows: int | None = None
    max_reject_share: float | None = None
    min_distinct_2: float | None = None
    min_valid_share: float | None = None
    min_coverage: float | None = None
    min_margin_share: float | None = None
    min_margin: float | None = None
    column: str | None = None
    schema: str | None = None
    expected: list | tuple | None = None
    margin_column: str = "margin"
    warn: bool = False

    def problems(self, schema: pl.Schema) -> list[str]:
        """What is wrong with the arguments on a node of ``schema``, each with its fix."""
        return [f"gate on node '{self.node}': {p}" for p in self._bound_problems() + self._column_problems(schema)]

    def _bound_problems(self) -> list[str]:
        given = [c for c in CONDITIONS if getattr(self, c) is not None]
        if not given:
            return [f"no condition: give one or more of {', '.join(c + '=' for c in CONDITIONS)}"]
        problems = []
        for name in given:
            value = getattr(self, name)
            if name == "min_rows" and not (_is_number(value) and float(value).is_integer() and value >= 0):
                problems.append(f"min_rows must be a whole number of rows, 0 or more, not {value!r}")
            elif name != "min_rows" and not (_is_number(value) and 0 <= value <= 1):
                problems.append(f"{name} must be a share between 0 and 1 (e.g. 0.8), not {value!r}")
        if self.min_margin is not None and not _is_number(self.min_margin):
            problems.append(f"min_margin must be a number, not {self.min_margin!r}")
        if not isinstance(self.warn, bool):
            problems.append(f"warn must be True or False, not {self.warn!r}")
        for condition, arguments in NEEDS.items():
            if getattr(self, condition) is not None:
                problems += [f"{condition}= needs {a}=" for a in arguments if getattr(self, a) is None]
        for argument in dict.fromkeys(a for arguments in NEEDS.values() for a in arguments):
            users = [c for c, arguments in NEEDS.items() if argument in arguments]
            if getattr(self, argument) is not None and all(getattr(self, c) is None for c in users):
                problems.append(f"{argument}= is given but no condition uses it: it goes with {' or '.join(users)}=")
        return problems

    def _column_problems(self, schema: pl.Schema) -> list[str]:
        measured = ((self.column, self.min_distinct_2 is not None or self.min_coverage is not None),
                    (self.margin_column, self.min_margin_share is not None))
        problems = [f"column '{column}' not found; the node has: {', '.join(schema)}"
                    for column, used in measured if used and column is not None and column not in schema]
        column, margin = schema.get(self.column), schema.get(self.margin_column)  # None: missing
        if self.min_distinct_2 is not None and column is not None \
                and not (matches(column, str) or matches(column, MESSAGES)):
            problems.append(f"min_distinct_2 measures text, but column '{self.column}' is {column}: give a "
                            f"string column or a list of {{role, content}} turns")
        if self.min_coverage is not None and column is not None:
            problems += _expected_problems(self.expected, column)
        if self.min_valid_share is not None and self.schema not in (None, *SCHEMAS):
            problems.append(f"unknown record schema {self.schema!r}; choose from {sorted(SCHEMAS)}")
        elif self.min_valid_share is not None and self.schema is not None:
            problems += [f"'{self.schema}' records need column '{name}', which "
                         f"{'is missing' if issue == 'missing' else issue}"
                         for name, issue in missing_or_mistyped(Validate(self.schema), schema)]
        if self.min_margin_share is not None and margin is not None and not margin.is_numeric():
            problems.append(f"the margin column '{self.margin_column}' is {margin}, not a number: name the numeric "
                            f"column with margin_column=")
        return problems

    def conditions(self) -> list[Condition]:
        """The conditions given, in the order of ``CONDITIONS``."""
        measures = {
            "min_rows": ("the row count", partial(row_count)),
            "max_reject_share": ("the rejected share", partial(reject_share)),
            "min_distinct_2": (f"distinct-2 of '{self.column}'", partial(distinct_2, column=self.column)),
            "min_valid_share": (f"the share of rows valid as '{self.schema}' records",
                                partial(valid_share, schema=self.schema)),
            "min_coverage": (f"the coverage of the expected values of '{self.column}'",
                             partial(coverage, column=self.column, expected=tuple(self.expected or ()))),
            "min_margin_share": (f"the share of rows with {self.margin_column} >= {self.min_margin}",
                                 partial(margin_share, column=self.margin_column, margin=self.min_margin)),
        }
        return [Condition(name, label, measure, getattr(self, name))
                for name, (label, measure) in measures.items() if getattr(self, name) is not None]


ARGUMENTS = tuple(f.name for f in fields(Gate) if f.name != "node")


@dataclass(frozen=True)
class Condition:
    """One condition of a gate: a measure of the node, ``(rows, stats) -> (value, note)``, and its bound."""

    name: str  # the gate's keyword
    label: str  # what is measured, in words
    measure: partial
    bound: float

    def result(self, node: str, key: str, value: float | None, note: str, warn: bool) -> GateResult:
        at_most = self.name.startswith("max_")
        passed = value is not None and (value <= self.bound if at_most else value >= self.bound)
        bound = _number(self.bound)
        if value is None:
            message = f"{self.label} is undefined ({note}): it must be {'at most' if at_most else 'at least'} {bound}"
        else:
            relation = ("at most" if passed else "above") if at_most else ("at least" if passed else "below")
            shown = _number(value) if _number(value) != bound or value == self.bound else f"{value:.10g}"
            message = f"{self.label} is {shown}{f' ({note})' if note else ''}, {relation} {bound}"
        return GateResult(node, self.name, key, value, note, self.bound, passed, warn, message)


# -- measures: (rows, stats, arguments) -> (value or None when undefined, a note shown with it) -------------
def row_count(rows: pl.LazyFrame, stats: NodeStats) -> tuple[float | None, str]:
    return stats.rows_out, ""


def reject_share(rows: pl.LazyFrame, stats: NodeStats) -> tuple[float | None, str]:
    rows_in = stats.rows_in if stats.rows_in is not None else stats.rows_out + stats.rejected
    if not rows_in:
        return None, "no rows in"
    return stats.rejected / rows_in, f"{stats.rejected:,} of {rows_in:,} rows in"


def distinct_2(rows: pl.LazyFrame, stats: NodeStats, column: str) -> tuple[float | None, str]:
    """Distinct-2 of a column's texts: its strings, or each conversation's assistant turns."""
    from dataflow.operators.text import distinct_n  # NumPy, imported only for this gate

    dtype = rows.collect_schema()[column]
    texts = rows.select(column_text(column, dtype, roles=("assistant",)).alias("text")).collect()["text"]
    value = distinct_n(texts, 2)
    return (None, "no word bigrams") if value is None else (value, f"over {len(texts):,} texts")


def valid_share(rows: pl.LazyFrame, stats: NodeStats, schema: str) -> tuple[float | None, str]:
    if not stats.rows_out:
        return None, "no rows"
    kept = Validate(schema).apply(rows, ctx=Context(node=stats.name, workdir=Path("."))).output
    valid = kept.select(pl.len()).collect(engine="streaming").item()
    return valid / stats.rows_out, f"{valid:,} of {stats.rows_out:,} rows"


def coverage(rows: pl.LazyFrame, stats: NodeStats, column: str, expected: tuple) -> tuple[float | None, str]:
    wanted = list(dict.fromkeys(expected))
    values = pl.Series(wanted, dtype=rows.collect_schema()[column], strict=True).to_list()  # checked at compile time
    present = set(rows.select(pl.col(column).filter(pl.col(column).is_in(values)).unique()).collect().to_series())
    missing = [value for value in wanted if value not in present]
    note = f"{len(wanted) - len(missing):,} of {len(wanted):,} expected values"
    if missing:
        more = f" and {len(missing) - SHOWN_MISSING:,} more" if len(missing) > SHOWN_MISSING else ""
        note += f"; missing {', '.join(repr(v) for v in missing[:SHOWN_MISSING])}{more}"
    return (len(wanted) - len(missing)) / len(wanted), note


def margin_share(rows: pl.LazyFrame, stats: NodeStats, column: str, margin: float) -> tuple[float | None, str]:
    if not stats.rows_out:
        return None, "no rows"
    value = pl.col(column).cast(pl.Float64)
    reached = rows.select(((value >= margin) & value.is_not_nan()).sum()).collect().item()
    return reached / stats.rows_out, f"{reached:,} of {stats.rows_out:,} rows"


# -- checking a build's gates ---------------------------------------------------------------------------------
def evaluate(gates: list[Gate], rows: pl.LazyFrame, stats: NodeStats,
             earlier: dict[str, GateResult]) -> list[GateResult]:
    """Check every condition of a node's gates. A measure is taken once per node; one in ``earlier``
    (by key: the results of a previous build on the same stored node) is not taken again."""
    taken = {key: (result.measured, result.note) for key, result in earlier.items()}
    results = []
    for gate in gates:
        for condition in gate.conditions():
            key = digest(condition.measure, 8)  # the measure's code and arguments
            if key not in taken:
                taken[key] = condition.measure(rows, stats)
            results.append(condition.result(stats.name, key, *taken[key], warn=gate.warn))
    return results


class GateKeeper:
    """Checks a node's gates once the executor has it in the store, logs what failed, keeps every result."""

    def __init__(self, gates: dict[str, list[Gate]], store: Store, previous: dict[str, Any] | None,
                 progress: Progress):
        self.gates, self.store, self.progress = gates, store, progress
        self.previous = previous or {"nodes": {}}
        self.results: list[GateResult] = []

    def passes(self, stats: NodeStats) -> bool:
        """Whether what comes after the node may be built."""
        before = self.previous["nodes"].get(stats.name, {})
        same = stats.status == "cached" and before.get("fingerprint") == stats.fingerprint
        earlier = {r.key: r for r in manifest_gates(self.previous) if r.node == stats.name} if same else {}
        found = evaluate(self.gates[stats.name], node_rows(self.store, stats.fingerprint), stats, earlier)
        for result in found:
            if not result.passed:
                self.progress.log(f"[{'warn' if result.warn else 'gate failed'}] {stats.name}: {result.message}")
        self.results += found
        return not any(result.failed for result in found)


def failure_report(failed: list[GateResult], skipped_nodes: list[str], skipped_outputs: list[str]) -> str:
    """One paragraph: every failed condition by node, then what was not built."""
    by_node: dict[str, list[str]] = {}
    for result in failed:
        by_node.setdefault(result.node, []).append(result.message)
    lines = [f"gate failed on node '{node}': {'; '.join(messages)}" for node, messages in by_node.items()]
    skipped = [f"node {', '.join(skipped_nodes)}"] if skipped_nodes else []
    skipped += [f"output {', '.join(skipped_outputs)}"] if skipped_outputs else []
    lines.append(f"Skipped after the failed gate(s): {'; '.join(skipped) or 'nothing'}. Everything else is built "
                 f"and cached: fix the data or the gate, then build again.")
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # NumPy numbers too


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _expected_problems(expected: Any, dtype: pl.DataType) -> list[str]:
    if expected is None:
        return []
    if isinstance(expected, (str, bytes)) or not isinstance(expected, (list, tuple)) or not expected:
        return [f"expected= must be a non-empty list of the values to find, not {expected!r}"]
    if dtype.is_nested():
        return [f"min_coverage counts single values, but the column is {dtype}"]
    if any(value is None or value != value for value in expected):  # NaN is not equal to itself
        return ["expected= holds None or NaN, which is never counted as present; leave it out"]
    try:
        pl.Series(list(expected), dtype=dtype, strict=True)
    except (TypeError, pl.exceptions.PolarsError):
        return [f"expected= holds values that are not {dtype}, the column's type: {list(expected)[:5]!r}"]
    return []
