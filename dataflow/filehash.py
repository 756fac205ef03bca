"""Content hashes of input files, remembered so an unchanged file is read once, not at every build;
and facts found by reading a file (a JSONL file's schema), remembered under its content hash.

A hash is remembered under the file's path and, for it (or every file under a directory), the
name, size, inode, modification and change times. Writing a file always moves its change time,
so new content is hashed again, while a file that is only touched keeps its hash (same content,
same fingerprint). A file changed in the last seconds is hashed but not remembered, because a
second write within the clock's resolution could leave every time unchanged.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import xxhash

from dataflow.paths import user_cache_dir

RECENT_SECONDS = 2.0  # files changed more recently than this are not remembered


def file_digest(path: Path) -> str:
    """Content hash of a file or of every file under a directory (names included)."""
    path = Path(path).resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stats = [(f, f.stat()) for f in files]
    signature = xxhash.xxh3_128(repr([(str(f), s.st_size, s.st_ino, s.st_mtime_ns, s.st_ctime_ns)
                                      for f, s in stats]).encode()).hexdigest()
    known = _remembered(signature)
    if known:
        return known
    h = xxhash.xxh3_128()
    for f in files:
        h.update(str(f.relative_to(path)).encode() if path.is_dir() else b"")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    value = h.hexdigest()
    if all(time.time_ns() - s.st_ctime_ns > RECENT_SECONDS * 1e9 for _, s in stats):
        _remember(signature, value)
    return value


def _remembered(signature: str) -> str | None:
    row = _execute("select digest from digests where signature = ?", signature)
    return row[0] if row else None


def _remember(signature: str, value: str) -> None:
    _execute("insert or replace into digests values (?, ?)", signature, value)


def remembered_fact(digest: str, kind: str) -> bytes | None:
    """What was found of kind ``kind`` in the file of content hash ``digest``, if remembered."""
    row = _execute("select value from facts where digest = ? and kind = ?", digest, kind)
    return row[0] if row else None


def remember_fact(digest: str, kind: str, value: bytes) -> None:
    _execute("insert or replace into facts values (?, ?, ?)", digest, kind, value)


def _execute(sql: str, *args: str | bytes) -> tuple | None:
    """Run one statement on the cache's tables; without a writable cache directory, do nothing."""
    try:
        path = user_cache_dir() / "file_digests.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            db.execute("create table if not exists digests (signature text primary key, digest text not null)")
            db.execute("create table if not exists facts (digest text, kind text, value blob not null, "
                       "primary key (digest, kind))")
            return db.execute(sql, args).fetchone()
        finally:
            db.close()
    except (sqlite3.Error, OSError):
        return None
