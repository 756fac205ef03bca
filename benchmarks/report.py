"""The HTML build report: generation time and file size for the quickstart, the flagship recipe and a
build of 1,000,000 instruction rows (exact dedup, a length and a quality score, two filters, conversations,
a split: 370,000 rejects, 630,000 rows out), whose report aggregates every node and samples the rejects.
Targets at 1M rows: < 5 s and < 5 MB. Each build is made first (the recipe from the shared LLM request cache
when it is warm: ~5 min of model time when cold); then the report is written three times in this process
(the median is shown) and once in a fresh process (imports and reading the cached Vega bundle included).

    python benchmarks/report.py [--rows 1000000] [--recipe-set topics=6 ...]

This file is also the 1M-row build's pipeline (``dataflow build benchmarks/report.py``).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from dataflow import Pipeline
from dataflow.operators import ToConversation

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data" / "report"
ROWS_FILE = DATA / "rows.parquet"
WORDS = np.array(("data model train answer question clear short long python code write explain plan budget garden "
                  "recipe travel interview email language fitness star market step first then because however "
                  "example").split())
TOPICS = np.array(["cooking", "finance", "gardening", "python", "travel", "writing"])

pipeline = Pipeline("report_bench", description="1M instruction rows: dedup, scores, filters, conversations, split")
deduped = pipeline.read_parquet(ROWS_FILE, name="raw").dedup("instruction", name="deduped")
scored = deduped.map(words=pl.col("output").str.count_matches(r"\S+"),
                     quality=(pl.col("instruction").hash(7) % 1000).cast(pl.Float64) / 200, name="scored")
kept = scored.filter(pl.col("words") >= 8, reason="response under 8 words", name="long_enough") \
    .filter(pl.col("quality") >= 1.0, reason="quality below 1.0", name="good")
chats = kept.select("id", "instruction", "output", "topic", name="alpaca").apply(ToConversation(), name="chats")
train, evaluation = chats.split(eval_fraction=0.01, seed=0)
pipeline.output("train", train, schema="sft")
pipeline.output("eval", evaluation, schema="sft")


def make_rows(n: int) -> None:
    """``n`` instructions of 6-12 words with responses of 1-40 words; ~5% repeat an earlier instruction."""
    if ROWS_FILE.exists() and pl.scan_parquet(ROWS_FILE).select(pl.len()).collect().item() == n:
        return
    rng = np.random.default_rng(0)

    def texts(count: int, low: int, high: int) -> list[str]:
        lengths = rng.integers(low, high + 1, count)
        words = WORDS[rng.integers(0, len(WORDS), lengths.sum())]
        return [" ".join(chunk) for chunk in np.split(words, np.cumsum(lengths)[:-1])]

    instructions = texts(n, 6, 12)
    repeats = rng.integers(0, n, n // 20)
    for i, source in zip(rng.integers(0, n, n // 20), repeats):
        instructions[i] = instructions[source]
    DATA.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"instruction": instructions, "output": texts(n, 1, 40),
                  "topic": TOPICS[rng.integers(0, len(TOPICS), n)]}).write_parquet(ROWS_FILE)


def build_into(file: Path, out: Path, settings: list[str]) -> float:
    from dataflow.build import build, load_pipeline
    from dataflow.progress import Progress

    started = time.perf_counter()
    pipe = load_pipeline(file, dict(s.split("=", 1) for s in settings))
    build(pipe, out, Progress(io.StringIO()))
    return time.perf_counter() - started


def time_report(out: Path) -> tuple[float, float, int]:
    """Median seconds of three in-process reports, seconds of one in a fresh process, and the file's bytes."""
    from dataflow.reports.html import write

    runs = []
    for _ in range(3):
        started = time.perf_counter()
        path = write(out)
        runs.append(time.perf_counter() - started)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"from dataflow.reports.html import write; write({str(out)!r})"],
                   check=True, cwd=ROOT)
    return statistics.median(runs), time.perf_counter() - started, path.stat().st_size


def main() -> None:
    sys.path.insert(0, str(HERE))
    from results import load, run_facts, settle, write_section

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--recipe-set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="parameters of the recipe build (default: its defaults)")
    args = parser.parse_args()
    make_rows(args.rows)
    settle()
    before = os.getloadavg()[0]
    load_before = load()
    cases = [("quickstart", ROOT / "pipelines" / "quickstart.py", []),
             ("post_training_recipe" + (f" ({' '.join(args.recipe_set)})" if args.recipe_set else ""),
              ROOT / "pipelines" / "post_training_recipe.py", args.recipe_set),
             (f"{args.rows:,} instruction rows", Path(__file__), [])]
    lines = []
    for label, file, settings in cases:
        out = DATA / "out" / file.stem
        shutil.rmtree(out, ignore_errors=True)  # a fresh store: every node is built (model requests may be cached)
        built = build_into(file, out, settings)
        in_process, fresh, size = time_report(out)
        lines.append(f"| {label} | {built:.1f} | {in_process:.2f} | {fresh:.2f} | {size / 1e6:.2f} |")
    provisional = before > 0.5  # the load after includes this script's own work
    body = "\n".join([
        *run_facts(), f"- load average before: {load_before}; after: {load()}",
        *(["- **provisional**: the load average was above 0.5 (other work on the machine); rerun on an idle "
           "machine for a measurement"] if provisional else []),
        "", "| build | build s (fresh store, report included) | report s (in process, median of 3) | "
            "report s (fresh process) | report MB |", "| --- | ---: | ---: | ---: | ---: |", *lines, "",
        "The report reads aggregates (polars over the stored Parquet), draws each chart from its bins and samples "
        "rows (3 per reject reason, 8 clusters per dedup step, 3 per output), so its size is the inlined Vega "
        "bundle (0.9 MB) plus a few kilobytes per chart, whatever the rows. Targets at 1M rows: < 5 s, < 5 MB."])
    write_section("report", "HTML build report: generation time and size (issue 15)", body)


if __name__ == "__main__":
    main()
