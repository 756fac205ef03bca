"""The pipeline API: nodes are operators applied to upstream nodes; building does no work.

    p = Pipeline("quickstart")
    raw = p.read_jsonl("data/instructions.jsonl", on_error="reject")
    chats = raw.apply(ToConversation())
    p.output("sft", chats.dedup("messages"))
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl

from dataflow.errors import DataflowError
from dataflow.gates import ARGUMENTS, Gate
from dataflow.operator import Operator
from dataflow.operators.core.sources import FromRows, ReadCsv, ReadHF, ReadJson, ReadJsonl, ReadParquet

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PIPELINE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# DuckDB keywords that cannot name a table unquoted: node and output names are SQL view names.
# tests/test_engine_compile.py checks this list against the installed DuckDB's keywords.
SQL_RESERVED = frozenset("""
    all analyse analyze and anti any array as asc asof asymmetric at authorization binary both by
    case cast check collate collation column concurrently constraint create cross default
    deferrable desc describe distinct do else end except false fetch for foreign freeze from full
    glob group having ilike in initially inner intersect into is isnull join lambda lateral leading
    left like limit natural not notnull null offset on only or order outer overlaps pivot
    pivot_longer pivot_wider placing positional primary qualify references returning right select
    semi show similar some summarize symmetric table tablesample then to trailing true union unique
    unpack unpivot using variadic verbose when where window with
""".split())
CATALOG_VIEWS = frozenset({"rejects", "runs", "nodes", "edges", "gates", "rounds"})  # `dataflow query`'s own views


def name_problem(kind: str, name: str) -> str | None:
    if not NAME_PATTERN.match(name):
        return f"{kind} name {name!r} is not an identifier (letters, digits, _): rename it"
    if name.lower() in SQL_RESERVED:
        return f"{kind} name '{name}' is an SQL keyword, so queries would need it quoted: rename it"
    if name.lower() in CATALOG_VIEWS:
        return f"{kind} name '{name}' is taken by the query view of every build's {name.lower()}: rename it"
    return None

@dataclass
class Overrides:
    """Parameter values given on the command line (``--set name=value``), and those a pipeline used."""

    values: dict[str, str]
    used: set[str] = field(default_factory=set)

    def unused(self) -> list[str]:
        return sorted(set(self.values) - self.used)


_overrides: ContextVar[Overrides | None] = ContextVar("dataflow_overrides", default=None)


@contextmanager
def parameter_overrides(values: dict[str, str]) -> Iterator[Overrides]:
    """Within the block, ``Pipeline.param`` takes its value from ``values`` where they name it."""
    token = _overrides.set(Overrides(dict(values)))
    try:
        yield _overrides.get()
    finally:
        _overrides.reset(token)


@dataclass
class NodeSpec:
    """A node as declared: its name, operator and upstream node names."""

    name: str
    op: Operator
    inputs: list[str]


@dataclass
class OutputSpec:
    """A declared output: its node and, optionally, the canonical record schema it holds."""

    node: str
    schema: str | None = None


@dataclass
class Param:
    """A declared build parameter."""

    default: Any
    value: Any
    help: str = ""


@dataclass(frozen=True)
class RoundsSpec:
    """How ``dataflow iterate`` runs a pipeline in rounds (``Pipeline.rounds``; checked by the loop)."""

    train: str  # the output each round trains on
    evaluate: str  # the held-out output each round's model is evaluated on
    trainer: str = "sft"
    model_param: str = "model"  # bound to the best model so far
    round_param: str | None = "round"  # bound to the round number (e.g. a sampling seed), if declared
    config: dict[str, Any] = field(default_factory=dict)  # trainer config fields
    evaluation: dict[str, Any] = field(default_factory=dict)  # EvalOptions fields


class Pipeline:
    """A DAG of nodes. Relative file paths resolve against the directory of the file that
    created the pipeline, so a build works from any working directory."""

    def __init__(self, name: str, description: str = ""):
        self.name = name
        self.description = description
        self.nodes: dict[str, NodeSpec] = {}
        self.outputs: dict[str, OutputSpec] = {}
        self.declared_params: dict[str, Param] = {}
        self.gates: list[Gate] = []  # stage gates, by node (see Node.gate)
        self.rounds_spec: RoundsSpec | None = None  # see rounds()
        self.problems: list[str] = []  # declaration problems, reported by compile
        if not PIPELINE_NAME.match(name or ""):
            self.problems.append(f"pipeline name {name!r} names the build's records: use letters, digits, '_', '-' "
                                 f"and '.' only, e.g. {re.sub(r'[^A-Za-z0-9_.-]+', '_', name or '') or 'my_pipeline'!r}")
        caller = sys._getframe(1).f_code.co_filename  # inspect.stack() would read every frame's source
        self.base_dir = Path(caller).resolve().parent if Path(caller).exists() else Path.cwd()

    # -- parameters --------------------------------------------------------------------------
    def param(self, name: str, default: Any, help: str = "") -> Any:
        """A build parameter; ``dataflow build --set name=value`` overrides the default.
        ``dataflow build PIPELINE --help-params`` lists them with their ``help``."""
        if name in self.declared_params:
            raise DataflowError(f"parameter '{name}' is declared twice (p.param): declare it once and use its value")
        value, overrides = default, _overrides.get()
        if overrides is not None and name in overrides.values:
            overrides.used.add(name)
            value = _parse_value(name, overrides.values[name], default)
        self.declared_params[name] = Param(default, value, help)
        return value

    @property
    def params(self) -> dict[str, Any]:
        """The parameters' values in this build."""
        return {name: param.value for name, param in self.declared_params.items()}

    # -- sources -----------------------------------------------------------------------------
    def read_jsonl(self, path: str | Path, *, name: str | None = None, on_error: str = "raise") -> Node:
        return self.add(ReadJsonl(self._path(path), on_error=on_error), name=name)

    def read_json(self, path: str | Path, *, name: str | None = None) -> Node:
        return self.add(ReadJson(self._path(path)), name=name)

    def read_parquet(self, path: str | Path, *, name: str | None = None) -> Node:
        return self.add(ReadParquet(self._path(path)), name=name)

    def read_csv(self, path: str | Path, *, name: str | None = None, separator: str = ",",
                 infer_types: bool = True, on_error: str = "raise") -> Node:
        """A CSV file with a header row; ``infer_types=False`` reads every column as text; ``on_error='reject'``
        sends rows of the wrong field count, or with a value that does not fit its column, to rejects."""
        return self.add(ReadCsv(self._path(path), separator=separator, infer_types=infer_types, on_error=on_error),
                        name=name)

    def read_hf(self, dataset: Any, *, split: str | None = None, name: str | None = None) -> Node:
        """A ``datasets.Dataset``/``DatasetDict`` object, or the directory of a saved one."""
        if isinstance(dataset, (str, Path)):
            dataset = self._path(dataset)
        return self.add(ReadHF(dataset, split=split), name=name)

    def from_rows(self, rows: list[dict], *, name: str | None = None) -> Node:
        return self.add(FromRows(tuple(rows)), name=name)

    def _path(self, path: str | Path) -> Path:
        path = Path(path).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    # -- graph -------------------------------------------------------------------------------
    def add(self, op: Operator, *inputs: Node | str, name: str | None = None) -> Node:
        """Add a node applying ``op`` to upstream nodes (given as nodes or by name)."""
        if not isinstance(op, Operator):
            raise DataflowError(f"expected an Operator, got {type(op).__name__}: {op!r}")
        op = op.with_base_dir(self.base_dir)
        name = name or self._fresh_name(op.label())
        if problem := name_problem("node", name):
            self.problems.append(problem)
        upstream = [i.name if isinstance(i, Node) else i for i in inputs]
        if name in self.nodes:  # keep the first node, so its own problems are reported too
            self.problems.append(f"node name '{name}' is used twice: give one of them another name=")
        else:
            self.nodes[name] = NodeSpec(name, op, upstream)
        return Node(self, name)

    def _fresh_name(self, label: str) -> str:
        base = re.sub(r"\W", "_", label).strip("_") or "node"
        base = base if NAME_PATTERN.match(base) else f"n_{base}"
        base = f"{base}_step" if base.lower() in SQL_RESERVED | CATALOG_VIEWS else base
        name, n = base, 2
        while name in self.nodes:
            name, n = f"{base}_{n}", n + 1
        return name

    def concat(self, *nodes: Node | str, name: str | None = None) -> Node:
        from dataflow.operators.core.combine import Concat

        return self.add(Concat(), *nodes, name=name)

    def mix(self, inputs: dict[str, Node | str], *, weights: dict[str, float] | None = None,
            counts: dict[str, int] | None = None, total: int | None = None, oversample: str = "error", seed: int = 0,
            name: str | None = None) -> Node:
        """Rows of named inputs in set proportions, with a ``source`` column (``operators/core/mix.py``):

            p.mix({"math": math, "general": general}, weights={"math": 0.9, "general": 0.1}, total=1000)
        """
        from dataflow.operators.core.mix import Mix

        op = Mix(tuple(inputs), weights=weights, counts=counts, total=total, oversample=oversample, seed=seed)
        return self.add(op, *inputs.values(), name=name)

    def output(self, name: str, node: Node | str, *, schema: str | None = None) -> None:
        """Declare a named output, materialized under ``<out>/<name>/``. ``schema`` names the
        canonical record it holds (``sft``, ``preference``, ``prompt``, ``conversation``; see
        ``dataflow.schemas``): compile checks its columns, and the build records it, so the training
        command and the reports find "the DPO pairs of this build" without guessing."""
        if name in self.outputs:
            self.problems.append(f"output name '{name}' is declared twice: choose another name")
        if problem := name_problem("output", name):
            self.problems.append(problem)
        self.outputs[name] = OutputSpec(node.name if isinstance(node, Node) else node, schema)

    def rounds(self, *, train: str, evaluate: str, trainer: str = "sft", model_param: str = "model",
               round_param: str | None = "round", config: dict[str, Any] | None = None,
               evaluation: dict[str, Any] | None = None) -> None:
        """Declare the loop ``dataflow iterate`` runs: in round r the pipeline is built with the parameter
        ``model_param`` bound to the best model so far (and ``round_param``, if declared, to r), the
        ``trainer`` (sft, dpo, grpo; its ``config`` fields) trains that model on the output ``train``, and
        the new model is evaluated on the output ``evaluate`` (``evaluation``: EvalOptions fields)."""
        self.rounds_spec = RoundsSpec(train, evaluate, trainer, model_param, round_param, dict(config or {}),
                                      dict(evaluation or {}))

    def compile(self):
        """Check the whole DAG (see ``dataflow.compiler``); raises CompileError listing problems."""
        from dataflow.compiler import compile_pipeline

        return compile_pipeline(self)


class Node:
    """A handle on a pipeline node; its methods add downstream nodes."""

    def __init__(self, pipeline: Pipeline, name: str):
        self.pipeline, self.name = pipeline, name

    def __repr__(self) -> str:
        return f"Node({self.name!r})"

    def apply(self, op: Operator, *others: Node | str, name: str | None = None) -> Node:
        return self.pipeline.add(op, self, *others, name=name)

    def filter(self, predicate: pl.Expr | Callable[[dict], bool], *, reason: str = "",
               score: str | None = None, inputs: dict[str, Any] | None = None,
               name: str | None = None) -> Node:
        """Keep rows matching a polars expression, or for which ``fn(row)`` is true.

        Dropped rows go to rejects with ``reason``. A Python function sees ``id`` and the
        ``inputs`` columns (default: all columns).
        """
        from dataflow.operators.core.basic import Filter
        from dataflow.operators.core.functions import RowFilter

        if isinstance(predicate, pl.Expr):
            return self.apply(Filter(predicate, reason=reason, score=score), name=name)
        return self.apply(RowFilter(predicate, inputs or {}, reason=reason), name=name)

    def map(self, fn: Callable[[dict], dict] | None = None, *, outputs: dict[str, Any] | None = None,
            inputs: dict[str, Any] | None = None, on_error: str = "raise", name: str | None = None,
            **exprs: pl.Expr) -> Node:
        """Add columns: by polars expressions (``map(n=pl.col("text").str.len_chars())``) or by a
        row function returning a dict of the declared ``outputs``."""
        from dataflow.operators.core.basic import WithColumns
        from dataflow.operators.core.functions import RowFunction

        if fn is None:
            return self.apply(WithColumns(exprs), name=name)
        if outputs is None:
            raise DataflowError(f"map({getattr(fn, '__name__', fn)}): declare outputs={{column: type}}")
        return self.apply(RowFunction(fn, inputs or {}, outputs, on_error), name=name)

    def map_batches(self, fn: Callable[[pl.DataFrame], pl.DataFrame], *, outputs: dict[str, Any],
                    inputs: dict[str, Any] | None = None, name: str | None = None) -> Node:
        from dataflow.operators.core.functions import BatchFunction

        return self.apply(BatchFunction(fn, inputs or {}, outputs), name=name)

    def select(self, *columns: str, name: str | None = None) -> Node:
        from dataflow.operators.core.basic import Select

        return self.apply(Select(tuple(columns)), name=name)

    def drop(self, *columns: str, name: str | None = None) -> Node:
        from dataflow.operators.core.basic import Drop

        return self.apply(Drop(tuple(columns)), name=name)

    def rename(self, mapping: dict[str, str], *, name: str | None = None) -> Node:
        from dataflow.operators.core.basic import Rename

        return self.apply(Rename(mapping), name=name)

    def cast(self, dtypes: dict[str, Any], *, name: str | None = None) -> Node:
        from dataflow.operators.core.basic import Cast

        return self.apply(Cast(dtypes), name=name)

    def limit(self, n: int, *, name: str | None = None) -> Node:
        from dataflow.operators.core.basic import Limit

        return self.apply(Limit(n), name=name)

    def sample(self, n: int | None = None, *, fraction: float | None = None, seed: int = 0,
               name: str | None = None) -> Node:
        from dataflow.operators.core.sampling import Sample

        return self.apply(Sample(n=n, fraction=fraction, seed=seed), name=name)

    def split(self, *, eval_fraction: float | None = None, eval_size: int | None = None, seed: int = 0,
              stratify: str | None = None, names: tuple[str, str] = ("train", "eval")) -> tuple[Node, Node]:
        """Two nodes, train and eval, from a seeded (optionally stratified) split."""
        from dataflow.operators.core.sampling import SplitPart

        parts = [self.apply(SplitPart(part, eval_fraction, eval_size, seed, stratify), name=part_name)
                 for part, part_name in zip(("train", "eval"), names)]
        return parts[0], parts[1]

    def dedup(self, *columns: str, normalize: bool | tuple[str, ...] = True, name: str | None = None) -> Node:
        from dataflow.operators.core.dedup import ExactDedup

        return self.apply(ExactDedup(tuple(columns), normalize=normalize), name=name)

    def join(self, other: Node | str, *, on: str | list[str], how: str = "inner", name: str | None = None) -> Node:
        from dataflow.operators.core.combine import Join

        keys = (on,) if isinstance(on, str) else tuple(on)
        return self.apply(Join(keys, how=how), other, name=name)

    def validate(self, schema: str, *, on_error: str = "reject", name: str | None = None) -> Node:
        from dataflow.operators.core.validate import Validate

        return self.apply(Validate(schema, on_error=on_error), name=name)

    def gate(self, **conditions: Any) -> Node:
        """A stage gate: conditions this node must meet before its outputs and anything downstream
        are built; returns this node, whose data and fingerprint it leaves alone. Conditions:
        ``min_rows``, ``max_reject_share``, ``min_distinct_2`` (with ``column``), ``min_valid_share``
        (with ``schema``), ``min_coverage`` (with ``column`` and ``expected``), ``min_margin_share``
        (with ``min_margin``, ``margin_column``); ``warn=True`` warns instead of failing. See
        ``dataflow.gates`` for what each measures.

            pairs.gate(min_rows=50, min_distinct_2=0.3, column="chosen")
        """
        unknown = [key for key in conditions if key not in ARGUMENTS]
        if unknown:
            self.pipeline.problems.append(f"gate on node '{self.name}': unknown argument {unknown[0]}=; a gate "
                                          f"takes {', '.join(ARGUMENTS)}")
        else:
            self.pipeline.gates.append(Gate(self.name, **conditions))
        return self


def _parse_value(name: str, text: str, default: Any) -> Any:
    """Convert a ``--set`` string to the type of the parameter's default."""
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, str):
            return text
        return json.loads(text)
    except ValueError as exc:
        kind = type(default).__name__
        raise DataflowError(f"--set {name}={text}: not a valid {kind} ({exc}); the default is {default!r}") from exc
