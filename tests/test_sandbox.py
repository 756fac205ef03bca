"""Hostile code in the sandbox: every snippet is a wrong solution plus an attack; none may pass its
test, and containment is checked from outside (files, network, processes, secrets, time)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time

import pytest

from conftest import REPO
from dataflow.operators.rewards.sandbox import PROCESS_CALLS, Limits, bubblewrap, run_tests

LIMITS = Limits(wall_seconds=4, cpu_seconds=2, memory_mb=256, file_mb=8, tmp_mb=16, output_bytes=4096)
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
WRONG = "def add(a, b):\n    return 0\n"
# Switch the audit hook off first, so that what follows meets the OS isolation alone.
UNGUARD = ("import gc\nfor f in gc.get_objects():\n    if getattr(f, '__name__', '') == 'guard' and hasattr(f, '__code__'):"
           "\n        f.__code__ = (lambda event, args: None).__code__\n")
FAKE_REPORT = "{'nonce': 'x', 'results': [(1, True, ''), (2, True, '')], 'program': '', 'ended': ''}"

FORGERIES = {
    "sys.exit at top level": "import sys\nsys.exit(0)",
    "SystemExit at top level": "raise SystemExit(0)",
    "os._exit at top level": "import os\nos._exit(0)",
    "exit handler with os._exit": "import atexit, os\natexit.register(os._exit, 0)",
    "SystemExit in the function": "def add(a, b):\n    raise SystemExit(0)",
    "os._exit in the function": "def add(a, b):\n    import os\n    os._exit(0)",
    "exit in the function, unguarded": UNGUARD + "def add(a, b):\n    import os\n    os.kill(os.getpid(), 9)",
    "an object equal to everything": "class E:\n    def __eq__(self, other): return True\n    __ne__ = __eq__\n"
                                     "def add(a, b): return E()",
    "an int subclass equal to everything": "class I(int):\n    def __eq__(self, other): return True\n"
                                           "def add(a, b): return I(0)",
    "tests searched in memory": "import gc\nseen = [o for o in gc.get_objects() if isinstance(o, str) and 'assert' in o]\n"
                                "def add(a, b): return 5 if seen else 0",
    "tests searched on disk": "import glob\nfound = [f for f in glob.glob('/**/*', recursive=True) if 'test' in f]\n"
                              "def add(a, b): return 5 if found else 0",
    "a fake report on stdout": f"print({FAKE_REPORT!r})",
    "a fake report written to fd 1": f"import os\nos.write(1, ('\\n' + {FAKE_REPORT!r} + '\\n').encode())",
    "a fake report through /proc": UNGUARD + "import os\ntry:\n    open(f'/proc/{os.getppid()}/fd/1', 'w').write("
                                   f"'\\n' + {FAKE_REPORT!r} + '\\n')\nexcept OSError:\n    pass",
    "the parent's memory read": UNGUARD + "import os\ndef add(a, b):\n    try:\n        data = open(f'/proc/{os.getppid()}"
                                "/mem', 'rb').read(10)\n        return 5\n    except OSError:\n        return 0",
    "the harness killed": UNGUARD + "import os\nos.kill(os.getppid(), 9)",
    "builtins replaced": "import builtins\nbuiltins.AssertionError = type('Nothing', (Exception,), {})\n"
                         "builtins.bool = lambda value: True",
    "the harness traced": UNGUARD + "import ctypes, os\nok = ctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0) == 0\n"
                          "def add(a, b): return 5 if ok else 0",
    "signals ignored, then a loop": "import signal\nfor s in (signal.SIGTERM, signal.SIGXCPU):\n"
                                    "    signal.signal(s, signal.SIG_IGN)\ndef add(a, b):\n    while True: pass",
    "infinite recursion": "import sys\nsys.setrecursionlimit(10 ** 6)\ndef add(a, b): return add(a, b)",
}

STEAL_NONCE = UNGUARD + """import os
fd = os.open('/proc/1/fd/0', os.O_RDONLY)
data = b''
while chunk := os.read(fd, 65536):
    data += chunk
report = {'nonce': data[-32:].decode('ascii', 'replace'), 'results': [(1, True, '')], 'program': '', 'gone': False,
          'exit': 0, 'cpu_seconds': 0.0}
os.write(os.open('/proc/1/fd/1', os.O_WRONLY), ('\\n' + repr(report) + '\\n').encode())
""" + WRONG
SHADOWS = {  # a program's names that shadow the builtins the tests use
    "abs": ("def area(r):\n    return 1\ndef abs(x):\n    return 0\n",
            "assert abs(area(2.0) - 12.566370614359172) < 1e-6"),
    "len and zip": ("def pairs(n):\n    return []\nlen = lambda x: 3\nzip = lambda *a: []\n",
                    "assert len(pairs(3)) == 3\nfor a, b in zip(pairs(3), [(0, 1)] * 3):\n    assert a == b"),
    "StopIteration ends a map": ("def is_even(n):\n    return next(iter([]))\n",
                                 "assert all(map(is_even, [2, 4, 6]))\nassert not any(map(is_even, [1, 3]))"),
}

ESCAPES = {
    "write after chdir": "import os\nos.chdir('/')\nopen(VICTIM, 'w').write('overwritten')",
    "write through dir_fd": "import os\nfd = os.open(os.path.dirname(VICTIM), os.O_RDONLY)\n"
                            "os.open(os.path.basename(VICTIM), os.O_WRONLY | os.O_TRUNC, dir_fd=fd)",
    "unguarded write": UNGUARD + "open(VICTIM, 'w').write('overwritten')",
    "mknod outside": UNGUARD + "import os\nos.mknod(MARKER)",
    "mkfifo outside": UNGUARD + "import os\nos.mkfifo(MARKER)",
    "xattr on a file outside": UNGUARD + "import os\nos.setxattr(VICTIM, 'user.x', b'1')",
    "remove outside": UNGUARD + "import os\nos.remove(VICTIM)",
    "a shell that writes outside": UNGUARD + "import os\nos.posix_spawn('/bin/sh', ['sh', '-c', 'echo x > ' + MARKER], {})",
    "fork_exec of a shell": UNGUARD + "import _posixsubprocess, os\nr, w = os.pipe()\n_posixsubprocess.fork_exec("
                            "['/bin/sh', '-c', 'touch ' + MARKER], [b'/bin/sh'], True, (), None, None, -1, -1, -1, -1, -1, -1,"
                            " r, w, True, False, 0, None, None, None, -1, None, False)",
    "a detached grandchild": UNGUARD + "import os\nif os.fork() == 0:\n    os.setsid()\n"
                             "    os.execv('/usr/bin/sleep', ['sleep', '31.4159'])",
    "a detached grandchild holding the pipes": UNGUARD + "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
                                               "    time.sleep(30)\n    open(MARKER, 'w')",
    "a fork bomb": UNGUARD + "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "a thread bomb": "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()",
    "another process signalled": UNGUARD + "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(OUTSIDE_PID), 9)",
    "every process signalled": UNGUARD + "import os\nos.kill(-1, 9)",
    "bwrap's own environment": UNGUARD + "raise Exception([v for v in open('/proc/1/environ').read().split('\\0') if 'SECRET' in v])",
    "a TCP connection to the host": UNGUARD + "import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=1)",
    "a guarded TCP connection": "import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=1)",
    "/etc/passwd in the verdict": "raise Exception(open('/etc/passwd').read())",
    "a project file in the verdict": "raise Exception(open(PROJECT_FILE).read())",
    "secrets from the environment": "import os\nraise Exception(str([v for k, v in os.environ.items() if 'SECRET' in k]))",
    "secrets from the parent's environ": UNGUARD + "import os\nraise Exception(open(f'/proc/{os.getppid()}/environ').read())",
    "secrets from every process": UNGUARD + "import os\nseen = []\nfor p in os.listdir('/proc'):\n    try:\n"
                                  "        seen += [v for v in open(f'/proc/{p}/environ').read().split('\\0') if 'SECRET' in v]"
                                  "\n    except OSError:\n        pass\nraise Exception(str(seen))",
    "the host's processes listed": "import os\nraise Exception(str([p for p in os.listdir('/proc') if p.isdigit()]))",
    "a gigabyte on stdout": "import sys\nfor _ in range(1024):\n    sys.stdout.write('x' * (1 << 20))",
    "a big file": "open('/tmp/big', 'wb').write(b'x' * (200 << 20))",
    "the private tmp filled": "for i in range(100):\n    open(f'/tmp/f{i}', 'wb').write(b'x' * (4 << 20))",
    "a write into /usr": "open('/usr/evil', 'w').write('x')",
    "all the memory": "x = bytearray(50 * 1024 ** 3)",
}


@pytest.fixture
def world(tmp_path, monkeypatch):
    """What the snippets aim at, outside the sandbox."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    outside = subprocess.Popen(["sleep", "60"])
    monkeypatch.setenv("DATAFLOW_TEST_SECRET", "hunter2-secret")
    yield {"VICTIM": repr(str(victim)), "MARKER": repr(str(tmp_path / "marker")), "PORT": str(listener.getsockname()[1]),
           "OUTSIDE_PID": str(outside.pid), "PROJECT_FILE": repr(str(REPO / "README.md")),
           "victim": victim, "marker": tmp_path / "marker", "listener": listener, "outside": outside}
    outside.kill()
    listener.close()


def attack(world: dict, snippet: str):
    for name in ("VICTIM", "MARKER", "PORT", "OUTSIDE_PID", "PROJECT_FILE"):
        snippet = snippet.replace(name, world[name])
    started = time.monotonic()
    outcome = run_tests(WRONG + snippet, TESTS, LIMITS)
    return outcome, time.monotonic() - started


def assert_contained(world: dict, outcome, seconds: float) -> None:
    assert not outcome.passed and outcome.tests_passed < 2, outcome
    assert world["victim"].read_text() == "precious"
    assert not world["marker"].exists()
    with pytest.raises(OSError):  # socket.timeout: nothing connected from the sandbox
        world["listener"].accept()
    assert world["outside"].poll() is None, "a process outside the sandbox was killed"
    assert seconds < LIMITS.wall_seconds + 3
    for secret in ("hunter2-secret", "root:x:0:0", "Build the data for post-training"):
        assert secret not in outcome.detail
    assert len(outcome.detail) < 2000
    time.sleep(0.05)
    leftovers = subprocess.run(["pgrep", "-f", "sleep 31.4159"], capture_output=True, text=True).stdout
    assert not leftovers.strip(), "a process started in the sandbox outlived it"


def test_a_nonce_read_from_the_sandboxes_pid_1_cannot_forge_a_report_even_with_large_tests():
    large = TESTS + "\n" + "".join(f"v{i} = {i}\n" for i in range(20000))  # past the pipe's buffer
    outcome = run_tests(STEAL_NONCE, large, LIMITS)
    assert not outcome.passed, outcome


@pytest.mark.parametrize("name", SHADOWS)
def test_names_of_the_program_do_not_stand_for_the_builtins_the_tests_use(name):
    program, tests = SHADOWS[name]
    outcome = run_tests(program, tests, LIMITS)
    assert not outcome.passed, outcome


def test_this_machine_isolates_code():
    assert bubblewrap() is None, bubblewrap()


@pytest.mark.parametrize("name", FORGERIES)
def test_a_wrong_solution_cannot_forge_a_pass(world, name):
    assert_contained(world, *attack(world, FORGERIES[name]))


@pytest.mark.parametrize("name", ESCAPES)
def test_hostile_code_stays_in_the_sandbox(world, name):
    assert_contained(world, *attack(world, ESCAPES[name]))


def test_a_right_solution_passes_and_partial_credit_counts_asserts(world):
    right = run_tests("def add(a, b):\n    return a + b", TESTS, LIMITS)
    assert right.passed and (right.tests_passed, right.tests_total) == (2, 2)
    half = run_tests("def add(a, b):\n    return 5", TESTS, LIMITS)
    assert half.status == "failed" and (half.tests_passed, half.tests_total) == (1, 2)
    assert half.detail.startswith("AssertionError at tests line 2")


def test_the_wall_limit_holds_with_a_sleeping_program_and_a_slow_function():
    for program in ("import time\ntime.sleep(60)", "import time\ndef add(a, b):\n    time.sleep(60)"):
        outcome = run_tests(program, TESTS, Limits(wall_seconds=1))
        assert outcome.status == "timeout" and outcome.seconds < 2.5


def test_the_program_writes_its_own_tmp_and_sees_no_secrets(monkeypatch):
    monkeypatch.setenv("DATAFLOW_TEST_SECRET", "hunter2")
    program = ("import os\nopen('scratch.txt', 'w').write('ok')\n"
               "def add(a, b):\n    return a + b if 'DATAFLOW_TEST_SECRET' not in os.environ else 0")
    assert run_tests(program, TESTS, LIMITS).passed


def test_a_fork_bomb_is_bounded_while_it_runs():
    import threading

    def processes() -> int:
        return sum(name.isdigit() for name in os.listdir("/proc"))

    before, peak, running = processes(), [0], [True]

    def watch():
        while running[0]:
            peak[0] = max(peak[0], processes())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    bomb = UNGUARD + "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    outcome = run_tests(bomb, TESTS, Limits(wall_seconds=2, threads=32))
    running[0] = False
    watcher.join()
    assert outcome.status == "timeout"
    assert peak[0] - before <= 32 + 24, f"{peak[0] - before} processes at the peak"


def test_the_program_runs_threads_but_starts_no_process():
    """The seccomp filter: every way to a new process fails with EPERM, even with the audit hook off."""
    tests, clone = "raise Exception(repr(f()))", PROCESS_CALLS[platform.machine()][1]
    for attempt in ("os.fork()", "os.posix_spawn('/bin/true', ['true'], {})", "subprocess.run(['true'])",
                    f"ctypes.CDLL(None, use_errno=True).syscall({clone}, 17, 0, 0, 0, 0) == 0 or ctypes.get_errno()"):
        program = UNGUARD + f"import ctypes, os, subprocess\ndef f():\n    try:\n        return {attempt}\n" \
                            "    except OSError as e:\n        return e.errno"
        outcome = run_tests(program, tests, LIMITS)
        assert outcome.detail.startswith("Exception: 1 at tests line 1"), (attempt, outcome)  # errno 1: EPERM
    threads = "from concurrent.futures import ThreadPoolExecutor\ndef f():\n" \
              "    with ThreadPoolExecutor(4) as pool:\n        return sum(pool.map(abs, range(-9, 0)))"
    assert run_tests(threads, "assert f() == 45", LIMITS).passed


def test_tests_that_do_not_compile_are_an_error_of_the_row_not_of_the_program():
    outcome = run_tests("def add(a, b):\n    return a + b", "assert add(1, 2) == 3\nassert add(", LIMITS)
    assert outcome.status == "error" and outcome.detail.startswith("the tests do not compile: SyntaxError")
