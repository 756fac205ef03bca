"""What every benchmark shares: the facts of the run (date, machine, command, load) and writing its
section of benchmarks/RESULTS.md, replacing the section's previous version."""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section is written by the script it names; rerun the command to refresh it.\n"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min) / {five:.2f} (5 min)"


def settle(limit: float = 0.5, patience: float = 240.0) -> None:
    """Wait (up to ``patience`` seconds) until the 1-minute load average is at most ``limit``, so a
    section does not start in the wake of the previous one."""
    deadline = time.monotonic() + patience
    while os.getloadavg()[0] > limit and time.monotonic() < deadline:
        time.sleep(5)


THREAD_SETTINGS = ("POLARS_MAX_THREADS", "DATAFLOW_TORCH_THREADS", "OMP_NUM_THREADS")


def threads() -> str:
    """The thread settings every contender of this run inherits (unset: polars takes every core, dataflow's
    torch the cores minus the load average)."""
    return ", ".join(f"{name}={os.environ.get(name, 'unset')}" for name in THREAD_SETTINGS)


def run_facts() -> list[str]:
    """The date, machine, command and thread settings of this run, as the first lines of a section."""
    return [f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", f"- machine: {machine()}",
            f"- command: `python {' '.join(sys.argv)}`", f"- thread settings: {threads()}"]


def write_section(name: str, title: str, body: str, record: bool = True) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md, and print it; only print it unless ``record``."""
    if not record:
        print(body)
        return
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    section = f"<!-- begin:{name} -->\n## {title}\n\n{body.strip()}\n<!-- end:{name} -->"
    pattern = re.compile(rf"<!-- begin:{re.escape(name)} -->.*?<!-- end:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)
    print(body)
