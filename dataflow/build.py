"""Build a pipeline: compile, plan, execute, write outputs, the manifest and the run history."""

from __future__ import annotations

import importlib.util
import sys
import time
import traceback
import uuid
from pathlib import Path

from dataflow.compiler import CompiledPipeline
from dataflow.errors import DataflowError, GateError
from dataflow.executors import executor_class
from dataflow.gates import GateKeeper, failure_report
from dataflow.memory import bounded_read_ahead
from dataflow.operator import Kind
from dataflow.outputs import withdraw_output, write_output
from dataflow.pipeline import Pipeline, parameter_overrides
from dataflow.plan import plan_build
from dataflow.progress import Progress
from dataflow.records import (BuildReport, NodePlan, append_run, node_record, previous_manifest,
                              write_manifest)
from dataflow.store import Store, now


def load_pipeline(path: str | Path, overrides: dict[str, str] | None = None) -> Pipeline:
    """Import a pipeline file and return its Pipeline (the one named ``pipeline``, or the only one)."""
    path = Path(path)
    if path.is_dir():
        raise DataflowError(f"{path} is a directory: give the pipeline's Python file, e.g. {path}/pipeline.py")
    if not path.is_file():
        raise DataflowError(f"pipeline file not found: {path}")
    if path.suffix != ".py":
        raise DataflowError(f"{path} is not a Python file: a pipeline is a .py file that builds a Pipeline")
    module_name = f"dataflow_pipeline_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    with parameter_overrides(overrides or {}) as given:
        try:
            spec.loader.exec_module(module)
        except DataflowError:
            raise
        except SyntaxError as exc:
            raise DataflowError(f"{path}:{exc.lineno}: SyntaxError: {exc.msg}") from None
        except Exception as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path.resolve()
                      or Path(f.filename) == path]
            where = f"{path}:{frames[-1].lineno}" if frames else str(path)
            raise DataflowError(f"{where}: {type(exc).__name__}: {exc}") from exc
    found = [v for v in vars(module).values() if isinstance(v, Pipeline)]
    pipeline = getattr(module, "pipeline", None)
    if not isinstance(pipeline, Pipeline):
        if len(found) != 1:
            raise DataflowError(f"{path}: define one Pipeline (name it `pipeline` if there are several); "
                                f"found {len(found)}")
        pipeline = found[0]
    if unused := given.unused():
        known = ", ".join(pipeline.params) or "none"
        raise DataflowError(f"--set {unused[0]}: the pipeline has no parameter '{unused[0]}' "
                            f"(its parameters: {known})")
    pipeline.source_file = str(path)
    return pipeline


def plan(pipeline: Pipeline, out: Path, rebuild: tuple[str, ...] = ()) -> tuple[CompiledPipeline, dict[str, NodePlan]]:
    if Path(out).exists() and not Path(out).is_dir():
        raise DataflowError(f"--out {out} is a file: give a directory for the build")
    compiled = pipeline.compile()
    unknown = [n for n in rebuild if n not in compiled.nodes]
    if unknown:
        raise DataflowError(f"--rebuild {unknown[0]}: no such node; nodes are {', '.join(compiled.order)}")
    store = Store(out)
    return compiled, plan_build(compiled, store, previous_manifest(store, pipeline.name), set(rebuild))


def build(pipeline: Pipeline, out: Path, progress: Progress, rebuild: tuple[str, ...] = (),
          executor: str = "local") -> BuildReport:
    """Build ``pipeline`` into ``out`` with the executor registered as ``executor``. When a gate fails,
    the build records what it did and raises GateError."""
    started, started_at = time.perf_counter(), now()
    run_nodes = executor_class(executor)
    compiled, plans = plan(pipeline, out, rebuild)
    store = Store(out)
    store.lock()
    run = {"run_id": uuid.uuid4().hex[:12], "pipeline": pipeline.name, "params": pipeline.params,
           "started": started_at, "status": "failed"}
    try:
        store.remove_stale_tmp()
        store.started(pipeline.name)
        gates = GateKeeper(compiled.gates, store, previous_manifest(store, pipeline.name), progress)
        with bounded_read_ahead():
            stats = run_nodes(store, progress).run(compiled, plans, gates.passes)
            skipped_nodes = [name for name in compiled.order if stats[name].status == "skipped"]
            held = {r.node for r in gates.results if r.failed} | set(skipped_nodes)  # their outputs are not written
            skipped_outputs = [name for name, spec in compiled.outputs.items() if spec.node in held]
            written = [name for name in compiled.outputs
                       if name not in skipped_outputs and write_output(store, compiled, name, stats)]
            for name in skipped_outputs:
                withdraw_output(store, name)
        report = BuildReport([stats[n] for n in compiled.order], written, time.perf_counter() - started, gates.results)
        nodes = {s.name: node_record(s, plans[s.name], Kind(compiled.nodes[s.name].op.kind).value,
                                     compiled.nodes[s.name].inputs, store) for s in report.stats}
        outputs = {name: {"node": spec.node, "schema": spec.schema, "skipped": name in skipped_outputs}
                   for name, spec in compiled.outputs.items()}
        write_manifest(store, pipeline, nodes, outputs, report, started_at, run["run_id"])
        store.finished(pipeline.name)
        run.update(status="gate_failed" if report.failed_gates else "ok",
                   nodes_built=sum(s.status in ("built", "view") for s in report.stats),
                   nodes_cached=sum(s.status == "cached" for s in report.stats))
        if report.failed_gates:
            raise GateError(failure_report(report.failed_gates, skipped_nodes, skipped_outputs))
        return report
    except KeyboardInterrupt:
        run["status"] = "interrupted"
        raise
    finally:
        run.update(finished=now(), seconds=round(time.perf_counter() - started, 3))
        append_run(store, run)
        store.unlock()
        from dataflow.reports.html import write_after_build  # <out>/report.html; a report failure is only logged

        write_after_build(store, pipeline, plans, run, progress.log)
