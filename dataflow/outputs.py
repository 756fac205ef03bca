"""Declared outputs under ``<out>/<name>/``: the data, a dataset card and the fingerprint."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from dataflow.compiler import CompiledPipeline
from dataflow.records import NodeStats, node_rows
from dataflow.store import DATA, Store, now

FINGERPRINT_FILE = ".fingerprint"


def write_output(store: Store, compiled: CompiledPipeline, name: str, stats: dict[str, NodeStats]) -> bool:
    """Materialize output ``name``; returns False when it was already up to date (its node was
    found in the store, as this output shows it: a node built again, by ``--rebuild`` or to retry
    failed requests, may hold other rows under the same fingerprint)."""
    node = stats[compiled.outputs[name].node]
    target = store.out / name
    marker = target / FINGERPRINT_FILE
    if node.status == "cached" and marker.exists() and marker.read_text() == node.fingerprint:
        return False
    tmp = store.tmp / f"out-{name}.{os.getpid()}.{secrets.token_hex(4)}"
    tmp.mkdir(parents=True)
    stored = store.entry(node.fingerprint) / DATA
    if stored.exists():
        _link_or_copy(stored, tmp / DATA)
    else:  # a view: write its rows
        node_rows(store, node.fingerprint).sink_parquet(tmp / DATA, compression="zstd")
    (tmp / "README.md").write_text(dataset_card(compiled, name, stats))
    (tmp / FINGERPRINT_FILE).write_text(node.fingerprint)
    store.move_into_place(tmp, target)
    return True


def withdraw_output(store: Store, name: str) -> None:
    """Remove output ``name`` from the output folder: a gate held it back, and what an earlier
    build wrote there must not pass for this build's data."""
    target = store.out / name
    if target.exists():
        gone = store.tmp / f"withdrawn-{name}.{os.getpid()}.{secrets.token_hex(4)}"
        gone.parent.mkdir(parents=True, exist_ok=True)
        target.rename(gone)
        shutil.rmtree(gone, ignore_errors=True)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _lineage(compiled: CompiledPipeline, name: str) -> list[str]:
    """The node and its ancestors, sources first."""
    seen: list[str] = []

    def visit(n: str) -> None:
        for ref in compiled.nodes[n].inputs:
            visit(ref)
        if n not in seen:
            seen.append(n)

    visit(name)
    return seen


def dataset_card(compiled: CompiledPipeline, name: str, stats: dict[str, NodeStats]) -> str:
    spec = compiled.outputs[name]
    node_name, node = spec.node, stats[spec.node]
    pipeline = compiled.pipeline
    lines = [
        f"# {name}", "",
        f"Output `{name}` of the dataflow pipeline `{pipeline.name}` (node `{node_name}`), "
        f"built {now()}.", "",
        pipeline.description, "",
        f"- rows: {node.rows_out:,}",
        *([f"- records: `{spec.schema}` (see `dataflow.schemas`)"] if spec.schema else []),
        f"- fingerprint: `{node.fingerprint}`",
        f"- parameters: {', '.join(f'{k}={v!r}' for k, v in pipeline.params.items()) or 'none'}", "",
        "## Columns", "", "| column | type |", "| --- | --- |",
        *[f"| {col} | {dtype} |" for col, dtype in node.schema.items()], "",
        "## How it was made", "", "| step | operator | rows in | rows out | rejected |",
        "| --- | --- | --- | --- | --- |",
    ]
    for step in _lineage(compiled, node_name):
        s = stats[step]
        rows_in = "" if s.rows_in is None else f"{s.rows_in:,}"
        lines.append(f"| {step} | {s.op} | {rows_in} | {s.rows_out:,} | {s.rejected:,} |")
    lines += ["", "## Load it", "", "```python",
              "import polars as pl",
              f'df = pl.read_parquet("{name}/{DATA}")',
              "from datasets import load_dataset",
              f'ds = load_dataset("parquet", data_files="{name}/{DATA}", split="train")',
              "```", "",
              "Rejected rows of every step: `dataflow query \"select * from rejects\"`.", ""]
    return "\n".join(lines)
