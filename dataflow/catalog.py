"""DuckDB views over a build: every node, every output, ``rejects`` (with the run that made each),
``runs`` (with each run's parameters), ``nodes`` (with ``metrics`` as a struct), ``edges`` (the DAG),
``gates`` and ``rounds`` (every ``dataflow iterate`` loop's rounds in the folder). A node or output that a
failed gate skipped has no view."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import duckdb
import polars as pl

from dataflow.errors import DataflowError
from dataflow.operator import REJECTS_SCHEMA
from dataflow.records import LLM_COST, MANIFEST, manifest_gates, read_manifest, read_runs, reject_constants, round_rows
from dataflow.store import DATA, REJECTS

SQL_TYPES = {pl.String(): "VARCHAR", pl.Float64(): "DOUBLE"}
REJECTS_COLUMNS = {column: SQL_TYPES[dtype] for column, dtype in REJECTS_SCHEMA.items()}
REJECTS_EMPTY = "SELECT " + ", ".join(f"NULL::{t} AS {c}"
                                      for c, t in {**REJECTS_COLUMNS, "run_id": "VARCHAR"}.items()) + " WHERE false"
NODE_COLUMNS = ("name", "op", "status", "inputs", "rows_in", "rows_out", "rejected", "seconds", "reason", "fingerprint",
                "run_id")
GATES_SCHEMA = {"node": pl.String, "condition": pl.String, "key": pl.String, "measured": pl.Float64, "note": pl.String,
                "bound": pl.Float64, "passed": pl.Boolean, "warn": pl.Boolean, "message": pl.String}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _constant(value: str | None, sql_type: str, column: str) -> str:
    return f"{'NULL' if value is None else _literal(value)}::{sql_type} AS {column}"


def _rejects_select(name: str, entry: Path, run_id: str | None) -> str:
    """One node's rejects in the common columns and the id of the run that built the node; a filter
    stores its one-value columns in meta.json. ``node`` is the node's name in this build (the stored
    rejects name the node of the build that made them, which may be another pipeline's)."""
    constants = {**reject_constants(entry), "node": name}
    columns = [_constant(constants[c], t, c) if c in constants else f"{c}::{t} AS {c}"
               for c, t in REJECTS_COLUMNS.items()]
    return f"SELECT {', '.join(columns)}, {_constant(run_id, 'VARCHAR', 'run_id')} " \
           f"FROM read_parquet({_literal(entry / REJECTS)})"


def connect(out: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views on the latest build in ``out`` (only ``rounds`` when
    ``out`` holds loops but no build of its own)."""
    out = Path(out)
    con = duckdb.connect()
    rounds = pl.DataFrame(round_rows(out), schema=ROUNDS_SCHEMA, strict=False)
    con.register("rounds", rounds.to_arrow())
    if rounds.height and not (out / MANIFEST).exists():
        return con
    manifest = read_manifest(out)
    nodes = manifest["nodes"]
    rejects = []
    for name, node in nodes.items():
        if node["status"] == "skipped":
            continue
        entry = out / node["store"]
        if (entry / REJECTS).exists():
            rejects.append(_rejects_select(name, entry, node.get("run_id")))
        if not (entry / DATA).exists():  # a view (a filter): its input minus its rejects
            parent = node["inputs"][0]
            con.execute(f"CREATE VIEW {_quote(name)} AS SELECT * FROM {_quote(parent)} WHERE id NOT IN "
                        f"(SELECT id FROM read_parquet({_literal(entry / REJECTS)}))")
        else:
            con.execute(f"CREATE VIEW {_quote(name)} AS SELECT * FROM read_parquet({_literal(entry / DATA)})")
    for name, spec in manifest["outputs"].items():
        if name not in nodes and not spec.get("skipped"):
            con.execute(f"CREATE VIEW {_quote(name)} AS SELECT * FROM read_parquet({_literal(out / name / DATA)})")
    con.execute(f"CREATE VIEW rejects AS {' UNION ALL '.join(rejects) or REJECTS_EMPTY}")
    con.register("runs", _runs(out).to_arrow())
    con.register("nodes", _nodes(nodes).to_arrow())
    con.register("edges", _edges(nodes).to_arrow())
    gates = pl.DataFrame([asdict(r) for r in manifest_gates(manifest)], schema=GATES_SCHEMA, strict=False)
    con.register("gates", gates.to_arrow())
    return con


def case_notes(out: Path, wanted: Callable[[str], bool]) -> list[str]:
    """A note for each ``wanted`` stored node or output of the latest build whose columns differ only in case:
    DuckDB ignores case in names, so its views give such columns other names (``"A"`` in a query means ``a``)."""
    out = Path(out)
    if not (out / MANIFEST).exists():
        return []
    manifest = read_manifest(out)
    nodes = manifest["nodes"]
    files = {name: out / node["store"] / DATA for name, node in nodes.items() if node["status"] != "skipped"}
    files |= {name: out / name / DATA for name, spec in manifest["outputs"].items() if not spec.get("skipped")}
    notes = []
    for name, path in files.items():
        if not wanted(name) or not path.exists():
            continue
        columns = list(pl.read_parquet_schema(path))
        if len({c.lower() for c in columns}) == len(columns):
            continue
        named = [row[0] for row in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet({_literal(path)})").fetchall()]
        renamed = ", ".join(f"{c} as {d}" for c, d in zip(columns, named) if c != d)
        notes.append(f"note: '{name}' has columns whose names differ only in case; in queries {renamed} (DuckDB "
                     f"ignores case in names). Rename one in the pipeline to keep its name.")
    return notes


def _nodes(nodes: dict[str, dict]) -> pl.DataFrame:
    """One row per node; ``metrics`` a struct of every metric any node reported and of the LLM cost metrics
    (null where a node has none), so ``metrics.llm_calls`` can be asked of any build."""
    rows = [{k: node.get(k) for k in NODE_COLUMNS} for node in nodes.values()]
    table = pl.DataFrame(rows, schema_overrides={"inputs": pl.List(pl.String), "run_id": pl.String}, strict=False,
                         infer_schema_length=None)
    metrics = pl.Series("metrics", [{**dict.fromkeys(LLM_COST), **(node.get("metrics") or {})}
                                    for node in nodes.values()], strict=False)
    return table.with_columns(metrics)


def _edges(nodes: dict[str, dict]) -> pl.DataFrame:
    """The DAG: one row per input of a node, ``upstream`` feeding ``node`` as its input number ``position``."""
    rows = [{"upstream": upstream, "node": name, "position": i}
            for name, node in nodes.items() for i, upstream in enumerate(node["inputs"])]
    return pl.DataFrame(rows, schema={"upstream": pl.String, "node": pl.String, "position": pl.Int32})


def _runs(out: Path) -> pl.DataFrame:
    """The build history, one row per attempt, ``params`` a struct of the parameters it ran with (null for
    runs recorded without them)."""
    runs = read_runs(out)
    table = pl.DataFrame([{k: v for k, v in run.items() if k != "params"} for run in runs], strict=False,
                         infer_schema_length=None)
    return table.with_columns(pl.Series("params", [run.get("params") for run in runs], strict=False))


ROUNDS_SCHEMA = {"loop": pl.String, "pipeline": pl.String, "settings": pl.String, "train_on": pl.String,
                 "metric": pl.String, "round": pl.Int64, "model": pl.String, "generated_by": pl.String,
                 "data_rows": pl.Int64, "trained_rows": pl.Int64, "value": pl.Float64,
                 "ci_low": pl.Float64, "ci_high": pl.Float64, "gain": pl.Float64, "kept": pl.Boolean,
                 "model_calls": pl.Int64, "generation_s": pl.Float64, "verification_s": pl.Float64,
                 "training_s": pl.Float64, "evaluation_s": pl.Float64, "round_s": pl.Float64}


def nodes_table(out: Path) -> pl.DataFrame:
    """The DAG of the latest build as a table: each node's name, operator, inputs and status, with its rows."""
    return query(out, "SELECT name, op AS operator, array_to_string(inputs, ', ') AS inputs, status, rows_in, "
                      "rows_out, rejected FROM nodes")


def query(out: Path, sql: str) -> pl.DataFrame:
    con = connect(out)
    try:
        relation = con.sql(sql)
    except duckdb.Error as exc:
        views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
        raise DataflowError(f"query failed: {str(exc).strip()}\nAvailable views: {', '.join(sorted(views))}") from exc
    if relation is None:
        raise DataflowError("the query returns no rows: give a SELECT (or another statement with a result), "
                            "e.g. \"select * from nodes\"")
    try:
        return relation.pl()
    except (duckdb.Error, pl.exceptions.PolarsError) as exc:
        types = ", ".join(f"{name} {kind}" for name, kind in zip(relation.columns, relation.types))
        raise DataflowError(f"a column of the result cannot be read ({str(exc).splitlines()[0]}); its columns: "
                            f"{types}. Cast that one to VARCHAR in the query, e.g. select x::VARCHAR") from exc
