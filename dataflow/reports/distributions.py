"""Distributions the report draws, computed by polars as streaming aggregations over the stored rows (their
range, mean and counts, then bin counts; the median from fine bins, reading only the values of the bin
that holds it), so a million-row node costs a few scans, neither a Python loop nor its values held: the
scores and measures each step added (with the thresholds that later steps apply to them), the lengths of
each output's records, and the values of coverage columns (topics, personas, templates, tiers)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import polars as pl

from dataflow.operators.columns import column_text
from dataflow.reports.stored import StoredBuild

BINS = 30
MEASURED_FAMILIES = ("core", "curation", "rewards")  # whose integer columns are measures (elsewhere: counters)
COVERAGE_NAMES = ("topic", "persona", "template", "scenario", "product", "category", "domain", "skill", "tier",
                  "difficulty", "language", "verifier")
SCALE_DOWN = 2.0 ** -600  # values times this sum without overflow (exact: a power of two)
FINE_BINS = 4096  # the median is looked for in these bins, then among the values of the one holding it
MOST_HELD = 65536  # values of a bin read at once; a bin holding more is binned again
MOST_VALUES = 40  # a coverage chart shows this many values at most; a column with more distinct values is an id
_COMPARISON = re.compile(r'col\("([^"]+)"\)\)?\s*(>=|<=|>|<)\s*\(?(?:dyn \w+: )?(-?\d+(?:\.\d+)?(?:e-?\d+)?)')


@dataclass
class Histogram:
    """Row counts of a numeric column in equal-width bins, with the thresholds applied to it."""

    node: str
    column: str
    bins: list[tuple[float, float, int]]  # (start, end, rows)
    rows: int  # rows with a value
    missing: int  # null, NaN or infinite: unscored, unmeasured, or no value a bin holds
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


def histograms(frame: pl.LazyFrame, node: str, columns: dict[str, pl.Expr], integers: set[str],
               scratch: Path) -> list[Histogram]:
    """Histograms of ``columns`` (label -> numeric expression over ``frame``); integer ranges of up to
    ``BINS`` values, and a column of one value, get one bin per value. Columns with no value are left out.
    Expressions other than stored columns are evaluated once, into a file in ``scratch`` (8 bytes a row
    and column) that the bins and the median are then counted from."""
    if not columns:
        return []
    values = frame.select(**{label: expr.cast(pl.Float64) for label, expr in columns.items()})
    summary = values.select(*[e for label in columns for e in _summary(label)])
    if all(expr.meta.is_column() for expr in columns.values()):  # stored columns: read again, not written
        summary = summary.collect(engine="streaming").row(0, named=True)
    else:
        path = scratch / "values.parquet"
        summary = pl.collect_all([values.sink_parquet(path, lazy=True), summary], engine="streaming")[1] \
            .row(0, named=True)
        values = pl.scan_parquet(path)
    shapes = {}
    for label in columns:
        low, high = summary[f"{label}\0min"], summary[f"{label}\0max"]
        if low is None:
            continue
        if (label in integers and high - low < BINS) or low == high:
            low, width, count = low - 0.5, 1.0, int(high - low) + 1
        else:
            width, count = high / BINS - low / BINS, BINS  # not (high - low) / BINS: that overflows near ±1e308
        shapes[label] = (low, width, count)
    finite = {label: values.select(v=label).filter(pl.col("v").is_finite()) for label in shapes}
    counted = pl.collect_all([  # per bin and fine bin: its rows, least and greatest value
        finite[label].group_by(bin=_bin(low, width, count),
                               fine=_fine(summary[f"{label}\0min"], summary[f"{label}\0max"])).agg(*_held())
        for label, (low, width, count) in shapes.items()], engine="streaming")
    found = []
    for (label, (low, width, count)), table in zip(shapes.items(), counted):
        per_bin = dict(table.group_by("bin").agg(pl.col("n").sum()).iter_rows())
        rows = summary[f"{label}\0rows"]
        found.append(Histogram(node, label, [(edge(low, width, i), edge(low, width, i + 1), per_bin.get(i, 0))
                                             for i in range(count)],
                               rows, summary[f"{label}\0missing"], _mean(summary, label),
                               _median(finite[label], table, rows)))
    return found


def _summary(label: str) -> list[pl.Expr]:
    """A column's least, greatest and mean finite value, its finite values and the others (null, NaN,
    infinite), as streaming aggregations."""
    value = pl.col(label)
    finite = pl.when(value.is_finite()).then(value)
    return [finite.min().alias(f"{label}\0min"), finite.max().alias(f"{label}\0max"),
            finite.mean().alias(f"{label}\0mean"), (finite * SCALE_DOWN).mean().alias(f"{label}\0scaled mean"),
            finite.count().alias(f"{label}\0rows"),
            (value.count() + value.null_count() - finite.count()).alias(f"{label}\0missing")]


def _mean(summary: dict[str, float], label: str) -> float | None:
    """The mean; where summing the values overflows (near ±1e308), the mean of the values scaled down (by a
    power of two, so exactly) and scaled up again."""
    mean = summary[f"{label}\0mean"]
    return mean if mean is None or math.isfinite(mean) else summary[f"{label}\0scaled mean"] / SCALE_DOWN


def edge(low: float, width: float, i: float | pl.Expr) -> float | pl.Expr:
    """Where bin ``i`` starts: ``low + i * width``, halved and doubled (exactly) so that it does not overflow
    near ±1e308."""
    return (low / 2 + i * (width / 2)) * 2


def _bin(low: float, width: float, count: int) -> pl.Expr:
    """The bin of each value: the last one whose start (``edge``) is at most the value, so a value on an edge
    is in the bin it starts."""
    guess = (pl.col("v") / width - low / width).floor().clip(0, count - 1).cast(pl.Int32)  # no overflow
    below = edge(low, width, guess.cast(pl.Float64)) > pl.col("v")
    above = (edge(low, width, (guess + 1).cast(pl.Float64)) <= pl.col("v")) & (guess < count - 1)
    return (guess - below.cast(pl.Int32) + above.cast(pl.Int32)).clip(0, count - 1)


def _fine(low: float, high: float) -> pl.Expr:
    """One of ``FINE_BINS`` equal bins over [low, high], to find the median in: only its order matters."""
    if low == high:
        return pl.lit(0, pl.Int32)
    width = high / FINE_BINS - low / FINE_BINS
    return (pl.col("v") / width - low / width).floor().clip(0, FINE_BINS - 1).cast(pl.Int32)


def _median(values: pl.LazyFrame, table: pl.DataFrame, rows: int) -> float:
    """The median of the ``rows`` values of the column ``v`` of ``values`` (as polars', the mean of the
    middle two of an even count), from their rows, least and greatest value per bin and fine bin."""
    fine = table.group_by("fine").agg(pl.col("n").sum(), pl.col("low").min(), pl.col("high").max()).drop("fine")
    return pl.Series(_ranked(values, fine, sorted({(rows - 1) // 2, rows // 2}))).median()


def _held() -> list[pl.Expr]:
    """A bin's rows, least and greatest value."""
    return [pl.len().alias("n"), pl.col("v").min().alias("low"), pl.col("v").max().alias("high")]


def _ranked(values: pl.LazyFrame, bins: pl.DataFrame, ranks: list[int]) -> list[float]:
    """The values at ``ranks`` (0-based, ascending) in the order of the column ``v`` of ``values``, from
    ``bins``, its rows, least and greatest value per bin: a bin of one value answers at once, a bin of at
    most ``MOST_HELD`` rows is read and sorted, a larger one is binned again."""
    bins = bins.sort("low").with_columns(before=pl.col("n").cum_sum() - pl.col("n"))
    found = []
    for (n, low, high, before), wanted in groupby(ranks, lambda r: bins.filter(pl.col("before") <= r).row(-1)):
        wanted = [r - before for r in wanted]
        inside = values.filter(pl.col("v").is_between(low, high))
        if low == high:
            found += [low] * len(wanted)
        elif n <= MOST_HELD:
            held = inside.collect().get_column("v").sort()
            found += [held[r] for r in wanted]
        else:
            finer = inside.group_by(fine=_fine(low, high)).agg(*_held()).collect(engine="streaming")
            found += _ranked(inside, finer.drop("fine"), wanted)
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
        with build.scratch() as scratch:
            found += histograms(build.rows(name), name, {c: pl.col(c) for c in numeric},
                                {c for c in numeric if schema[c].is_integer()}, scratch)
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
    scores = pl.col(column).cast(pl.Float64).fill_nan(None)  # as the operator reads them: NaN is no score
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
            with build.scratch() as scratch:
                found[name] = histograms(rows, name, columns, integers, scratch)
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
