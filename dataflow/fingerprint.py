"""Fingerprints: stable hashes of what determines a node's output.

A node's fingerprint covers the operator's identity and code, every parameter (functions by
their code, the helpers and constants they use, and their closures; polars expressions by their
serialized plan), the upstream fingerprints and, for sources, the file content.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import json
import types
from pathlib import Path
from typing import Any

import polars as pl


def digest(value: Any, size: int = 16) -> str:
    """Hex digest of the canonical JSON form of ``value``."""
    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def canonical(value: Any, _seen: frozenset[int] = frozenset()) -> Any:
    """A JSON-able form of a parameter value that changes exactly when its meaning does."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [canonical(v, _seen) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((canonical(v, _seen) for v in value), key=str)
    if isinstance(value, dict):
        return {str(k): canonical(v, _seen) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, pl.Expr):
        return {"expr": _expr_text(value)}
    if isinstance(value, (pl.DataType, type)) and not callable_code(value):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"class": qualified_name(type(value)), "fields": canonical(fields, _seen)}
    if callable(value):
        return function_identity(value, _seen)
    text = repr(value)
    if " at 0x" in text:  # a default repr holds a memory address: identify by type only
        return {"object": qualified_name(type(value))}
    return {"repr": text}


def _expr_text(expr: pl.Expr) -> str:
    try:
        return expr.meta.serialize(format="json")
    except Exception:  # expressions holding Python UDFs do not serialize
        return str(expr)


def qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def callable_code(obj: Any) -> types.CodeType | None:
    fn = obj.__func__ if isinstance(obj, types.MethodType) else obj
    return getattr(fn, "__code__", None)


def function_identity(fn: Any, _seen: frozenset[int] = frozenset()) -> Any:
    """Code of a function plus what it reads: closure values, module constants, local helpers."""
    if id(fn) in _seen:
        return {"recursive": qualified_name(fn)}
    seen = _seen | {id(fn)}
    if isinstance(fn, functools.partial):
        return {"partial": function_identity(fn.func, seen), "args": canonical(fn.args, seen),
                "kwargs": canonical(fn.keywords, seen)}
    if inspect.isclass(fn):
        return {"class": qualified_name(fn), "code": class_code_hash(fn)}
    code = callable_code(fn)
    if code is None:  # builtins, C extensions, callable objects
        return {"callable": qualified_name(fn)}
    identity: dict[str, Any] = {"fn": qualified_name(fn), "code": _code_hash(code)}
    cells = getattr(fn, "__closure__", None) or ()
    if cells:
        identity["closure"] = [canonical(_cell_value(c), seen) for c in cells]
    identity["globals"] = _referenced_globals(fn, code, seen)
    return identity


def _cell_value(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def _referenced_globals(fn: Any, code: types.CodeType, seen: frozenset[int]) -> dict[str, Any]:
    """Module-level constants and the helpers (of its own module or of dataflow) the function
    refers to by name."""
    module_globals = getattr(fn, "__globals__", {})
    module = module_globals.get("__name__")
    found: dict[str, Any] = {}
    for name in sorted(_all_names(code)):
        if name not in module_globals:
            continue
        value = module_globals[name]
        if isinstance(value, (bool, int, float, str, tuple, frozenset)) or (
            isinstance(value, (list, dict, set)) and len(str(value)) < 100_000
        ):
            found[name] = canonical(value, seen)
        elif (inspect.isfunction(value) or inspect.isclass(value)) and _own_code(value.__module__, module):
            found[name] = function_identity(value, seen)
    return found


def _own_code(module: str | None, referrer: str | None) -> bool:
    """Helpers whose code counts: those of the referring module and of dataflow itself (the text
    kernel, the LLM operator base, ...), not of other libraries."""
    return module == referrer or (module or "").split(".")[0] == "dataflow"


def _all_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _all_names(const)
    return names


def _code_hash(code: types.CodeType) -> str:
    """Hash of bytecode and constants (nested code objects included); independent of line numbers."""
    h = hashlib.blake2b(digest_size=12)
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        h.update(_code_hash(const).encode() if isinstance(const, types.CodeType) else repr(const).encode())
    return h.hexdigest()


_hashing: set[type] = set()  # classes whose hash is being computed (mutual references)


@functools.cache
def class_code_hash(cls: type) -> str:
    """An operator's 'code version': the source of the class and of its bases, plus what their
    methods read from their modules (templates, constants, helper functions)."""
    if cls in _hashing:
        return qualified_name(cls)
    _hashing.add(cls)
    try:
        parts = []
        for klass in cls.__mro__:
            if klass is object or klass.__module__ in ("builtins", "dataflow.operator", "typing"):
                continue
            try:
                parts.append(inspect.getsource(klass))
            except (OSError, TypeError):
                parts.append(qualified_name(klass))
            for member in vars(klass).values():
                fn = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                if inspect.isfunction(fn):
                    parts.append(_referenced_globals(fn, fn.__code__, frozenset({id(fn)})))
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
    finally:
        _hashing.discard(cls)
