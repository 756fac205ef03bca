"""Prompt templates over row columns: Jinja when the text holds ``{{`` or ``{%`` (sandboxed, every
name required), else a ``str.format`` string with named fields."""

from __future__ import annotations

import functools
import re
import string
from typing import Callable


def _is_jinja(template: str) -> bool:
    return "{{" in template or "{%" in template


def _jinja_env():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)


def template_columns(template: str) -> set[str]:
    """Row columns a template refers to (raises for a template that does not parse)."""
    if _is_jinja(template):
        from jinja2 import meta

        return set(meta.find_undeclared_variables(_jinja_env().parse(template)))
    names = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            if not name or name.isdigit():
                raise ValueError("use named fields such as {question}, not {} or {0}")
            names.add(re.split(r"[.\[]", name, maxsplit=1)[0])
    return names


@functools.lru_cache(maxsize=256)
def renderer(template: str) -> Callable[[dict], str]:
    """A function that fills the template from a row."""
    if _is_jinja(template):
        return _jinja_env().from_string(template).render
    return lambda row: template.format(**row)
