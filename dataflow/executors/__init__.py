"""Executors, by name (``dataflow build --executor NAME``). An executor is a class following
``dataflow.executors.base.Executor``; add one with a file and a line in ``EXECUTORS``."""

from __future__ import annotations

from dataflow.executors.base import Executor
from dataflow.plugins import load

EXECUTORS = {
    "local": "dataflow.executors.local:LocalExecutor",  # in this process, polars streaming (the default)
    "ray": "dataflow.executors.ray:RayExecutor",  # on a Ray cluster ($RAY_ADDRESS, else a local one); extra `ray`
}


def executor_class(name: str) -> type[Executor]:
    """The executor class registered as ``name`` (imported only when asked for)."""
    return load("--executor", name, EXECUTORS)
