"""Named extension points (executors, reports) as ``"module:attribute"`` entries, imported only
when one is asked for, so an extra such as Ray costs nothing until it is used."""

from __future__ import annotations

import importlib
from typing import Any

from dataflow.errors import DataflowError


def load(option: str, name: str, entries: dict[str, str]) -> Any:
    """The object registered as ``name`` in ``entries``; a clear error naming the choices if none."""
    if name not in entries:
        raise DataflowError(f"{option} {name}: no such choice; choose one of {', '.join(entries)}")
    module, _, attribute = entries[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
