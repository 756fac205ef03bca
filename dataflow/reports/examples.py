"""The rows the report shows: a seeded sample of each node's rejects per reason with the rejected rows
themselves, the largest duplicate clusters with their members, and a few rows of each output. Counts are
polars aggregates over the stored rejects, so a node with millions of rejects costs a scan and shows a
sample."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operators.text import column_text
from dataflow.reports.stored import StoredBuild

PER_REASON = 3  # sampled rejects shown per reason
MOST_REASONS = 20  # reasons shown per node, most frequent first
CLUSTERS = 8  # duplicate clusters shown per dedup node, largest first
MEMBERS = 4  # members shown per cluster, the survivor first
TEXT_CHARS = 400  # a shown value is cut here
SEED = 17


@dataclass
class RejectGroup:
    node: str
    reason: str
    count: int
    examples: list[dict[str, Any]]  # {"id", "detail", "score", "row": the rejected row's fields or None}


@dataclass
class Cluster:
    node: str
    size: int  # the survivor and every row removed as its duplicate
    members: list[tuple[str, str, str]]  # (id, "kept" or "removed", text)


def reject_groups(build: StoredBuild) -> tuple[list[RejectGroup], dict[str, int]]:
    """Per node and reason, most frequent first: the count and a seeded sample of the rejects with the
    rows they came from; and per node, how many reasons are left out."""
    tables, left_out = {}, {}
    for name, node in build.nodes.items():
        rejects = build.rejects(name) if node["rejected"] and build.stored(name) else None
        if rejects is None:
            continue
        sample = pl.struct("id", "detail", "score").bottom_k_by(pl.col("id").hash(SEED), PER_REASON)
        table = rejects.group_by("reason").agg(pl.len().alias("n"), sample.alias("examples")) \
            .sort(["n", "reason"], descending=[True, False]).collect()
        left_out[name] = max(table.height - MOST_REASONS, 0)
        tables[name] = table.head(MOST_REASONS)
    rows = source_rows(build, {name: [e["id"] for es in t["examples"] for e in es] for name, t in tables.items()})
    groups = [RejectGroup(name, reason or "", count, [{**e, "row": rows[name].get(e["id"])} for e in examples])
              for name, table in tables.items() for reason, count, examples in table.iter_rows()]
    return groups, left_out


def source_rows(build: StoredBuild, wanted: dict[str, list[str]]) -> dict[str, dict[str, dict[str, str]]]:
    """For each node, the rows with its wanted ids among its inputs, each as shown text per field. They are
    looked up in the stored files the inputs are read from, every node's ids at once: a chain of filters
    over one file costs one scan of it."""
    files = {(name, upstream): build.data_file(upstream) for name, ids in wanted.items() if ids
             for upstream in build.inputs(name) if build.stored(upstream)}
    ids_by_file: dict[Any, set[str]] = {}
    for (name, _), path in files.items():
        ids_by_file.setdefault(path, set()).update(wanted[name])
    rows = {path: {row["id"]: shown_fields(row) for row in pl.scan_parquet(path).filter(pl.col("id").is_in(sorted(ids)))
                   .collect().iter_rows(named=True)} for path, ids in ids_by_file.items()}
    found: dict[str, dict[str, dict[str, str]]] = {name: {} for name in wanted}
    for (name, _), path in files.items():
        for i in wanted[name]:
            if i in rows[path]:
                found[name].setdefault(i, rows[path][i])
    return found


def shown_fields(row: dict[str, Any]) -> dict[str, str]:
    """A row's fields other than ``id`` as text: conversations as "role: content" lines, nested values as JSON,
    each cut at ``TEXT_CHARS``."""
    return {key: cut(as_text(value)) for key, value in row.items() if key != "id"}


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(t, dict) and {"role", "content"} <= set(t) for t in value):
        return "\n".join(f"{t['role']}: {t['content']}" for t in value)
    return json.dumps(value, default=str, ensure_ascii=False)


def cut(text: str, limit: int = TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def duplicate_clusters(build: StoredBuild) -> list[Cluster]:
    """The largest clusters of each dedup step (its rejects name the row they duplicate), the survivor and
    the removed rows side by side as the text the step compared."""
    clusters = []
    for name, node in build.nodes.items():
        rejects = build.rejects(name) if node["rejected"] and build.stored(name) else None
        if rejects is None:
            continue
        survivor = pl.col("detail").str.json_path_match("$.duplicate_of")
        largest = rejects.filter(pl.col("detail").str.starts_with('{"duplicate_of"')) \
            .group_by(survivor.alias("survivor")).agg(pl.len().alias("n"), pl.col("id").sort().head(MEMBERS - 1)) \
            .sort(["n", "survivor"], descending=[True, False]).head(CLUSTERS).collect()
        if not largest.height:
            continue
        texts = _compared_texts(build, name, [*largest["survivor"], *largest["id"].explode()])
        for kept, removed, members in largest.iter_rows():
            clusters.append(Cluster(name, removed + 1, [(kept, "kept", texts.get(kept, "")),
                                                        *[(m, "removed", texts.get(m, "")) for m in members]]))
    return clusters


def _compared_texts(build: StoredBuild, name: str, ids: list[str]) -> dict[str, str]:
    """The text a dedup step compared for each row id: its ``column`` (or first of ``columns``), else the row."""
    column = build.param(name, "column") or (build.param(name, "columns") or [None])[0]
    upstream = build.inputs(name)[0]
    if not build.stored(upstream):
        return {}
    rows = build.rows(upstream).filter(pl.col("id").is_in(ids))
    schema = rows.collect_schema()
    if column in schema:
        table = rows.select("id", column_text(column, schema[column]).alias("text")).collect()
        return {i: cut(t or "") for i, t in table.iter_rows()}
    return {row["id"]: cut(" | ".join(shown_fields(row).values())) for row in rows.collect().iter_rows(named=True)}


def output_samples(build: StoredBuild, per_output: int = 3) -> dict[str, list[dict[str, str]]]:
    """A few rows of each output, seeded, as shown text per field (the ids picked first, so only their rows
    are read whole)."""
    key = pl.col("id").hash(SEED)
    samples = {}
    for name in build.outputs():
        rows = build.output_rows(name)
        ids = rows.select(pl.col("id").bottom_k_by(key, per_output)).collect().get_column("id")
        picked = rows.filter(pl.col("id").is_in(ids.implode())).sort(key).collect()
        samples[name] = [shown_fields(row) for row in picked.iter_rows(named=True)]
    return samples
