"""Distributions the report draws, computed by polars over the stored rows (the values, their range, then
bin counts), so a million-row node costs a scan, not a Python loop: the scores and measures each step
added (with the thresholds that later steps apply to them), the lengths of each output's records, and
the values of coverage columns (topics, personas, templates, tiers)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import polars as pl

from dataflow.operators.text import column_text
from dataflow.reports.stored import StoredBuild

BINS = 30
MEASURED_FAMILIES = ("core", "curation", "rewards")  # whose integer columns are measures (elsewhere: counters)
COVERAGE_NAMES = ("topic", "persona", "template", "scenario", "product", "category", "domain", "skill", "tier",
                  "difficulty", "language", "verifier")
MOST_VALUES = 40  # a coverage chart shows this many values at most; a column with more distinct values is an id
_COMPARISON = re.compile(r'col\("([^"]+)"\)\)?\s*(>=|<=|>|<)\s*\(?(?:dyn \w+: )?(-?\d+(?:\.\d+)?(?:e-?\d+)?)')


@dataclass
class Histogram:
    """Row counts of a numeric column in equal-width bins, with the thresholds applied to it."""

    node: str
    column: str
    bins: list[tuple[float, float, int]]  # (start, end, rows)
    rows: int  # rows with a value
    missing: int  # null or NaN: unscored, unmeasured
    mean: float | None
    median: float | None
    marks: list[tuple[str, float]] = field(default_factory=list)  # (label, value), e.g. ("pyramid top", 4.1)

    @property
    def key(self) -> str:
        return f"{self.node}.{self.column}"


@dataclass
class Coverage:
    """How many rows of a node hold each value of a column, most frequent first."""

    node: str
    column: str
    counts: list[tuple[str, int]]
    distinct: int


def histograms(frame: pl.LazyFrame, node: str, columns: dict[str, pl.Expr], integers: set[str]) -> list[Histogram]:
    """Histograms of ``columns`` (label -> numeric expression over ``frame``); integer ranges of up to
    ``BINS`` values, and a column of one value, get one bin per value. Columns with no value are left out."""
    if not columns:
        return []
    # the values once (8 bytes a row and column), then their range, then the bins
    values = frame.select(**{label: expr.cast(pl.Float64) for label, expr in columns.items()}) \
        .collect(engine="streaming").lazy()
    finite = {label: pl.col(label).filter(pl.col(label).is_finite()) for label in columns}
    summary = values.select(*[e for label, v in finite.items() for e in (
        v.min().alias(f"{label}\0min"), v.max().alias(f"{label}\0max"), v.mean().alias(f"{label}\0mean"),
        v.median().alias(f"{label}\0median"), v.count().alias(f"{label}\0rows"))],
        *[(pl.col(label).is_null() | pl.col(label).is_nan()).sum().alias(f"{label}\0missing") for label in columns],
    ).collect().row(0, named=True)
    shapes = {}
    for label in columns:
        low, high = summary[f"{label}\0min"], summary[f"{label}\0max"]
        if low is None:
            continue
        if (label in integers and high - low < BINS) or low == high:
            low, width, count = low - 0.5, 1.0, int(high - low) + 1
        else:
            width, count = (high - low) / BINS, BINS
        shapes[label] = (low, width, count)
    counted = pl.collect_all([
        values.select(((finite[label] - low) / width).floor().clip(0, count - 1).cast(pl.Int32).alias("bin"))
        .group_by("bin").len() for label, (low, width, count) in shapes.items()])
    found = []
    for (label, (low, width, count)), table in zip(shapes.items(), counted):
        per_bin = dict(table.iter_rows())
        found.append(Histogram(node, label, [(low + i * width, low + (i + 1) * width, per_bin.get(i, 0))
                                             for i in range(count)],
                               summary[f"{label}\0rows"], summary[f"{label}\0missing"],
                               summary[f"{label}\0mean"], summary[f"{label}\0median"]))
    return found


def score_histograms(build: StoredBuild) -> list[Histogram]:
    """Each step's new scores and measures (judge scores, rewards, margins, pass rates, lengths a
    ``map`` computed), with the thresholds later steps apply to them drawn as marks."""
    found = []
    for name in build.nodes:
        added = build.new_columns(name)
        if not added or not build.inputs(name) or not build.stored(name):
            continue
        schema = build.schema(name)
        numeric = [c for c in added if c in schema and schema[c].is_numeric()
                   and (schema[c].is_float() or build.family(name) in MEASURED_FAMILIES)]
        found += histograms(build.rows(name), name, {c: pl.col(c) for c in numeric},
                            {c for c in numeric if schema[c].is_integer()})
    marks = thresholds(build)
    for h in found:
        h.marks = marks.get(h.column, [])
    return found


def thresholds(build: StoredBuild) -> dict[str, list[tuple[str, float]]]:
    """column -> (label, value) for every threshold a step applies: a filter comparing the column with a
    number, a preference pairing's least margin, a pass rate's reward threshold, the pyramid's tier minimums."""
    marks: dict[str, list[tuple[str, float]]] = {}
    for name, node in build.nodes.items():
        op = node["op"]
        if op == "Filter":
            for column, relation, value in _COMPARISON.findall(node.get("params", {}).get("predicate", "")):
                marks.setdefault(column, []).append((f"{name}: {relation} {value}", float(value)))
        elif op == "PreferencePairs" and build.param(name, "min_margin"):
            marks.setdefault("margin", []).append((f"{name}: min_margin", float(build.param(name, "min_margin"))))
        elif op == "PassRate" and build.param(name, "threshold") is not None:
            column = build.param(name, "reward") or "reward"
            marks.setdefault(column, []).append((f"{name}: a pass", float(build.param(name, "threshold"))))
        elif op == "PyramidSample" and isinstance(build.param(name, "score"), str) and build.stored(name):
            column = build.param(name, "score")
            for tier, value in tier_minimums(build, name, column).items():
                marks.setdefault(column, []).append((f"pyramid {tier}", value))
    return marks


def tier_minimums(build: StoredBuild, name: str, column: str) -> dict[str, float]:
    """The least score of each pyramid tier: its thresholds, or its quantiles of the scores it was given."""
    given = build.param(name, "thresholds")
    if isinstance(given, dict):
        return {tier: float(v) for tier, v in given.items() if v is not None}
    quantiles = build.param(name, "quantiles")
    if not isinstance(quantiles, dict) or not build.inputs(name) or not build.stored(build.inputs(name)[0]):
        return {}
    scores = pl.col(column).cast(pl.Float64)
    row = build.rows(build.inputs(name)[0]).select(
        **{tier: scores.quantile(q, "nearest") for tier, q in quantiles.items() if q is not None}).collect()
    return {tier: value for tier, value in row.row(0, named=True).items() if value is not None}


# -- the lengths of each output's records -------------------------------------------------------------
TEXTS = {  # record schema -> label -> (column, roles of the turns counted; () = all)
    "sft": {"prompt words": ("messages", ("system", "user")), "response words": ("messages", ("assistant",))},
    "conversation": {"prompt words": ("messages", ("system", "user")), "response words": ("messages", ("assistant",))},
    "preference": {"prompt words": ("prompt", ()), "chosen words": ("chosen", ("assistant",)),
                   "rejected words": ("rejected", ("assistant",))},
    "prompt": {"prompt words": ("prompt", ("system", "user"))},
}
TURNS = {"sft": "messages", "conversation": "messages"}
SCORES = {"preference": "margin", "prompt": "pass_rate"}  # the score each kind of set is chosen by


def output_histograms(build: StoredBuild) -> dict[str, list[Histogram]]:
    """Per output with a record schema: words of the prompt and response texts, turns of a conversation,
    and the preference margin or the GRPO pass rate."""
    found = {}
    for name, spec in build.outputs().items():
        schema_name, rows = spec.get("schema"), build.output_rows(name)
        schema = rows.collect_schema()
        columns = {label: _words(column_text(column, schema[column], roles))
                   for label, (column, roles) in TEXTS.get(schema_name, {}).items() if column in schema}
        integers = set(columns)
        if TURNS.get(schema_name) in schema:
            columns["turns"] = pl.col(TURNS[schema_name]).list.len()
            integers.add("turns")
        if SCORES.get(schema_name) in schema:
            columns[SCORES[schema_name]] = pl.col(SCORES[schema_name])
        if columns:
            found[name] = histograms(rows, name, columns, integers)
    return found


def _words(text: pl.Expr) -> pl.Expr:
    return text.str.count_matches(r"\S+")


# -- coverage ----------------------------------------------------------------------------------------------
def is_coverage_column(column: str) -> bool:
    """Whether a column names what a set should cover: a topic, persona, template, tier, source, ..."""
    words = column.lower().split("_")
    return any(name in words or f"{name}s" in words for name in COVERAGE_NAMES)


def coverage(build: StoredBuild) -> list[Coverage]:
    """Rows per value of each coverage column, at each output and each node with a coverage gate."""
    sites = {name: build.output_rows(name) for name in build.outputs()}
    gated = [r["node"] for r in build.manifest.get("gates", []) if r["condition"] == "min_coverage"]
    sites |= {name: build.rows(name) for name in gated if build.stored(name)}
    found = []
    for name, rows in sites.items():
        columns = [c for c, t in rows.collect_schema().items() if is_coverage_column(c) and t == pl.String()]
        queries = [rows.group_by(c).len().sort(["len", c], descending=[True, False], nulls_last=True)
                   for c in columns]
        for column, table in zip(columns, pl.collect_all(queries)):
            if table.height <= MOST_VALUES:
                found.append(Coverage(name, column, [("(null)" if v is None else v, n) for v, n in table.iter_rows()],
                                      table.height))
    return found
