"""The Ray side of the ray executor: importing Ray, joining a cluster, shipping operators, and the
cluster's errors in words a user can act on.

The cluster is the one at ``RAY_ADDRESS`` (``auto`` or ``HOST:PORT``, Ray's own variable), else the one
this process has already joined (``ray.init`` in a notebook or a test), else a local one with one worker
per core, started for the build and shut down after it.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from dataflow.errors import DataflowError
from dataflow.executors.local import operator_failure

RAY_MISSING = "--executor ray needs Ray: pip install -e '.[ray]' (the 'ray' extra: ray[data])"
CONNECT_TIMEOUT_S = 5.0
OUT_OF_MEMORY = ("ObjectStoreFullError", "OutOfMemoryError", "OutOfDiskError")


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401  (the executor's row and batch nodes run on Ray Data)
    except ImportError:
        raise DataflowError(RAY_MISSING) from None
    return ray


def cluster_address() -> str | None:
    return os.environ.get("RAY_ADDRESS") or None


@contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Ray joined for the duration of a build (see the module docstring)."""
    ray = import_ray()
    _quiet_ray_data()
    if ray.is_initialized():
        yield
        return
    if address and address != "auto":
        _reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise DataflowError(f"--address {address}: no Ray cluster there ({str(exc).splitlines()[0]}); start one "
                            f"with `ray start --head`, or leave out --address to start a local one") from None
    try:
        yield
    finally:
        ray.shutdown()


def _reachable(address: str) -> None:
    """Fail in seconds on an address nothing listens on (Ray itself retries for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise DataflowError(f"--address {address}: cannot reach a Ray cluster there ({exc}); give the head node's "
                            f"HOST:PORT (`ray start --head` prints it), 'auto' for the cluster on this machine, "
                            f"or leave out --address to start a local one") from None


def _quiet_ray_data() -> None:
    """Ray Data in build order (rows keep their order), without progress bars on the build's display."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def ship_by_value(op: Any) -> None:
    """Let workers receive an operator defined in a pipeline file or a script (modules they cannot
    import): cloudpickle sends such modules' classes and functions by value."""
    import ray.cloudpickle

    values = [op, *(getattr(op, f) for f in getattr(op, "__dataclass_fields__", {}))]
    for value in values:
        module = sys.modules.get(getattr(value, "__module__", None) or type(value).__module__)
        if module is not None and _not_installed(module):
            ray.cloudpickle.register_pickle_by_value(module)


def _not_installed(module: Any) -> bool:
    path = getattr(module, "__file__", None) or ""
    top = module.__name__.split(".")[0]
    return bool(path) and top != "dataflow" and "site-packages" not in path and module.__name__ != "__main__"


def check_shippable(ops: dict[str, Any]) -> None:
    """Every operator (by node name) that runs on a worker can be sent there; else an error naming the
    node, before the cluster is contacted."""
    import ray.cloudpickle

    for name, op in ops.items():
        ship_by_value(op)
        try:
            ray.cloudpickle.dumps(op)
        except Exception as exc:  # cloudpickle raises TypeError, PicklingError, AttributeError...
            raise DataflowError(
                f"node '{name}': its operator cannot be sent to Ray workers ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0]}); a function it holds captures something that cannot be copied "
                f"to another process (a lock, an open file, a connection): create that inside the function, "
                f"or build this pipeline with --executor local") from None


def cluster_error(node: str, exc: BaseException) -> DataflowError | None:
    """What a failure on the cluster means for a node: a lack of memory, with the fix; else the operator's
    own error (or its polars or file error) as the local executor gives it; None for anything else."""
    chain = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = getattr(exc, "cause", None) or exc.__cause__
    short = next((type(e).__name__ for e in chain if type(e).__name__ in OUT_OF_MEMORY), None)
    if short:
        return DataflowError(
            f"node '{node}' ran out of memory on the Ray cluster ({short}); nothing of it was committed and "
            f"every finished node is kept: give the workers more memory (`ray start --object-store-memory BYTES "
            f"--memory BYTES`), add nodes, or split the input into smaller pieces upstream, then build again")
    own = [e for e in chain if not type(e).__name__.startswith("RayTaskError")]  # Ray's wrappers add a traceback
    return next((e for e in own if isinstance(e, DataflowError)), None) or \
        next((failure for e in own if (failure := operator_failure(node, e))), None)
