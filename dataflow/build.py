"""Build a pipeline: compile, plan, execute, write outputs, the manifest and the run history."""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import time
import traceback
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dataflow.compiler import CompiledPipeline
from dataflow.errors import DataflowError
from dataflow.executor import LocalExecutor, NodeStats
from dataflow.memory import bounded_read_ahead
from dataflow.outputs import write_output
from dataflow.pipeline import Pipeline, set_overrides, unused_overrides
from dataflow.plan import NodePlan, plan_build
from dataflow.progress import Progress
from dataflow.store import Store, now

MANIFEST = "manifest.json"


def load_pipeline(path: str | Path, overrides: dict[str, str] | None = None) -> Pipeline:
    """Import a pipeline file and return its Pipeline (the one named ``pipeline``, or the only one)."""
    path = Path(path)
    if not path.is_file():
        raise DataflowError(f"pipeline file not found: {path}")
    set_overrides(overrides or {})
    module_name = f"dataflow_pipeline_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except DataflowError:
        raise
    except Exception as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path.resolve()
                  or Path(f.filename) == path]
        where = f"{path}:{frames[-1].lineno}" if frames else str(path)
        raise DataflowError(f"{where}: {type(exc).__name__}: {exc}") from exc
    unused = unused_overrides()
    found = [v for v in vars(module).values() if isinstance(v, Pipeline)]
    pipeline = getattr(module, "pipeline", None)
    if not isinstance(pipeline, Pipeline):
        if len(found) != 1:
            raise DataflowError(f"{path}: define one Pipeline (name it `pipeline` if there are several); "
                                f"found {len(found)}")
        pipeline = found[0]
    if unused:
        known = ", ".join(pipeline.params) or "none"
        raise DataflowError(f"--set {unused[0]}: the pipeline has no parameter '{unused[0]}' "
                            f"(its parameters: {known})")
    pipeline.source_file = str(path)
    return pipeline


@dataclass
class BuildReport:
    stats: list[NodeStats]
    outputs_written: list[str]
    seconds: float

    @property
    def nothing_done(self) -> bool:
        return all(s.status == "cached" for s in self.stats) and not self.outputs_written


def previous_manifest(store: Store, pipeline: Pipeline) -> dict[str, Any] | None:
    path = store.root / "builds" / f"{pipeline.name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def plan(pipeline: Pipeline, out: Path, rebuild: tuple[str, ...] = ()) -> tuple[CompiledPipeline, dict[str, NodePlan]]:
    compiled = pipeline.compile()
    unknown = [n for n in rebuild if n not in compiled.nodes]
    if unknown:
        raise DataflowError(f"--rebuild {unknown[0]}: no such node; nodes are {', '.join(compiled.order)}")
    store = Store(out)
    return compiled, plan_build(compiled, store, previous_manifest(store, pipeline), set(rebuild))


def build(pipeline: Pipeline, out: Path, progress: Progress, rebuild: tuple[str, ...] = ()) -> BuildReport:
    started, started_at = time.perf_counter(), now()
    compiled, plans = plan(pipeline, out, rebuild)
    store = Store(out)
    store.lock()
    run = {"run_id": uuid.uuid4().hex[:12], "pipeline": pipeline.name, "started": started_at, "status": "failed"}
    try:
        store.remove_stale_tmp()
        with bounded_read_ahead():
            stats = LocalExecutor(store, progress).run(compiled, plans)
            written = [name for name in compiled.outputs if write_output(store, compiled, name, stats)]
        report = BuildReport([stats[n] for n in compiled.order], written, time.perf_counter() - started)
        _write_manifest(store, compiled, plans, report, started_at)
        run.update(status="ok", nodes_built=sum(s.status != "cached" for s in report.stats),
                   nodes_cached=sum(s.status == "cached" for s in report.stats))
        return report
    except KeyboardInterrupt:
        run["status"] = "interrupted"
        raise
    finally:
        run.update(finished=now(), seconds=round(time.perf_counter() - started, 3))
        with open(store.root / "runs.jsonl", "a") as fh:
            fh.write(json.dumps(run) + "\n")
        store.unlock()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("dataflow", "polars", "pyarrow", "duckdb"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _write_manifest(store: Store, compiled: CompiledPipeline, plans: dict[str, NodePlan],
                    report: BuildReport, started: str) -> None:
    pipeline = compiled.pipeline
    nodes = {}
    for s in report.stats:
        node = compiled.nodes[s.name]
        nodes[s.name] = {**asdict(s), "kind": node.op.kind, "inputs": node.inputs,
                         "store": str(store.entry(s.fingerprint).relative_to(store.out)),
                         "components": plans[s.name].components, "params": plans[s.name].shown_params}
    manifest = {
        "pipeline": pipeline.name, "file": getattr(pipeline, "source_file", None),
        "started": started, "finished": now(), "seconds": round(report.seconds, 3),
        "params": pipeline.params, "versions": _versions(), "nodes": nodes,
        "outputs": {name: {"node": node, "rows": nodes[node]["rows_out"], "path": name}
                    for name, node in compiled.outputs.items()},
    }
    text = json.dumps(manifest, indent=1, default=str)
    (store.root / "builds").mkdir(parents=True, exist_ok=True)
    for path in (store.root / "builds" / f"{pipeline.name}.json", store.out / MANIFEST):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
