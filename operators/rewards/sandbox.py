"""Run untrusted Python (model-written code and its tests) in a sandboxed subprocess.

The child runs in a fresh temporary directory that is deleted afterwards, with an empty
environment (no secrets), in its own process group (killed whole on timeout), in a network
namespace of its own where user namespaces are available, and behind a guard that sets
memory/CPU/file-size limits and installs an audit hook refusing sockets, process creation,
native libraries, and writes or deletions outside its directory.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GUARD = r'''
import os, resource, sys
SANDBOX = os.path.realpath(os.getcwd())
MB = 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, ({memory_mb} * MB, {memory_mb} * MB))
resource.setrlimit(resource.RLIMIT_CPU, ({cpu_seconds}, {cpu_seconds}))
resource.setrlimit(resource.RLIMIT_FSIZE, ({file_mb} * MB, {file_mb} * MB))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

def inside(path):
    try:
        path = os.fsdecode(path)
    except TypeError:
        return False
    return os.path.realpath(os.path.join(SANDBOX, path)).startswith(SANDBOX + os.sep)

BLOCKED = ("socket.", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn", "os.system",
           "os.kill", "os.killpg", "subprocess.Popen", "ctypes.", "pty.", "os.setuid", "resource.setrlimit")
PATH_EVENTS = ("os.remove", "os.rmdir", "os.rename", "os.replace", "os.chmod", "os.chown", "os.truncate",
               "os.mkdir", "os.symlink", "os.link", "shutil.rmtree", "shutil.move", "os.utime")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def guard(event, args):
    if event.startswith(BLOCKED):
        raise PermissionError(f"sandbox: {{event}} is not allowed")
    if event in PATH_EVENTS and not all(inside(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))):
        raise PermissionError(f"sandbox: {{event}} outside the sandbox directory")
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = args
        writing = any(c in (mode or "") for c in "wax+") or (flags or 0) & WRITE_FLAGS
        text = os.fsdecode(path)
        if writing and not inside(path):
            raise PermissionError("sandbox: writing outside the sandbox directory")
        if text.startswith("/proc/") and not text.startswith("/proc/self/"):
            raise PermissionError("sandbox: reading other processes is not allowed")

sys.addaudithook(guard)
del guard
with open("program.py") as f:
    source = f.read()
exec(compile(source, "program.py", "exec"), {{"__name__": "__main__"}})
'''


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_mb: int = 512
    file_mb: int = 16
    output_bytes: int = 16_384


@dataclass
class Outcome:
    """How a sandboxed run ended: ``status`` is passed, failed, timeout, memory or blocked."""

    status: str
    detail: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def network_isolation() -> list[str]:
    """The command prefix that runs a program without network, when this machine allows it."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn", "--"]
    return []  # the audit hook still refuses sockets


def run_python(program: str, limits: Limits = Limits()) -> Outcome:
    """Run ``program`` under the sandbox; exit status 0 means passed."""
    workdir = Path(tempfile.mkdtemp(prefix="dataflow-sandbox-"))
    started = time.perf_counter()
    try:
        (workdir / "program.py").write_text(program)
        (workdir / "guard.py").write_text(GUARD.format(memory_mb=limits.memory_mb, cpu_seconds=limits.cpu_seconds,
                                                       file_mb=limits.file_mb))
        command = [*network_isolation(), sys.executable, "-I", "-S", "-B", "guard.py"]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8"}
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.communicate()
            return Outcome("timeout", f"killed after {limits.wall_seconds:g}s wall time", time.perf_counter() - started)
        finally:
            _kill_group(proc.pid)  # nothing the program started outlives it
        return _outcome(proc.returncode, err[-limits.output_bytes:].decode(errors="replace"),
                        time.perf_counter() - started)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _outcome(code: int, stderr: str, seconds: float) -> Outcome:
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    if code == 0:
        return Outcome("passed", "", seconds)
    if code in (-signal.SIGXCPU, -signal.SIGKILL) and not last:
        return Outcome("timeout", "CPU time limit exceeded", seconds)
    if "MemoryError" in last:
        return Outcome("memory", "memory limit exceeded", seconds)
    if "sandbox:" in last:
        return Outcome("blocked", last[-300:], seconds)
    return Outcome("failed", last[-300:] or f"exit status {code}", seconds)
