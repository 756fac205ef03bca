"""DuckDB views over a build: every node, every output, ``rejects``, ``runs``, ``nodes`` and ``gates``.
A node or output that a failed gate skipped has no view."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import duckdb
import polars as pl

from dataflow.errors import DataflowError
from dataflow.operator import REJECTS_SCHEMA
from dataflow.records import manifest_gates, read_manifest, reject_constants, runs_path
from dataflow.store import DATA, REJECTS

SQL_TYPES = {pl.String(): "VARCHAR", pl.Float64(): "DOUBLE"}
REJECTS_COLUMNS = {column: SQL_TYPES[dtype] for column, dtype in REJECTS_SCHEMA.items()}
REJECTS_EMPTY = "SELECT " + ", ".join(f"NULL::{t} AS {c}" for c, t in REJECTS_COLUMNS.items()) + " WHERE false"
GATES_SCHEMA = {"node": pl.String, "condition": pl.String, "key": pl.String, "measured": pl.Float64, "note": pl.String,
                "bound": pl.Float64, "passed": pl.Boolean, "warn": pl.Boolean, "message": pl.String}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _rejects_select(entry: Path) -> str:
    """One node's rejects in the common columns; a filter stores its one-value columns in meta.json."""
    constants = reject_constants(entry)
    columns = [f"{'NULL' if constants[c] is None else _literal(constants[c])}::{t} AS {c}" if c in constants
               else f"{c}::{t} AS {c}" for c, t in REJECTS_COLUMNS.items()]
    return f"SELECT {', '.join(columns)} FROM read_parquet({_literal(entry / REJECTS)})"


def connect(out: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views on the latest build in ``out``."""
    out = Path(out)
    manifest = read_manifest(out)
    con = duckdb.connect()
    nodes = manifest["nodes"]
    rejects = []
    for name, node in nodes.items():
        if node["status"] == "skipped":
            continue
        entry = out / node["store"]
        if (entry / REJECTS).exists():
            rejects.append(_rejects_select(entry))
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
    con.execute(f"CREATE VIEW runs AS SELECT * FROM read_json_auto({_literal(runs_path(out))})")
    table = pl.DataFrame([{k: node.get(k) for k in ("name", "op", "status", "rows_in", "rows_out", "rejected",
                                                    "seconds", "reason", "fingerprint")}
                           | {"metrics": json.dumps(node.get("metrics") or {})}
                          for node in nodes.values()])
    con.register("nodes", table.to_arrow())
    gates = pl.DataFrame([asdict(r) for r in manifest_gates(manifest)], schema=GATES_SCHEMA, strict=False)
    con.register("gates", gates.to_arrow())
    return con


def query(out: Path, sql: str) -> pl.DataFrame:
    con = connect(out)
    try:
        return con.sql(sql).pl()
    except duckdb.Error as exc:
        views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
        raise DataflowError(f"query failed: {str(exc).splitlines()[0]}. Available views: "
                            f"{', '.join(sorted(views))}") from exc
