"""Warm-cache rebuild of a 1,000-request generation node on the default model.

The first build fills a private request cache with real model calls (max_tokens=1, so filling
is quick); then ``dataflow build --rebuild generate`` re-runs the node in a fresh process: every
request must come from the cache, with zero model calls and no model load. Target: < 3 s.

    python benchmarks/llm_cache.py [--runs 3]

This file is also the benchmark's pipeline (``dataflow build benchmarks/llm_cache.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dataflow import Pipeline
from dataflow.operators import Generate

pipeline = Pipeline("llm_cache_bench", description="1,000 generation requests on the default model")
count = pipeline.param("requests", 1000)
rows = pipeline.from_rows([{"n": i} for i in range(count)], name="numbers")
pipeline.output("answers", rows.apply(Generate("Write the number {n} in words.", max_tokens=1, temperature=0.0),
                                      name="generate"))


def build(out: Path, env: dict, rebuild: bool) -> tuple[float, dict]:
    command = [sys.executable, "-m", "dataflow.cli", "build", __file__, "--out", str(out)]
    if rebuild:
        command += ["--rebuild", "generate"]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    manifest = json.loads((out / "manifest.json").read_text())
    return seconds, manifest["nodes"]["generate"]


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from llm_results import ROOT, median
    from results import load, run_facts, write_section

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data = ROOT / "benchmarks" / "data" / "llm_cache"
    data.mkdir(parents=True, exist_ok=True)
    cache = data / "llm_cache.sqlite"
    for stale in data.glob("llm_cache.sqlite*"):
        stale.unlink()
    env = {**os.environ, "DATAFLOW_LLM_CACHE": str(cache)}
    load_before = load()
    fill_s, filled = build(data / "out", env, rebuild=True)
    warm = [build(data / "out", env, rebuild=True) for _ in range(args.runs)]
    cached = [build(data / "out", env, rebuild=False) for _ in range(args.runs)]
    calls = [node["metrics"].get("llm_calls", 0) for _, node in warm]
    lines = run_facts() + [
        f"- pipeline: this file; 1,000 rows -> Generate(max_tokens=1) on the default model; private cache "
        f"{cache.relative_to(ROOT)}; load before: {load_before}, after: {load()}",
        f"- fill (cold cache, real model calls): {fill_s:.1f} s wall, node {filled['seconds']:.1f} s, "
        f"metrics {filled['metrics']}",
        "", "| build | median wall s (whole `dataflow build` process) | median node s | model calls |",
        "|---|---|---|---|",
        f"| `--rebuild generate`, warm request cache | {median([s for s, _ in warm]):.2f} | "
        f"{median([n['seconds'] for _, n in warm]):.2f} | {max(calls)} (cache_hits "
        f"{warm[0][1]['metrics'].get('cache_hits')}) |",
        f"| plain rebuild (node cached by fingerprint) | {median([s for s, _ in cached]):.2f} | 0 | 0 |",
        "", f"Target < 3 s and zero calls: {'met' if median([s for s, _ in warm]) < 3 and max(calls) == 0 else 'MISSED'} "
            f"(the wall time includes starting Python and importing polars/duckdb)."]
    write_section("llm-cache", "llm-cache: warm-cache rebuild of a 1,000-request generation node",
                  "\n".join(lines))


if __name__ == "__main__":
    main()
