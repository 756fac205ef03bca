"""Column type declarations and matching.

Operators declare their input columns as ``{name: spec}`` where a spec is ``None`` (any type),
a Python type (``str``, ``int``, ``float``, ``bool``), a polars dtype (``pl.List(pl.String)``),
a polars dtype class (``pl.List`` = any list), or one of the named specs below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import polars as pl

_PYTHON_TYPES = {str: pl.String(), int: pl.Int64(), float: pl.Float64(), bool: pl.Boolean()}


@dataclass(frozen=True)
class Kind:
    """A family of dtypes, e.g. any numeric type."""

    name: str
    test: Callable[[pl.DataType], bool]

    def __str__(self) -> str:
        return self.name


NUMERIC = Kind("numeric", lambda d: d.is_numeric())
INTEGER = Kind("integer", lambda d: d.is_integer())
ANY_LIST = Kind("list", lambda d: isinstance(d, pl.List))


def to_dtype(spec: Any) -> pl.DataType:
    """Turn a concrete spec (Python type or polars dtype) into a polars dtype."""
    if spec in _PYTHON_TYPES:
        return _PYTHON_TYPES[spec]
    if isinstance(spec, pl.DataType):
        return spec
    if isinstance(spec, type) and issubclass(spec, pl.DataType):
        return spec()
    raise TypeError(f"not a column type: {spec!r} (use str, int, float, bool or a polars dtype)")


def matches(actual: pl.DataType, spec: Any) -> bool:
    """Does a column of dtype ``actual`` satisfy the declared ``spec``?"""
    if spec is None:
        return True
    if isinstance(spec, Kind):
        return spec.test(actual)
    if isinstance(spec, type) and issubclass(spec, pl.DataType) and spec not in (pl.String, pl.Boolean):
        return isinstance(actual, spec)
    expected = to_dtype(spec)
    return _covers(actual, expected)


def _covers(actual: pl.DataType, expected: pl.DataType) -> bool:
    """Equal types, or structs whose expected fields all exist with covering types."""
    if isinstance(expected, pl.List) and isinstance(actual, pl.List):
        return _covers(actual.inner, expected.inner)
    if isinstance(expected, pl.Struct) and isinstance(actual, pl.Struct):
        have = {f.name: f.dtype for f in actual.fields}
        return all(f.name in have and _covers(have[f.name], f.dtype) for f in expected.fields)
    if expected == pl.Null() or actual == pl.Null():
        return True
    return actual == expected


def describe(spec: Any) -> str:
    if spec is None:
        return "any"
    if isinstance(spec, Kind):
        return spec.name
    try:
        return str(to_dtype(spec))
    except TypeError:
        return getattr(spec, "__name__", str(spec))
