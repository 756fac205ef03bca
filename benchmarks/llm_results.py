"""Shared helpers of the LLM benchmarks: prompts and medians (run facts and sections: results.py)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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


def median(values: list[float]) -> float:
    return statistics.median(values)
