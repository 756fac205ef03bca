"""Code-verification throughput with the sandbox limits on (issue 5).

Run: python benchmarks/sandbox.py [--programs 200] [--repeat 3]
Verifies a mix of passing, failing, crashing and blocked programs (each with its unit tests)
through the CodeVerify operator in a real build, and reports verifications per second.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results import write_section  # noqa: E402

from dataflow import Pipeline  # noqa: E402
from dataflow.build import build  # noqa: E402
from dataflow.operators.rewards.sandbox import Limits, network_isolation  # noqa: E402
from dataflow.operators import CodeVerify  # noqa: E402
from dataflow.progress import Progress  # noqa: E402

TESTS = "assert fib(10) == 55\nassert fib(1) == 1\nassert [fib(i) for i in range(6)] == [0, 1, 1, 2, 3, 5]"
PROGRAMS = [
    "```python\ndef fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n```",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "def fib(n):\n    return n * 2",  # wrong
    "def fib(n):\n    raise ValueError('no')",  # crashes
    "import socket\ndef fib(n):\n    return socket.gethostname()",  # blocked at call
]


def run_once(programs: int, limits: Limits) -> float:
    rows = [{"response": PROGRAMS[i % len(PROGRAMS)], "tests": TESTS, "variant": i} for i in range(programs)]
    p = Pipeline("sandbox_bench")
    p.output("o", p.from_rows(rows, name="src").apply(CodeVerify(limits=limits), name="verified"))
    out = Path(tempfile.mkdtemp(prefix="dataflow-bench-"))
    try:
        started = time.perf_counter()
        build(p, out, Progress(io.StringIO()))
        return time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    limits = Limits(wall_seconds=10, cpu_seconds=5, memory_mb=512)
    load = os.getloadavg()[0]
    seconds = statistics.median(run_once(args.programs, limits) for _ in range(args.repeat))
    body = "\n".join([
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; 1-min load "
        f"average at start {load:.2f}. Date: {time.strftime('%Y-%m-%d')}. Command: `python benchmarks/sandbox.py "
        f"--programs {args.programs} --repeat {args.repeat}`. Median of {args.repeat} builds.", "",
        "| programs | limits | network namespace | median build time | verifications/s |",
        "| --- | --- | --- | --- | --- |",
        f"| {args.programs} (pass, fail, crash, blocked mix) | {limits.wall_seconds:g}s wall, {limits.cpu_seconds}s CPU, "
        f"{limits.memory_mb} MB | {'yes (unshare -rn)' if network_isolation() else 'no (audit hook only)'} | "
        f"{seconds:.2f} s | {args.programs / seconds:.0f} |",
    ])
    write_section("sandbox", "Code verification throughput (issue 5)", body)


if __name__ == "__main__":
    main()
