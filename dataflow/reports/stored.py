"""The build a manifest records, read back from its store: each node's rows (a polars lazy plan),
its rejects, the columns it added and its parameters as values."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from dataflow.records import data_file, node_rows, read_node_meta, reject_constants
from dataflow.store import DATA, REJECTS, Store

NO_ROWS = ("skipped", "not built")  # statuses of nodes with nothing in the store for this build


@dataclass
class StoredBuild:
    manifest: dict[str, Any]
    out: Path
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.store = Store(self.out)

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        return self.manifest["nodes"]

    @property
    def finished(self) -> bool:
        """Whether the build ran to its end (a gate may have stopped part of it)."""
        return self.manifest.get("status") in (None, "ok", "gate_failed")

    def stored(self, name: str) -> bool:
        """Whether the node's rows are in the store for this build."""
        node = self.nodes[name]
        return node["status"] not in NO_ROWS and self.store.has(node["fingerprint"])

    def rows(self, name: str) -> pl.LazyFrame:
        return node_rows(self.store, self.nodes[name]["fingerprint"])

    def data_file(self, name: str) -> Path:
        """The stored file the node's rows are read from (a view's holds the rows it rejected too)."""
        return data_file(self.store, self.nodes[name]["fingerprint"])

    def schema(self, name: str) -> pl.Schema:
        return self.rows(name).collect_schema()

    def output_rows(self, name: str) -> pl.LazyFrame:
        """An output's rows as written for a trainer (read from its own file, so a view's filter is not redone)."""
        return pl.scan_parquet(self.out / self.manifest["outputs"][name]["path"] / DATA)

    def rejects(self, name: str) -> pl.LazyFrame | None:
        """The node's rejects with ``reason``, ``detail`` and ``score`` (a filter's one-value columns filled in)."""
        entry = self.store.entry(self.nodes[name]["fingerprint"])
        if not (entry / REJECTS).exists():
            return None
        filled = {c: pl.lit(value, dtype=pl.Float64 if c == "score" else pl.String)
                  for c, value in self.one_valued_rejects(name).items()}
        return pl.scan_parquet(entry / REJECTS).with_columns(**filled) \
            .select("id", "reason", "detail", pl.col("score").cast(pl.Float64))

    def one_valued_rejects(self, name: str) -> dict[str, Any]:
        """The rejects' columns of ``reason``, ``detail`` and ``score`` that the node stored once, not per row
        (a filter's), with their value."""
        entry = self.store.entry(self.nodes[name]["fingerprint"])
        present = pl.scan_parquet(entry / REJECTS).collect_schema().names()
        constants = reject_constants(entry)
        return {c: constants.get(c) for c in ("reason", "detail", "score") if c not in present}

    def inputs(self, name: str) -> list[str]:
        return list(self.nodes[name]["inputs"])

    def new_columns(self, name: str) -> list[str]:
        """The columns the node added to those of its inputs (every column of a source)."""
        before = {c for i in self.inputs(name) for c in self.nodes[i]["schema"]}
        return [c for c in self.nodes[name]["schema"] if c not in before]

    def family(self, name: str) -> str:
        """The operator family (``core``, ``judging``, ...), from the operator's module."""
        parts = self.nodes[name].get("components", {}).get("op", "").split(".")
        return parts[2] if parts[:2] == ["dataflow", "operators"] and len(parts) > 2 else ""

    def param(self, name: str, key: str) -> Any:
        """A parameter's value as the manifest shows it (its repr), None when absent or not a literal."""
        shown = self.nodes[name].get("params", {}).get(key)
        try:
            return ast.literal_eval(shown) if shown is not None else None
        except (ValueError, SyntaxError):
            return None

    def built_seconds(self, name: str) -> float:
        """How long the node took when it was built (a cached node's earlier build)."""
        node = self.nodes[name]
        if node["status"] != "cached" or not self.store.has(node["fingerprint"]):
            return node["seconds"]
        return read_node_meta(self.store.entry(node["fingerprint"])).get("seconds", 0.0)

    @contextmanager
    def scratch(self) -> Iterator[Path]:
        """A temporary directory in the store, removed after use."""
        path = self.store.begin("report")
        try:
            yield path
        finally:
            self.store.discard(path)

    def outputs(self) -> dict[str, dict[str, Any]]:
        """The outputs this build wrote (a skipped one is not among them)."""
        return {name: spec for name, spec in self.manifest.get("outputs", {}).items()
                if not spec.get("skipped") and (self.out / spec["path"] / DATA).exists()}
