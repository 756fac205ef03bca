"""The persistent request cache shared by every pipeline: SQLite in WAL mode.

One row per sample: the key hashes the model identity, the full messages, the sampling
parameters (seed included) and the sample index. Writes are one transaction per chunk, so a
crash keeps every finished chunk; WAL mode and a busy timeout let several builds write at once.
Failed requests go to a separate table: they are never served as results, so the next build
retries them. Per operator ("scope"), a retry generation counts builds that left failures; it
is part of the node fingerprint, so a node with failed rows is rebuilt (from the cache) next time.
A cache that cannot be opened, read or written (damaged, a full disk, no permission) is an error
naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dataflow.errors import DataflowError
from dataflow.llm.types import Completion, Request
from dataflow.paths import user_cache_dir

SCHEMA = """
create table if not exists samples (key text primary key, model text not null, text text not null,
    finish_reason text not null, tokens_in integer, tokens_out integer, created real not null, logprobs text);
create table if not exists failures (key text primary key, model text not null, error text not null,
    attempts integer not null, last real not null);
create table if not exists retry_generations (scope text primary key, generation integer not null);
"""


def cache_path() -> Path:
    """``$DATAFLOW_LLM_CACHE`` (a file), else ``<user cache>/llm_cache.sqlite``."""
    override = os.environ.get("DATAFLOW_LLM_CACHE")
    return Path(override).expanduser() if override else user_cache_dir() / "llm_cache.sqlite"


def sample_key(model: str, request: Request, index: int) -> str:
    fields = {"model": model, "messages": request.messages, "sampling": request.sampling.cache_fields(), "index": index}
    if request.prompt is not None:
        fields["prompt"] = request.prompt
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


class RequestCache:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else cache_path()
        self._lock = threading.Lock()
        with self._guarded("open"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
            self.db.execute("pragma journal_mode=wal")
            self.db.execute("pragma synchronous=normal")
            self.db.execute("pragma busy_timeout=60000")
            self.db.executescript(SCHEMA)
            if "logprobs" not in {row[1] for row in self.db.execute("pragma table_info(samples)")}:
                self.db.execute("alter table samples add column logprobs text")  # a cache written before logprobs

    @contextmanager
    def _guarded(self, doing: str) -> Iterator[None]:
        """SQLite and file errors as one error naming the cache file and what to do."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            damaged = isinstance(exc, sqlite3.DatabaseError) and any(
                words in str(exc) for words in ("not a database", "malformed"))
            fix = ("it is damaged: move it away (its answers are then asked again)" if damaged else
                   "free disk space or fix its permissions")
            raise DataflowError(f"cannot {doing} the LLM request cache {self.path} ({type(exc).__name__}: {exc}); "
                                f"{fix}, or set $DATAFLOW_LLM_CACHE to another file") from None

    def close(self) -> None:
        self.db.close()

    def get_many(self, keys: list[str]) -> dict[str, tuple[Completion, int | None]]:
        """Cached samples by key: (completion, prompt tokens)."""
        found = {}
        with self._lock, self._guarded("read"):
            for start in range(0, len(keys), 500):
                part = keys[start:start + 500]
                marks = ",".join("?" * len(part))
                rows = self.db.execute(f"select key, text, finish_reason, tokens_in, tokens_out, logprobs "
                                       f"from samples where key in ({marks})", part)
                for key, text, finish, tokens_in, tokens_out, logprobs in rows:
                    tokens, top = json.loads(logprobs) if logprobs else (None, None)
                    found[key] = (Completion(text, finish, tokens_out, tokens, top), tokens_in)
        return found

    def put_many(self, model: str, samples: list[tuple[str, Completion, int | None]],
                 failures: list[tuple[str, str]]) -> None:
        """Store finished samples and failures of one chunk in one transaction."""
        now = time.time()
        with self._lock, self._guarded("write to"):
            self.db.execute("begin immediate")
            try:
                self.db.executemany(
                    "insert or ignore into samples values (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(k, model, c.text, c.finish_reason, tin, c.tokens_out, now, _logprobs(c))
                     for k, c, tin in samples])
                self.db.executemany("delete from failures where key = ?", [(k,) for k, _, _ in samples])
                self.db.executemany(
                    "insert into failures values (?, ?, ?, 1, ?) on conflict(key) do update set "
                    "error = excluded.error, attempts = attempts + 1, last = excluded.last",
                    [(k, model, error, now) for k, error in failures])
                self.db.execute("commit")
            except BaseException:
                self.db.execute("rollback")
                raise

    def retry_generation(self, scope: str) -> int:
        with self._lock, self._guarded("read"):
            row = self.db.execute("select generation from retry_generations where scope = ?", (scope,)).fetchone()
        return row[0] if row else 0

    def bump_retry_generation(self, scope: str) -> None:
        """Mark that a build of ``scope`` left failed requests, so its next build retries them."""
        with self._lock, self._guarded("write to"):
            self.db.execute("insert into retry_generations values (?, 1) on conflict(scope) do update set "
                            "generation = generation + 1", (scope,))


def _logprobs(completion: Completion) -> str | None:
    if completion.top_logprobs is None:
        return None
    return json.dumps([completion.tokens, completion.top_logprobs], ensure_ascii=False)


_open: dict[Path, RequestCache] = {}


def shared_cache() -> RequestCache:
    """The process-wide cache for the current ``cache_path()``."""
    path = cache_path()
    if path not in _open:
        _open[path] = RequestCache(path)
    return _open[path]
