"""User-facing errors: the CLI prints these as one paragraph, without a traceback."""

from __future__ import annotations

import json


def json_error(exc: json.JSONDecodeError) -> str:
    """Python's json message with the column ("Unterminated string starting at column 9")."""
    return f"{exc.msg.removesuffix(' at')} at column {exc.colno}"


class DataflowError(Exception):
    """An error the user can fix; its message says what went wrong and how to fix it."""


class CompileError(DataflowError):
    """Every problem found while compiling a pipeline, reported together."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"pipeline does not compile ({len(problems)} problem(s)):\n{listed}")


class RowError(DataflowError):
    """A user function failed on one row (or batch) of a node."""

    def __init__(self, node: str, row_id: str, error: BaseException):
        self.node, self.row_id, self.error = node, row_id, error
        super().__init__(
            f"node '{node}' failed on row id={row_id}: {type(error).__name__}: {error}. "
            f"Fix the function, or pass on_error='reject' to send such rows to rejects and go on."
        )


class GateError(DataflowError):
    """Gate conditions failed: what they protect was skipped; every finished node is kept."""
