"""Compile a pipeline: resolve references, order the DAG, check parameters and propagate
schemas, reporting every problem at once (naming the node, the column and a fix) before any
data is read or any model is loaded."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

import polars as pl

from dataflow.dtypes import matches
from dataflow.errors import CompileError
from dataflow.gates import Gate
from dataflow.operator import Operator, missing_or_mistyped
from dataflow.pipeline import OutputSpec, Pipeline
from dataflow.schemas import SCHEMAS


@dataclass
class CompiledNode:
    name: str
    op: Operator
    inputs: list[str]
    schema: pl.Schema
    consumers: list[str] = field(default_factory=list)


@dataclass
class CompiledPipeline:
    pipeline: Pipeline
    order: list[str]  # topological: inputs before consumers
    nodes: dict[str, CompiledNode]
    outputs: dict[str, OutputSpec]  # output name -> its node and record schema
    gates: dict[str, list[Gate]] = field(default_factory=dict)  # node -> its stage gates


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _describe(node: str, op: Operator) -> str:
    return f"node '{node}' ({type(op).__name__})"


def compile_pipeline(p: Pipeline) -> CompiledPipeline:
    problems = list(p.problems)
    names = list(p.nodes)
    refused = set()  # nodes whose parameters are wrong: their schema is not worked out (it would fail again)
    for spec in p.nodes.values():
        for ref in spec.inputs:
            if ref not in p.nodes:
                problems.append(f"{_describe(spec.name, spec.op)}: input '{ref}' is not a node of this "
                                f"pipeline.{_suggest(ref, names)}")
        want, got = spec.op.inputs_count, len(spec.inputs)
        if (want == -1 and got == 0) or (want >= 0 and got != want):
            need = "one or more" if want == -1 else str(want)
            problems.append(f"{_describe(spec.name, spec.op)}: takes {need} input node(s), was given {got}")
        found = [f"{_describe(spec.name, spec.op)}: {msg}" for msg in spec.op.check()]
        problems += found
        if found:
            refused.add(spec.name)

    order, cycle = _topological_order(p)
    if cycle:
        problems.append(f"cycle: {' -> '.join(cycle)}; a node cannot depend on its own output. "
                        f"Break the loop by reading from an earlier node.")
    if not p.outputs:
        problems.append("the pipeline declares no output: add p.output('name', node)")
    for out, spec in p.outputs.items():
        if spec.node not in p.nodes:
            problems.append(f"output '{out}': node '{spec.node}' does not exist.{_suggest(spec.node, names)}")
        elif out in p.nodes and out != spec.node:
            problems.append(f"output '{out}' has the name of another node ('{out}'), but shows node "
                            f"'{spec.node}': rename the output or the node")
        if spec.schema is not None and spec.schema not in SCHEMAS:
            problems.append(f"output '{out}': unknown record schema {spec.schema!r}; choose from {sorted(SCHEMAS)}")

    schemas: dict[str, pl.Schema] = {}
    for name in order:
        spec = p.nodes[name]
        if name in refused or any(ref not in schemas for ref in spec.inputs):
            continue  # its own or an upstream problem was already reported
        schema, node_problems = _node_schema(spec.name, spec.op, spec.inputs, [schemas[r] for r in spec.inputs])
        problems += node_problems
        if schema is not None:
            schemas[name] = schema
    problems += [problem for out, spec in p.outputs.items() if spec.node in schemas
                 for problem in _record_problems(out, spec, schemas[spec.node])]
    problems += [problem for gate in p.gates if gate.node in schemas for problem in gate.problems(schemas[gate.node])]
    if problems:
        raise CompileError(problems)

    nodes = {n: CompiledNode(n, p.nodes[n].op, p.nodes[n].inputs, schemas[n]) for n in order}
    for n in order:
        for ref in nodes[n].inputs:
            nodes[ref].consumers.append(n)
    gates: dict[str, list[Gate]] = {}
    for gate in p.gates:
        gates.setdefault(gate.node, []).append(gate)
    return CompiledPipeline(p, order, nodes, dict(p.outputs), gates)


def _record_problems(out: str, spec: OutputSpec, schema: pl.Schema) -> list[str]:
    """Columns that an output declared as a record schema lacks, or holds with another type."""
    if spec.schema not in SCHEMAS:
        return []
    problems = []
    for column, dtype in SCHEMAS[spec.schema].columns.items():
        if column not in schema:
            problems.append(f"output '{out}' is declared as '{spec.schema}' records but node '{spec.node}' has no "
                            f"column '{column}' ({dtype}); it has: {', '.join(schema)}")
        elif not matches(schema[column], dtype):
            problems.append(f"output '{out}' is declared as '{spec.schema}' records but column '{column}' of node "
                            f"'{spec.node}' is {schema[column]}, not {dtype}")
    return problems


def _node_schema(name: str, op: Operator, inputs: list[str], schemas: list[pl.Schema]
                 ) -> tuple[pl.Schema | None, list[str]]:
    where = _describe(name, op)
    problems = []
    if schemas:
        for column, issue in missing_or_mistyped(op, schemas[0]):
            if issue == "missing":
                problems.append(f"{where}: column '{column}' not found in the output of '{inputs[0]}'."
                                f"{_suggest(column, list(schemas[0]))} It has: {', '.join(schemas[0])}. "
                                f"Fix the column name or add a step that creates it.")
            else:
                problems.append(f"{where}: column '{column}' {issue}. Cast it first, e.g. "
                                f".cast({{'{column}': ...}}), or fix the step that makes it.")
        if problems:
            return None, problems
    try:
        schema = op.output_schema(*schemas)
    except Exception as exc:  # polars and operators raise many kinds; each is a user problem here
        return None, [f"{where}: {_explain(exc, schemas)}"]
    if schema.get("id") != pl.String():
        return None, [f"{where}: its output lost the 'id' column (or changed its type); "
                      f"every row needs a string id: keep 'id' in the output"]
    return schema, []


def _explain(exc: Exception, schemas: list[pl.Schema]) -> str:
    message = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).splitlines()[0]
    found = re.search(r'unable to find column "([^"]+)"', message)
    if found and schemas:
        column, have = found.group(1), list(schemas[0])
        return (f"column '{column}' not found.{_suggest(column, have)} The input has: {', '.join(have)}. "
                f"Fix the column name or add a step that creates it.")
    return message


def _topological_order(p: Pipeline) -> tuple[list[str], list[str]]:
    """Nodes in dependency order (declaration order among equals), and one cycle if any."""
    state: dict[str, str] = {}
    order: list[str] = []
    stack: list[str] = []
    cycle: list[str] = []

    def visit(name: str) -> None:
        nonlocal cycle
        if state.get(name) == "done" or cycle:
            return
        if state.get(name) == "active":
            cycle = stack[stack.index(name):] + [name]
            return
        state[name] = "active"
        stack.append(name)
        for ref in p.nodes[name].inputs:
            if ref in p.nodes:
                visit(ref)
        stack.pop()
        state[name] = "done"
        order.append(name)

    for name in p.nodes:
        visit(name)
    in_cycle = set(cycle)
    return [n for n in order if n not in in_cycle], cycle
