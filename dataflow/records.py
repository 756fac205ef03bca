"""What a build recorded, in one place: node plans and stats, each stored node's ``meta.json``, the
manifest of a build (nodes, outputs with their record schema, gate results, parameters, versions)
and the run history. The executors, the catalog, the CLI, the reports and the training command read
and write build records only through this module.

Files, under ``<out>/``: ``manifest.json`` (the latest build), ``.dataflow/builds/<pipeline>.json``
(the latest build of each pipeline, for "why is this rebuilt"), ``.dataflow/runs.jsonl`` (one line
per build attempt), ``.dataflow/cache/<fingerprint>/meta.json`` (one per stored node).
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import polars as pl

from dataflow.errors import DataflowError
from dataflow.store import DATA, META, REJECTS, Store, now

MANIFEST = "manifest.json"
RUNS = "runs.jsonl"
STOPPED = "stopped_manifest.json"  # in .dataflow/: what the last build that stopped early left, for its report
LOOPS = "rounds"  # <out>/rounds/<loop>/: the loops of `dataflow iterate` (trainers/rounds.py)
ROUNDS_RECORD = "rounds.json"
LLM_COST = ("llm_calls", "cache_hits", "tokens_in", "tokens_out", "model_load_s")  # the metrics of an LLM node's cost
NEARLY_EMPTY = 10  # an output with fewer rows is reported as nearly empty


@dataclass
class NodePlan:
    """What a build will do with a node, decided before it runs."""

    name: str
    fingerprint: str
    components: dict[str, Any]  # what the fingerprint hashes, kept to explain later rebuilds
    shown_params: dict[str, str]  # short readable parameter values, for "why" messages
    cached: bool
    reason: str  # why it is built ("" when cached)


@dataclass
class NodeStats:
    """What a build did with a node."""

    name: str
    op: str
    status: str  # "built", "cached", "view" (a filter stored as its rejects) or "skipped" (after a failed gate)
    fingerprint: str
    rows_in: int | None
    rows_out: int | None  # None when skipped
    rejected: int
    seconds: float
    reason: str = ""
    schema: dict[str, str] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # what the operator reported via Context


@dataclass
class GateResult:
    """One condition of a node's gate, as a build checked it (see ``dataflow.gates``)."""

    node: str
    condition: str  # the gate's keyword, e.g. "min_distinct_2"
    key: str  # what was measured (the measure and its arguments), to reuse it on the same stored node
    measured: float | None  # None: undefined (nothing to measure), which fails
    note: str  # shown with the value, e.g. "310 of 1,000 rows in" or the missing expected values
    bound: float
    passed: bool
    warn: bool  # a failure warns instead of stopping the build
    message: str  # the condition in words: "distinct-2 of 'chosen' is 0.21 (...), below 0.3"

    @property
    def failed(self) -> bool:
        """Whether this result stops what comes after its node."""
        return not self.passed and not self.warn


@dataclass
class BuildReport:
    stats: list[NodeStats]
    outputs_written: list[str]
    seconds: float
    gates: list[GateResult] = field(default_factory=list)

    @property
    def nothing_done(self) -> bool:
        return all(s.status == "cached" for s in self.stats) and not self.outputs_written

    @property
    def failed_gates(self) -> list[GateResult]:
        return [r for r in self.gates if r.failed]


# -- stored nodes ---------------------------------------------------------------------------
def write_node_meta(directory: Path, stats: NodeStats, view_of: str | None, reject_constants: dict[str, Any]) -> None:
    """Write a finished node's ``meta.json`` into its (temporary) directory."""
    meta = {"node": stats.name, "op": stats.op, "fingerprint": stats.fingerprint, "view_of": view_of,
            "rows_in": stats.rows_in, "rows": stats.rows_out, "rejected": stats.rejected, "schema": stats.schema,
            "metrics": stats.metrics, "seconds": round(stats.seconds, 3), "built_at": now()}
    if reject_constants:
        meta["reject_constants"] = reject_constants  # rejects' columns that hold one value (a filter's)
    (directory / META).write_text(json.dumps(meta, indent=1))


def read_record(path: Path, written: str = "which dataflow wrote",
                fix: str = "move it away and run the command again: it is written again, and the rest stays cached"
                ) -> Any:
    """A JSON file that dataflow wrote; a damaged one (a disk fault, an edit by hand) is an error naming it,
    how it was ``written`` and the ``fix``."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataflowError(f"{path}, {written}, is damaged ({exc}); {fix}") from None


def write_record(path: Path, value: Any) -> None:
    """Write ``value`` as the JSON file ``path`` (its folder made first), whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1, default=str))
    tmp.replace(path)


def read_node_meta(entry: Path) -> dict[str, Any]:
    return read_record(entry / META)


def cached_stats(store: Store, name: str, fingerprint: str) -> NodeStats:
    """The stats of a node found in the store, as its build recorded them."""
    meta = read_node_meta(store.entry(fingerprint))
    return NodeStats(name, meta["op"], "cached", fingerprint, meta.get("rows_in"), meta["rows"], meta["rejected"],
                     0.0, schema=meta["schema"], metrics=meta.get("metrics", {}))


def node_rows(store: Store, fingerprint: str) -> pl.LazyFrame:
    """The rows of a stored node (a view's are its input's rows minus its rejects), streamed: a
    filter keeps memory flat as the input grows, where an order-keeping anti-join does not."""
    data, removed = stored_rows(store, fingerprint)
    rows = pl.scan_parquet(data)
    return rows.filter(~pl.col("id").is_in(removed.implode())) if len(removed) else rows


def stored_rows(store: Store, fingerprint: str) -> tuple[Path, pl.Series]:
    """Where a stored node's rows are: the data file of the node, or of the node its view (or its
    chain of views) filters, and the ids of the rows of that file the views rejected."""
    entries = views_and_data(store, fingerprint)
    removed = [pl.read_parquet(entry / REJECTS, columns=["id"]).get_column("id") for entry in entries[:-1]]
    return entries[-1] / DATA, pl.concat([pl.Series("id", [], pl.String), *removed])


def data_file(store: Store, fingerprint: str) -> Path:
    """The stored file that holds a node's rows: its own, or that of the node its views filter (which
    also holds the rows they rejected)."""
    return views_and_data(store, fingerprint)[-1] / DATA


def views_and_data(store: Store, fingerprint: str) -> list[Path]:
    """The store entries from a node up its chain of views to the node whose data they filter (last)."""
    entries = [store.entry(fingerprint)]
    while view_of := read_node_meta(entries[-1]).get("view_of"):
        entries.append(store.entry(view_of))
    return entries


def reject_constants(entry: Path) -> dict[str, Any]:
    """The rejects' columns a node stored once in its meta.json instead of per row."""
    return read_node_meta(entry).get("reject_constants", {})


# -- builds ---------------------------------------------------------------------------------
def manifest_stats(manifest: dict[str, Any]) -> list[NodeStats]:
    """The stats of every node of the build a manifest records, in build order."""
    names = {f.name for f in fields(NodeStats)}
    return [NodeStats(**{k: v for k, v in node.items() if k in names}) for node in manifest["nodes"].values()]


def manifest_gates(manifest: dict[str, Any]) -> list[GateResult]:
    """The gate results of the build a manifest records, in the order they were checked."""
    return [GateResult(**result) for result in manifest.get("gates", [])]


def output_warnings(manifest: dict[str, Any]) -> list[str]:
    """The warnings about the outputs of the build a manifest records: each one nearly empty."""
    stats = {s.name: s for s in manifest_stats(manifest)}
    inputs = {name: node["inputs"] for name, node in manifest["nodes"].items()}
    notes = [nearly_empty_note(name, spec["rows"], [stats[n] for n in lineage(inputs, spec["node"])])
             for name, spec in manifest["outputs"].items() if not spec.get("skipped")]
    return [note for note in notes if note]


def write_manifest(store: Store, pipeline: Any, nodes: dict[str, dict[str, Any]], outputs: dict[str, dict[str, Any]],
                   report: BuildReport, started: str, run_id: str | None = None) -> None:
    """Write the manifest of a finished build, or of one stopped by a gate (``nodes``: each node's
    stats and plan; ``outputs``: each output's node, record schema and whether it was skipped;
    ``run_id``: this build's run, recorded on each node it built)."""
    manifest = {
        "pipeline": pipeline.name, "file": getattr(pipeline, "source_file", None), "run_id": run_id,
        "started": started, "finished": now(), "seconds": round(report.seconds, 3),
        "params": pipeline.params, "versions": _versions(), "nodes": _with_run_ids(store, nodes, run_id),
        "outputs": {name: {**spec, "rows": nodes[spec["node"]]["rows_out"], "path": name}
                    for name, spec in outputs.items()},
        "gates": [asdict(result) for result in report.gates],
    }
    for path in (store.root / "builds" / f"{pipeline.name}.json", store.out / MANIFEST):
        write_record(path, manifest)


def _with_run_ids(store: Store, nodes: dict[str, dict[str, Any]], run_id: str | None) -> dict[str, dict[str, Any]]:
    """Each node's record with the id of the run that built it: this run for a node it built, the run an
    earlier build recorded for a cached one (None when no build in this store recorded it)."""
    earlier: dict[str, str] = {}
    for path in (store.root / "builds").glob("*.json"):
        earlier |= {n["fingerprint"]: n["run_id"] for n in read_record(path)["nodes"].values()
                    if n.get("run_id")}
    return {name: {**node, "run_id": run_id if node["status"] in ("built", "view") else
                   None if node["status"] == "skipped" else earlier.get(node["fingerprint"])}
            for name, node in nodes.items()}


def lineage(inputs: dict[str, list[str]], node: str) -> list[str]:
    """``node`` and its ancestors, in the order of ``inputs`` (each node's input nodes, in build order)."""
    wanted, todo = set(), [node]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += inputs[name]
    return [n for n in inputs if n in wanted]


def nearly_empty_note(output: str, rows: int | None, steps: list[NodeStats]) -> str | None:
    """What the summary and the dataset card say of an output with fewer than ``NEARLY_EMPTY`` rows
    (``steps``: its node and the node's ancestors, in build order): the rows it has, and the
    nearest step before it that dropped rows, with the query that says why."""
    if rows is None or rows >= NEARLY_EMPTY:
        return None
    note = f"output '{output}' is {'nearly ' if rows else ''}empty: {rows:,} row{'' if rows == 1 else 's'}"
    dropping = next((s for s in reversed(steps) if s.rejected), None)
    if dropping is None:
        return note
    return (f"{note}; the nearest step that dropped rows is '{dropping.name}' ({dropping.rejected:,} rejected), "
            f"see why: dataflow query \"select reason, count(*) n from rejects where node = '{dropping.name}' "
            f"group by all order by n desc\"")


def node_record(stats: NodeStats, plan: NodePlan, kind: str, inputs: list[str], store: Store) -> dict[str, Any]:
    """A node's entry in the manifest."""
    return {**asdict(stats), "kind": kind, "inputs": inputs,
            "store": str(store.entry(stats.fingerprint).relative_to(store.out)),
            "components": plan.components, "params": plan.shown_params}


def unfinished_manifest(store: Store, pipeline: Any, plans: dict[str, NodePlan], run: dict[str, Any]) -> dict[str, Any]:
    """What a build that stopped early (interrupted, or failed on a node) leaves: a manifest of its plan in
    which each node found in the store has the stats its build recorded ("built" when this run built it)
    and the others the status "not built". It is for the report only: the outputs were not written."""
    nodes = {}
    for name, plan in plans.items():
        if store.has(plan.fingerprint):
            stats = cached_stats(store, name, plan.fingerprint)
            meta = read_node_meta(store.entry(plan.fingerprint))
            if not plan.cached:
                stats.status, stats.seconds = "view" if meta.get("view_of") else "built", meta.get("seconds", 0.0)
                stats.reason = plan.reason
        else:
            stats = NodeStats(name, plan.components["op"].rsplit(".", 1)[-1], "not built", plan.fingerprint,
                              None, None, 0, 0.0, plan.reason)
        nodes[name] = {**asdict(stats), "inputs": list(plan.components["inputs"]),
                       "store": str(store.entry(plan.fingerprint).relative_to(store.out)),
                       "components": plan.components, "params": plan.shown_params}
    return {"pipeline": pipeline.name, "file": getattr(pipeline, "source_file", None), "run_id": run.get("run_id"),
            "started": run["started"], "finished": run.get("finished"), "seconds": run.get("seconds"),
            "status": run["status"], "params": pipeline.params, "versions": _versions(), "nodes": nodes, "outputs": {},
            "gates": []}


def read_manifest(out: Path) -> dict[str, Any]:
    """The manifest of the latest build in ``out``."""
    path = Path(out) / MANIFEST
    if not path.exists():
        runs = read_runs(Path(out)) if runs_path(Path(out)).exists() else []
        if runs:
            raise DataflowError(f"no build in {out}/ has finished yet: the last one (run {runs[-1].get('run_id')}) "
                                f"ended with status '{runs[-1].get('status')}'; {Path(out) / 'report.html'}, which it "
                                f"wrote, shows what it did. Run the same build again to resume it.")
        raise DataflowError(f"no build found in {out}/ (no manifest.json); run `dataflow build PIPELINE.py"
                            f" --out {out}` first, or pass --out to point at a build")
    return read_record(path)


def save_stopped_manifest(store: Store, manifest: dict[str, Any]) -> None:
    """Keep the ``unfinished_manifest`` of a build that stopped early, so its report can be made again."""
    write_record(store.root / STOPPED, manifest)


def report_manifest(out: Path) -> dict[str, Any]:
    """The manifest of the last build in ``out``: a build that stopped early (failed or interrupted) is
    the last one when its ``unfinished_manifest`` was kept, else the latest finished build's."""
    runs = read_runs(Path(out)) if runs_path(Path(out)).exists() else []
    path = Path(out) / ".dataflow" / STOPPED
    if runs and runs[-1].get("status") not in ("ok", "gate_failed") and path.exists():
        stopped = read_record(path)
        if stopped.get("run_id") == runs[-1].get("run_id"):
            return stopped
    return read_manifest(out)


def previous_manifest(store: Store, pipeline_name: str) -> dict[str, Any] | None:
    """The manifest of the pipeline's latest build in this store, if any."""
    path = store.root / "builds" / f"{pipeline_name}.json"
    return read_record(path) if path.exists() else None


def referenced_fingerprints(store: Store) -> set[str]:
    """The fingerprints of every node the latest build of any pipeline in this store used."""
    keep: set[str] = set()
    for manifest in (store.root / "builds").glob("*.json"):
        keep |= {n["fingerprint"] for n in read_record(manifest)["nodes"].values()}
    return keep


def outputs_of(out: Path, schema: str | None = None) -> dict[str, dict[str, Any]]:
    """The latest build's outputs (name -> node, rows, path, schema), those of one record schema
    (``sft``, ``preference``, ``prompt``, ...) when ``schema`` is given. An output a failed gate
    skipped is none of them, whatever an earlier build left in its directory."""
    outputs = read_manifest(out)["outputs"]
    return {name: spec for name, spec in outputs.items()
            if not spec.get("skipped") and (schema is None or spec.get("schema") == schema)}


def append_run(store: Store, run: dict[str, Any]) -> None:
    """Add a build attempt (ok, failed or interrupted) to the run history."""
    with open(store.root / RUNS, "a") as fh:
        fh.write(json.dumps(run) + "\n")


def runs_path(out: Path) -> Path:
    return Path(out) / ".dataflow" / RUNS


def read_runs(out: Path) -> list[dict[str, Any]]:
    """Every build attempt recorded in ``out``, oldest first (a line cut by a crash is left out)."""
    path = runs_path(out)
    lines = path.read_text().splitlines() if path.exists() else []
    runs = []
    for line in lines:
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return runs


def round_rows(out: Path) -> list[dict[str, Any]]:
    """One row per round of every ``dataflow iterate`` loop in ``out`` (round 0: the base model's evaluation)."""
    rows = []
    for path in sorted((Path(out) / LOOPS).glob(f"*/{ROUNDS_RECORD}")):
        loop = read_record(path)
        common = {"loop": loop["loop"], "pipeline": loop["pipeline"], "settings": json.dumps(loop["settings"]),
                  "train_on": loop["train_on"], "metric": loop["metric"]}
        if base := loop.get("base"):
            rows.append({**common, "round": 0, "model": base["model"], "value": base["value"],
                         "ci_low": base["ci95"][0], "ci_high": base["ci95"][1], "kept": True})
        for entry in loop["rounds"]:
            score, seconds = entry[loop["metric"]], entry["seconds"]
            rows.append({**common, "round": entry["round"], "model": entry["run"],
                         "generated_by": entry["generated_by"], "data_rows": entry["data"]["rows"],
                         "trained_rows": entry["trained_rows"],
                         "value": score["value"], "ci_low": score["ci95"][0], "ci_high": score["ci95"][1],
                         "gain": entry["gain"], "kept": entry["kept"], "model_calls": entry["model_calls"],
                         **{f"{part}_s": seconds[part] for part in ("generation", "verification", "training",
                                                                     "evaluation", "round")}})
    return rows


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("dataflow", "polars", "pyarrow", "duckdb"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found
