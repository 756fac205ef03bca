"""Memory settings for polars, so a streaming build's RSS is the memory it really holds.

Polars' allocator (jemalloc) keeps freed pages for a second as "muzzy" pages (MADV_FREE):
the kernel may take them back, but until it does they count in RSS, so a streaming build
looks as if it grows with its input. ``release_freed_pages`` returns them at once; it must
run before polars is imported, and leaves a user's own ``_RJEM_MALLOC_CONF`` alone.
``bounded_read_ahead`` caps how many Parquet row groups polars reads ahead during a build.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

ALLOCATOR = "_RJEM_MALLOC_CONF"
READ_AHEAD = "POLARS_ROW_GROUP_PREFETCH_SIZE"


def release_freed_pages() -> None:
    """Have polars' allocator return freed pages at once (call before polars is imported)."""
    if not os.environ.get(ALLOCATOR):
        os.environ[ALLOCATOR] = "muzzy_decay_ms:0"  # polars appends this to its own defaults


@contextmanager
def bounded_read_ahead() -> Iterator[None]:
    """Read at most one row group ahead per two threads (polars' default: 16 or more), unless
    the user set ``POLARS_ROW_GROUP_PREFETCH_SIZE``."""
    import polars as pl

    before = os.environ.get(READ_AHEAD)
    if before:  # the user's own setting ("" is replaced: polars cannot parse it)
        yield
        return
    os.environ[READ_AHEAD] = str(max(1, pl.thread_pool_size() // 2))
    try:
        yield
    finally:
        if before is None:
            del os.environ[READ_AHEAD]
        else:
            os.environ[READ_AHEAD] = before
