"""The content-addressed store under ``<out>/.dataflow/``: directories and atomic moves.

Each built node is a directory ``cache/<fingerprint>/`` holding ``data.parquet`` (zstd), its
``rejects.parquet`` if it dropped rows, and ``meta.json`` (written by ``dataflow.records``). A node
is written under ``tmp/`` and renamed into place when complete, so a crash never leaves a half node
that looks done. A view node (a filter) stores only its rejects. ``unfinished/`` notes when each
pipeline's build began until it records its manifest, so ``dataflow clean`` keeps what an interrupted
build finished.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import time
from pathlib import Path

from dataflow.errors import DataflowError

DATA, REJECTS, META = "data.parquet", "rejects.parquet", "meta.json"
UNFINISHED = "unfinished"  # a marker per pipeline whose latest build began and has not recorded its manifest


class Store:
    def __init__(self, out: Path):
        self.out = Path(out)
        self.root = self.out / ".dataflow"
        self.cache = self.root / "cache"
        self.tmp = self.root / "tmp"
        self._lock_file = None

    def entry(self, fingerprint: str) -> Path:
        return self.cache / fingerprint

    def has(self, fingerprint: str) -> bool:
        return (self.entry(fingerprint) / META).exists()

    # -- writing -----------------------------------------------------------------------------
    def begin(self, fingerprint: str) -> Path:
        """A fresh temporary directory for a node being built."""
        path = self.tmp / f"{fingerprint}.{os.getpid()}.{secrets.token_hex(4)}"
        path.mkdir(parents=True)
        return path

    def commit(self, tmp: Path, fingerprint: str) -> None:
        """Move a finished node (its meta.json written last) into place atomically."""
        final = self.entry(fingerprint)
        final.parent.mkdir(parents=True, exist_ok=True)
        self.move_into_place(tmp, final)

    def move_into_place(self, tmp: Path, target: Path) -> None:
        """Rename a finished directory to ``target``, replacing an older one (a forced rebuild,
        a refreshed output) so that ``target`` is never missing or half-written."""
        if target.exists():
            old = self.tmp / f"old.{target.name}.{secrets.token_hex(4)}"
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)

    def discard(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)

    # -- housekeeping ------------------------------------------------------------------------
    def lock(self) -> None:
        """Hold the out directory for one build at a time."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.root / "lock", "a+")
        except OSError as exc:
            raise DataflowError(f"{self.out}: cannot write a build there ({exc.strerror}: {exc.filename}); choose a "
                                f"directory you can write (--out; --runs for the builds of train and eval)") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataflowError(f"another build is running in {self.out}; wait for it to finish "
                                f"or use another --out directory") from None

    def unlock(self) -> None:
        if self._lock_file:
            self._lock_file.close()
            self._lock_file = None

    def remove_stale_tmp(self) -> None:
        """Remove temporary directories left by builds that are no longer running."""
        if not self.tmp.exists():
            return
        for path in self.tmp.iterdir():
            parts = path.name.split(".")
            pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
            if pid is None or not _alive(pid) or pid == os.getpid():
                shutil.rmtree(path, ignore_errors=True)

    def started(self, pipeline: str) -> None:
        """Note that a build of ``pipeline`` began (the first unfinished attempt's time is kept)."""
        marker = self.root / UNFINISHED / f"{pipeline}.start"
        marker.parent.mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            marker.write_text(str(time.time()))

    def finished(self, pipeline: str) -> None:
        """A build of ``pipeline`` recorded its manifest: what it used is referenced from there."""
        (self.root / UNFINISHED / f"{pipeline}.start").unlink(missing_ok=True)

    def unfinished_since(self) -> float | None:
        """When the earliest build that has not recorded its manifest yet (interrupted, failed, killed) began."""
        starts = [float(p.read_text() or 0) for p in (self.root / UNFINISHED).glob("*.start")]
        return min(starts) if starts else None

    def clean(self, keep: set[str]) -> tuple[int, int]:
        """Delete cache entries whose fingerprint is not in ``keep``, except those written since a build that
        has not finished began (the next build resumes from them); (entries, bytes) freed."""
        removed = freed = 0
        if not self.cache.exists():
            return 0, 0
        since = self.unfinished_since()
        for entry in self.cache.iterdir():
            resumable = since is not None and (entry / META).exists() and (entry / META).stat().st_mtime >= since - 1
            if entry.name not in keep and not resumable:
                freed += sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
                shutil.rmtree(entry)
                removed += 1
        self.remove_stale_tmp()
        return removed, freed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
