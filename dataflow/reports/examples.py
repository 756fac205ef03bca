"""The rows the report shows: a seeded sample of each node's rejects per reason with the rejected rows
themselves, the largest duplicate clusters with their members, and a few rows of each output. A filter's
rejects (of one reason) are counted from their file's footer and, like an output's rows, sampled at
seeded row positions, reading only the row groups that hold them; other rejects are counted and sampled
by reason in one scan. The rejected rows are looked up by id, in the row groups whose id range holds them."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.operators.columns import column_text
from dataflow.reports.stored import StoredBuild

PER_REASON = 3  # sampled rejects shown per reason
MOST_REASONS = 20  # reasons shown per node, most frequent first
CLUSTERS = 8  # duplicate clusters shown per dedup node, largest first
MEMBERS = 4  # members shown per cluster, the survivor first
TEXT_CHARS = 400  # a shown value is cut here
SEED = 17
DUPLICATE = '{"duplicate_of"'  # how the detail of a dedup step's reject starts


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
        reasons = _reasons(build, name, rejects)
        left_out[name] = max(len(reasons) - MOST_REASONS, 0)
        tables[name] = reasons[:MOST_REASONS]
    rows = source_rows(build, {name: [e["id"] for _, _, es in t for e in es] for name, t in tables.items()})
    groups = [RejectGroup(name, reason or "", count, [{**e, "row": rows[name].get(e["id"])} for e in examples])
              for name, table in tables.items() for reason, count, examples in table]
    return groups, left_out


def _reasons(build: StoredBuild, name: str, rejects: pl.LazyFrame) -> list[tuple[str | None, int, list[dict]]]:
    """(reason, count, sampled rejects) of a node, most frequent first. A node with one reason (a filter)
    is counted from its file's footer and sampled at seeded positions; others are grouped by reason, each
    sampled by a seeded hash of the ids and shown in id order."""
    shown = rejects.select("id", "detail", "score")
    if "reason" in (one := build.one_valued_rejects(name)):
        count = shown.select(pl.len()).collect().item()
        return [(one["reason"], count, sampled(shown, PER_REASON).to_dicts())] if count else []
    sample = pl.struct("id", "detail", "score").bottom_k_by(pl.col("id").hash(SEED), PER_REASON)  # in no set order
    table = rejects.group_by("reason").agg(pl.len().alias("n"), sample.alias("examples")) \
        .sort(["n", "reason"], descending=[True, False]).collect()
    return [(reason, n, sorted(shown, key=lambda e: e["id"])) for reason, n, shown in table.iter_rows()]


def sampled(frame: pl.LazyFrame, k: int) -> pl.DataFrame:
    """``k`` rows of ``frame`` (a Parquet scan) at seeded positions (every row as likely; the same rows, the
    same sample), in their order, each read by itself, so only the row groups that hold them are decoded."""
    rows = frame.select(pl.len()).collect().item()
    positions = sorted(random.Random(SEED).sample(range(rows), min(k, rows)))
    return pl.concat([frame.head(0), *[frame.slice(p, 1) for p in positions]]).collect()


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
    the removed rows side by side as the text the step compared. A node whose rejects have one detail
    that names no duplicate (a filter's) is not scanned."""
    clusters = []
    for name, node in build.nodes.items():
        rejects = build.rejects(name) if node["rejected"] and build.stored(name) else None
        if rejects is None or not (build.one_valued_rejects(name).get("detail", DUPLICATE) or "").startswith(DUPLICATE):
            continue
        survivor = pl.col("detail").str.json_path_match("$.duplicate_of")
        largest = rejects.filter(pl.col("detail").str.starts_with(DUPLICATE)) \
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
    """The text a dedup step compared for each row id: its ``column``, or its ``columns`` joined by " | ", with
    only the turns of its ``roles`` in a conversation; else the whole row."""
    column = build.param(name, "column")
    columns = [column] if column else list(build.param(name, "columns") or [])
    roles = tuple(build.param(name, "roles") or ())
    upstream = build.inputs(name)[0]
    if not build.stored(upstream):
        return {}
    rows = build.rows(upstream).filter(pl.col("id").is_in(ids))
    schema = rows.collect_schema()
    if columns and all(c in schema for c in columns):
        compared = pl.concat_str([column_text(c, schema[c], roles).fill_null("") for c in columns], separator=" | ")
        table = rows.select("id", compared.alias("text")).collect()
        return {i: cut(t or "") for i, t in table.iter_rows()}
    return {row["id"]: cut(" | ".join(shown_fields(row).values())) for row in rows.collect().iter_rows(named=True)}


def output_samples(build: StoredBuild, per_output: int = 3) -> dict[str, list[dict[str, str]]]:
    """A few rows of each output, seeded, as shown text per field."""
    return {name: [shown_fields(row) for row in sampled(build.output_rows(name), per_output).iter_rows(named=True)]
            for name in build.outputs()}
