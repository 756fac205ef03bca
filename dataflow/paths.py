"""The user cache directory shared by every pipeline (models, the request cache, file digests)."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$DATAFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/dataflow``, else ``~/.cache/dataflow``."""
    override = os.environ.get("DATAFLOW_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "dataflow"
