"""Shared helpers of the LLM benchmarks: prompts, machine facts, and RESULTS.md sections."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def chat_prompts(count: int) -> list[str]:
    """User instructions from the quickstart data (the file has a few deliberately broken lines)."""
    found = []
    for line in (ROOT / "pipelines" / "data" / "instructions.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        text = row.get("instruction") if isinstance(row, dict) else None
        if isinstance(text, str) and text.strip() and text not in found:
            found.append(text.strip())
    return found[:count]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    cores = len(os.sched_getaffinity(0))
    return f"{cpu}, {cores} cores, Python {platform.python_version()}"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min) / {five:.2f} (5 min)"


def median(values: list[float]) -> float:
    return statistics.median(values)


def header(title: str) -> list[str]:
    return [f"## {title}", "", f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            f"- machine: {machine()}", f"- command: `python {' '.join(sys.argv)}`"]


def write_section(name: str, lines: list[str]) -> None:
    """Replace (or append) the section between this benchmark's markers in RESULTS.md."""
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    block = "\n".join([begin, *lines, end])
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    print("\n".join(lines))
