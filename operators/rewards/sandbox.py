"""Run untrusted Python (model-written code) against its tests, isolated by the operating system.

Isolation (bubblewrap): new user, mount, PID, IPC, UTS, cgroup and network namespaces; a read-only
view of the Python installation and nothing else of the machine; a private, size-limited tmpfs as
the only writable place; a fresh /proc that shows only the sandbox's processes; an empty environment;
a non-root user without capabilities; rlimits on CPU, memory, file size, open files and threads; a
seccomp filter under which the program can start no process (no fork bomb, no detached grandchild).
At the wall limit the sandbox's PID namespace is killed whole. What the program prints is discarded;
what the tests print is read up to ``output_bytes``. Where bubblewrap or user namespaces are
missing, code is not run unless the caller asks for ``weak`` isolation, which says so loudly (a
plain subprocess, the seccomp filter and an audit hook).

Verdicts (the harness is trusted code inside the sandbox, loaded precompiled): it starts the program
in a child process before it reads the tests (compiled here, each ``assert`` made a recorded check),
so neither the program's memory nor its filesystem ever holds them; the tests run in the harness
and call the program's functions through a pipe, arguments and results crossing as plain data
(None, bool, int, float, complex, str, bytes and containers of them), so a returned object cannot
fake equality, and a program's name that is a builtin's (``def abs``) is not what the tests call;
the program cannot write the harness's report, which ends with a nonce the harness takes from its
pipe after the program's process exists and before the program runs (nor open another process's
/proc files: the sandbox's pid 1 holds that pipe). Exiting (``sys.exit``, ``os._exit``, exit handlers,
signals) only makes the program's calls fail. Each ``assert`` is a test: a failing one is recorded
and the tests go on, so the outcome says how many of how many passed.
"""

from __future__ import annotations

import ast
import errno
import functools
import marshal
import os
import platform
import secrets
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

HARNESS = r'''
import _ctypes, builtins, marshal, os, resource, sys

PLAIN = (type(None), bool, int, float, complex, str, bytes)
MB = 1024 * 1024


class CInt(_ctypes._SimpleCData):
    _type_ = "i"


class CByte(_ctypes._SimpleCData):
    _type_ = "B"


class CFunction(_ctypes.CFuncPtr):
    """A C library function of ints and byte strings (the ctypes package takes longer to import than a run)."""
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = CInt


prctl = CFunction(_ctypes.dlsym(_ctypes.dlopen(None), "prctl"))


def read_exactly(fd, size):
    data = b""
    while len(data) < size:
        part = os.read(fd, size - len(data))
        if not part:
            raise EOFError
        data += part
    return data


def receive(fd):
    return marshal.loads(read_exactly(fd, int.from_bytes(read_exactly(fd, 4), "big")))


def send(fd, value):
    data = marshal.dumps(value)
    data = len(data).to_bytes(4, "big") + data
    while data:
        data = data[os.write(fd, data):]


def plain(value, depth=0):
    if depth > 50:
        return False
    if type(value) in PLAIN:
        return True
    if type(value) in (list, tuple, set, frozenset):
        return all(plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(plain(k, depth + 1) and plain(v, depth + 1) for k, v in value.items())
    return False


def guard(event, args):
    """A second layer behind the namespaces: refuse what tests never need, with a reason."""
    if event.startswith(("socket.", "subprocess.Popen", "os.fork", "os.posix_spawn", "os.exec", "os.spawn",
                         "os.system", "os.kill", "ctypes.", "resource.setrlimit", "os.symlink", "os.link")):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open" and isinstance(args[0], (str, bytes)) and other_process(os.fsdecode(args[0])):
        raise PermissionError(f"sandbox: {args[0]!r}: another process's files are not allowed")


def other_process(path):
    """Whether ``path`` is under /proc/<pid> of a process other than this one (the sandbox's pid 1 holds the
    harness's pipes)."""
    parts = os.path.normpath(os.path.join(os.getcwd(), path)).split("/")
    return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and int(parts[2]) != os.getpid()


def forbid_processes(bpf):
    """Install the supervisor's seccomp filter: from here on, this process may start no other."""
    if not bpf:
        return
    code = (CByte * len(bpf)).from_buffer_copy(bpf)
    program = (len(bpf) // 8).to_bytes(2, sys.byteorder) + bytes(6) + _ctypes.addressof(code).to_bytes(8, sys.byteorder)
    if prctl(38, 1, 0, 0, 0) or prctl(22, 2, program, 0, 0):  # PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP (a sock_fprog)
        raise OSError(_ctypes.get_errno(), "sandbox: cannot install the seccomp filter")


def run_program(program, bpf, calls, replies):
    """The child: run the program (its output discarded), then call its functions on request."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.dup2(1, 2)
    low = 3
    for keep in sorted((calls, replies)):
        os.closerange(low, keep)
        low = keep + 1
    os.closerange(low, 4096)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        forbid_processes(bpf)
        sys.addaudithook(guard)
        exec(compile(program, "program.py", "exec"), namespace)
    except BaseException as exc:
        send(replies, ("failed", type(exc).__name__, str(exc)[:300]))
        os._exit(0)
    send(replies, ("ready", {name: ("value", value) if plain(value) else ("call", None)
                             for name, value in namespace.items() if not name.startswith("__")}))
    while True:
        _, name, args, kwargs = receive(calls)
        try:
            result = namespace[name](*args, **kwargs)
            reply = ("ok", result) if plain(result) else (
                "raise", "TypeError", f"{name}() returned a {type(result).__name__}, which tests cannot compare")
        except BaseException as exc:
            reply = ("raise", type(exc).__name__, str(exc)[:300])
        send(replies, reply)


class ProgramGone(Exception):
    pass


class Remote:
    """A function of the program, called in the program's process."""

    def __init__(self, name, calls, replies):
        self.name, self.calls, self.replies = name, calls, replies

    def __call__(self, *args, **kwargs):
        if not plain(args) or not plain(kwargs):
            raise TypeError(f"{self.name}() got an argument that is not plain data")
        try:
            send(self.calls, ("call", self.name, args, kwargs))
            reply = receive(self.replies)
        except (EOFError, OSError, ValueError):
            raise ProgramGone(f"the program exited or broke its channel during {self.name}()") from None
        if type(reply) is tuple and len(reply) == 2 and reply[0] == "ok" and plain(reply[1]):
            return reply[1]
        if type(reply) is tuple and len(reply) == 3 and reply[0] == "raise":
            kind = getattr(builtins, str(reply[1]), None)
            if isinstance(kind, type) and issubclass(kind, Exception) and kind not in (ProgramGone, StopIteration,
                                                                                         StopAsyncIteration):
                raise kind(reply[2])
            raise RuntimeError(f"{reply[1]}: {reply[2]}")
        raise ProgramGone(f"the program answered {self.name}() with something else than a result")


def run_tests(statements, namespace):
    """Run the tests' statements (compiled by the supervisor, asserts made into __check__ calls)."""
    results = []

    def check(test, line):
        try:
            results.append((line, bool(test()), ""))
        except BaseException as exc:
            results.append((line, False, f"{type(exc).__name__}: {str(exc)[:200]}"))

    namespace["__check__"] = check
    for line, code in statements:
        try:
            exec(code, namespace)
        except BaseException as exc:
            results.append((line, False, f"{type(exc).__name__}: {str(exc)[:200]}"))
    return results


def main():
    job = receive(0)
    for limit, value in ((resource.RLIMIT_AS, job["memory_mb"] * MB), (resource.RLIMIT_FSIZE, job["file_mb"] * MB),
                         (resource.RLIMIT_NOFILE, job["open_files"]), (resource.RLIMIT_NPROC, job["threads"]),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (job["cpu_seconds"], job["cpu_seconds"] + 1))
    calls_r, calls_w = os.pipe()
    replies_r, replies_w = os.pipe()
    go_r, go_w = os.pipe()
    prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: the program may not read this process
    child = os.fork()
    if child == 0:
        prctl(4, 1, 0, 0, 0)  # but it may read its own
        os.close(calls_w), os.close(replies_r), os.close(go_w)
        os.read(go_r, 1)  # the program starts once the nonce is out of the pipe the sandbox's pid 1 holds
        run_program(job["program"], job["no_new_processes"], calls_r, replies_w)
    os.close(calls_r), os.close(replies_w), os.close(go_r)
    nonce = receive(0)
    os.write(go_w, b"1")
    os.close(go_w)
    statements = receive(0)
    report = {"nonce": nonce, "results": [], "program": ""}
    try:
        first = receive(replies_r)
    except (EOFError, OSError, ValueError):
        first = ("failed", "exited", "the program exited before the tests ran")
    if first[0] == "ready" and type(first[1]) is dict:
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        for name, (kind, value) in first[1].items():  # the tests' builtins stay theirs: `def abs(x)` cannot fake
            if not hasattr(builtins, name):
                namespace[name] = value if kind == "value" else Remote(name, calls_w, replies_r)
        report["results"] = run_tests(statements, namespace)
    else:
        report["program"] = f"{first[1]}: {first[2]}"
    report["gone"] = first[0] != "ready" or any(why.startswith("ProgramGone") for _, _, why in report["results"])
    if not report["gone"]:
        os.kill(child, 9)
    _, status, usage = os.wait4(child, 0)
    report["exit"] = os.waitstatus_to_exitcode(status)
    report["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    sys.stdout.write("\n" + repr(report) + "\n")
    sys.stdout.flush()
    os._exit(0)  # no interpreter teardown: it would cost more than the tests


main()
'''

STATUSES = ("passed", "failed", "error", "timeout", "memory", "blocked", "crashed")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run. The program may start no process; ``threads`` bounds
    its threads beyond the tasks the user already runs (RLIMIT_NPROC, not applied to root, whose
    threads memory bounds)."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_mb: int = 512
    file_mb: int = 16
    tmp_mb: int = 64
    threads: int = 64
    open_files: int = 64
    output_bytes: int = 16_384


@dataclass
class Outcome:
    """How a run ended: ``status`` is one of STATUSES; ``tests_passed`` of ``tests_total`` asserts."""

    status: str
    detail: str
    seconds: float
    tests_passed: int = 0
    tests_total: int = 0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class SandboxUnavailable(RuntimeError):
    """The machine cannot isolate untrusted code (no bubblewrap, or no user namespaces)."""


@functools.cache
def bubblewrap() -> str | None:
    """Why bubblewrap cannot isolate code here, or None when it can."""
    if platform.machine() not in PROCESS_CALLS:
        return f"no seccomp filter for {platform.machine()} machines (only {', '.join(PROCESS_CALLS)})"
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    probe = subprocess.run(["bwrap", *sandbox_arguments(Limits()), "--", python(), "-I", "-S", "-c", "pass"],
                           capture_output=True, text=True, env={})
    if probe.returncode != 0:
        return (f"bubblewrap cannot create namespaces here ({probe.stderr.strip()[:200]}); enable unprivileged "
                f"user namespaces (sysctl kernel.unprivileged_userns_clone=1) or run in a container that allows them")
    return None


def python() -> str:
    return os.path.realpath(sys.executable)


def sandbox_arguments(limits: Limits) -> list[str]:
    """bwrap options: every namespace, a read-only Python installation, a private /tmp."""
    binds = ["--ro-bind", "/usr", "/usr"]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            binds += ["--symlink", os.readlink(target), str(target)]
        elif target.is_dir():
            binds += ["--ro-bind", str(target), str(target)]
    prefix = Path(sys.base_prefix).resolve()
    if not str(prefix).startswith("/usr/"):
        binds += ["--ro-bind", str(prefix), str(prefix)]
    return ["--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL",
            "--die-with-parent", "--new-session", "--clearenv", *binds, "--proc", "/proc", "--dev", "/dev",
            "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp", "--chdir", "/tmp", "--setenv", "HOME", "/tmp"]


PROCESS_CALLS = {  # machine: (its seccomp audit arch, clone, clone3, calls that always start a process)
    "x86_64": (0xC000003E, 56, 435, (57, 58)),
    "aarch64": (0xC00000B7, 220, 435, ()),
}


@functools.cache
def no_new_processes() -> bytes:
    """A seccomp filter (classic BPF) that lets the program run threads but start no process: fork,
    vfork and clone without CLONE_THREAD fail with EPERM, clone3 with ENOSYS (so libc uses clone),
    and calls of another ABI (i386, x32) with EPERM. Unlike RLIMIT_NPROC it holds for root too."""
    if platform.machine() not in PROCESS_CALLS:
        return b""  # bubblewrap() refuses such machines; weak isolation goes without the filter
    arch, clone, clone3, forks = PROCESS_CALLS[platform.machine()]
    load, equal, at_least, has_bits, give = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x50000 | errno.EPERM, 0x50000 | errno.ENOSYS

    def op(code: int, k: int, jump_true: int = 0, jump_false: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jump_true, jump_false, k)

    program = [op(load, 4), op(equal, arch, 1), op(give, eperm),  # seccomp_data.arch
               op(load, 0), op(at_least, 0x40000000, 0, 1), op(give, eperm),  # seccomp_data.nr; x32 calls
               op(equal, clone3, 0, 1), op(give, enosys)]
    for call in forks:
        program += [op(equal, call, 0, 1), op(give, eperm)]
    program += [op(equal, clone, 1), op(give, allow),
                op(load, 16), op(has_bits, 0x10000, 0, 1), op(give, allow), op(give, eperm)]  # args[0] & CLONE_THREAD
    return b"".join(program)


def user_processes() -> int:
    """How many processes this user runs now (RLIMIT_NPROC counts them all)."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        try:
            count += entry.name.isdigit() and entry.stat().st_uid == uid
        except OSError:
            continue
    return count


def run_tests(program: str, tests: str, limits: Limits = Limits(), weak: bool = False) -> Outcome:
    """Run ``program`` and then ``tests`` against it in the sandbox (see the module docstring).

    Raises SandboxUnavailable where code cannot be isolated, unless ``weak`` accepts a plain
    subprocess (which warns)."""
    statements = compiled_tests(tests)
    if isinstance(statements, str):
        return Outcome("error", f"the tests do not compile: {statements}", 0.0)
    problem = bubblewrap()
    if problem and not weak:
        raise SandboxUnavailable(problem)
    if problem:
        warnings.warn(f"running untrusted code WITHOUT OS isolation ({problem})", RuntimeWarning, stacklevel=2)
        command = [python(), "-I", "-S", "-c", BOOT]
    else:
        command = ["bwrap", *sandbox_arguments(limits), "--", python(), "-I", "-S", "-c", BOOT]
    nonce = secrets.token_hex(16)
    job = {"program": program, "cpu_seconds": limits.cpu_seconds, "memory_mb": limits.memory_mb,
           "file_mb": limits.file_mb, "open_files": limits.open_files, "threads": user_processes() + limits.threads,
           "no_new_processes": no_new_processes()}
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env={})  # bwrap's own process in the sandbox shows its environment
    try:
        out, err, timed_out = _talk(proc, [harness(), frame(job), frame(nonce), statements], limits)
    finally:
        _kill_group(proc.pid)
        proc.wait()
    return verdict(out, err, nonce, proc.returncode, timed_out, time.perf_counter() - started, limits)


@functools.cache
def harness() -> bytes:
    """The harness, compiled here: the sandbox's Python only loads it (BOOT reads this many bytes)."""
    return marshal.dumps(compile(HARNESS, "harness.py", "exec", dont_inherit=True))


BOOT = ("import marshal, os\nsize, code = {size}, b''\nwhile len(code) < size:\n"
        "    code += os.read(0, size - len(code))\nexec(marshal.loads(code))")
BOOT = BOOT.format(size=len(harness()))


# CPython's AST constructor (3.11 at least) keeps one recursion count per interpreter: parsing in two threads at
# once (the verifiers run programs from a thread pool) can fail with "SystemError: AST constructor recursion depth
# mismatch".
AST_LOCK = threading.Lock()


class _Asserts(ast.NodeTransformer):
    """assert TEST, MSG -> __check__(lambda: TEST, LINE): recorded, and the tests go on."""

    def visit_Assert(self, node: ast.Assert) -> ast.Expr:
        test = ast.Lambda(ast.arguments([], [], None, [], [], None, []), node.test)
        check = ast.Call(ast.Name("__check__", ast.Load()), [test, ast.Constant(node.lineno)], [])
        return ast.copy_location(ast.Expr(check), node)


@functools.lru_cache(maxsize=256)  # best-of-K verifies K programs against the same tests
def compiled_tests(tests: str) -> bytes | str:
    """The tests' statements (line, code) compiled and framed for the harness, or why they do not compile."""
    try:
        with AST_LOCK:
            tree = ast.fix_missing_locations(_Asserts().visit(ast.parse(tests, "tests.py")))
            return frame([(statement.lineno, compile(ast.Module([statement], []), "tests.py", "exec",
                                                     dont_inherit=True)) for statement in tree.body])
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return f"{type(exc).__name__}: {exc}"


def frame(value) -> bytes:
    data = marshal.dumps(value)
    return len(data).to_bytes(4, "big") + data


def _talk(proc: subprocess.Popen, frames: list[bytes], limits: Limits) -> tuple[bytes, bytes, bool]:
    """Send the frames, read stdout and stderr (each up to the output cap, the rest dropped) until
    both close or the wall limit passes."""
    deadline = time.monotonic() + limits.wall_seconds
    try:
        proc.stdin.write(b"".join(frames))
        proc.stdin.close()
    except BrokenPipeError:
        pass
    kept = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    cap = limits.output_bytes + 65536  # the report's own line fits beyond what the tests print
    with selectors.DefaultSelector() as selector:
        for stream in (proc.stdout, proc.stderr):
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(kept[proc.stdout.fileno()]), bytes(kept[proc.stderr.fileno()]), True
            for key, _ in selector.select(timeout=left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                elif len(kept[key.fd]) < cap:
                    kept[key.fd] += chunk[:cap - len(kept[key.fd])]
    return bytes(kept[proc.stdout.fileno()]), bytes(kept[proc.stderr.fileno()]), False


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def verdict(out: bytes, err: bytes, nonce: str, code: int | None, timed_out: bool, seconds: float,
            limits: Limits) -> Outcome:
    """The outcome from the harness's report (its last line, which must carry the nonce)."""
    if timed_out:
        return Outcome("timeout", f"killed after {limits.wall_seconds:g}s wall time", seconds)
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        with AST_LOCK:
            report = ast.literal_eval(lines[-1]) if lines else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        report = None
    if not isinstance(report, dict) or report.get("nonce") != nonce:
        last = (err.decode(errors="replace").strip().splitlines() or [f"exit status {code}"])[-1]
        return Outcome("crashed", f"the harness did not report: {last[-300:]}", seconds)
    results = report["results"]
    passed = sum(ok for _, ok, _ in results)
    if report["gone"] and (report["exit"] == -signal.SIGXCPU or report["cpu_seconds"] >= 0.95 * limits.cpu_seconds):
        return Outcome("timeout", "CPU time limit exceeded", seconds, passed, len(results))
    if report["program"]:
        return Outcome(_status(report["program"], "error"), f"program: {report['program']}", seconds, 0, len(results))
    if not results:
        return Outcome("failed", "no test ran (the tests hold no assert)", seconds)
    if passed == len(results):
        return Outcome("passed", "", seconds, passed, len(results))
    line, _, why = next(r for r in results if not r[1])
    reason = (why or "AssertionError") + _ended(report)
    return Outcome(_status(reason, "failed"), f"{reason} at tests line {line} ({passed} of {len(results)} passed)",
                   seconds, passed, len(results))


def _ended(report: dict) -> str:
    """How the program's process ended, when it ended before the tests did."""
    if not report["gone"]:
        return ""
    code = report["exit"]
    try:
        return f" (the program ended by signal {signal.Signals(-code).name})" if code < 0 else \
            f" (the program ended with exit status {code})"
    except ValueError:
        return f" (the program ended by signal {-code})"


def _status(reason: str, default: str) -> str:
    if "MemoryError" in reason:
        return "memory"
    if "sandbox:" in reason:
        return "blocked"
    return default
