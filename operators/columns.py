"""Text views of columns: the string an operator compares, embeds or shows for a column of any
type. Polars only, so the engine (gates, the report) and the core operators use it without
importing the text kernel's NumPy and rapidfuzz."""

from __future__ import annotations

import polars as pl


def column_text(name: str, dtype: pl.DataType, roles: tuple[str, ...] = ()) -> pl.Expr:
    """A string view of a column: strings as they are, conversations as 'role: content' lines
    (with ``roles``, only the content of those turns, e.g. ``("assistant",)``), other nested
    values as JSON."""
    if dtype == pl.String():
        return pl.col(name)
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        if roles:
            chosen = pl.element().filter(pl.element().struct.field("role").is_in(list(roles)))
            return pl.col(name).list.eval(chosen.struct.field("content")).list.join("\n")
        turn = pl.concat_str(pl.element().struct.field("role"), pl.lit(": "),
                             pl.element().struct.field("content"))
        return pl.col(name).list.eval(turn).list.join("\n")
    if isinstance(dtype, (pl.Struct, pl.List, pl.Array)):
        return pl.struct(pl.col(name)).struct.json_encode()
    return pl.col(name).cast(pl.String)
