"""The executor protocol: what runs a compiled, planned DAG.

An executor builds every node its plan does not find cached, in an order where inputs come first,
dispatching on each operator's ``kind`` (``dataflow.operator.Kind``); it commits each finished node
to the store atomically (its ``meta.json`` written by ``dataflow.records``) as soon as it is
complete, and reports progress. Operators never know which executor runs them.
"""

from __future__ import annotations

from typing import Callable, Protocol

from dataflow.compiler import CompiledPipeline
from dataflow.progress import Progress
from dataflow.records import NodePlan, NodeStats
from dataflow.store import Store


class Executor(Protocol):
    def __init__(self, store: Store, progress: Progress) -> None: ...

    def run(self, compiled: CompiledPipeline, plans: dict[str, NodePlan],
            passes_gates: Callable[[NodeStats], bool] = lambda stats: True) -> dict[str, NodeStats]:
        """Build what ``plans`` does not find cached; the stats of every node, by name. Once a node with
        gates (``compiled.gates``) is in the store, call ``passes_gates(its stats)``; when that is False,
        build nothing downstream of it: those nodes get the status "skipped" and the failed node as reason."""
