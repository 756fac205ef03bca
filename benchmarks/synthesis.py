"""Synthesis throughput on CPU (issue 13): instructions per minute of TopicTemplate and
SelfInstruct on the default model, each built cold (a private, empty request cache), then rebuilt
with ``--rebuild`` on the warm cache, which must make no model call.

    python benchmarks/synthesis.py [--topics 12] [--target 24]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results import load, run_facts, settle, write_section  # noqa: E402

from dataflow import Pipeline  # noqa: E402
from dataflow.build import build  # noqa: E402
from dataflow.catalog import query  # noqa: E402
from dataflow.operators import SelfInstruct, TopicTemplate  # noqa: E402
from dataflow.progress import Progress  # noqa: E402

TOPICS = ["personal finance", "home cooking", "python programming", "travel planning", "job interviews", "gardening",
          "first aid", "writing emails", "learning a language", "fitness at home", "astronomy", "marketing"]
TEMPLATES = {"howto": "a practical how-to question about {topic}", "explain": "a request to explain a concept of {topic}",
             "task": "a concrete writing or planning task in {topic}"}
SEEDS = HERE.parent / "pipelines" / "data" / "seed_tasks.jsonl"


def pipelines(topics: int, target: int) -> dict[str, Pipeline]:
    topical = Pipeline("bench_topics")
    rows = topical.from_rows([{"topic": t} for t in (TOPICS * (1 + topics // len(TOPICS)))[:topics]], name="topics")
    topical.output("out", rows.apply(TopicTemplate(templates=TEMPLATES, per_topic=3), name="synth"))
    grown = Pipeline("bench_self_instruct")
    seeds = grown.read_jsonl(SEEDS, name="seeds")
    grown.output("out", seeds.apply(SelfInstruct(target=target, instances=False, prompts_per_round=4), name="synth"))
    return {"TopicTemplate": topical, "SelfInstruct (no instances)": grown}


def timed(pipeline: Pipeline, out: Path, rebuild: tuple[str, ...]) -> tuple[float, dict, int]:
    started = time.perf_counter()
    build(pipeline, out, Progress(io.StringIO()), rebuild)
    seconds = time.perf_counter() - started
    metrics = query(out, "select metrics from nodes where name = 'synth'")["metrics"][0]
    rows = query(out, "select count(*) as n from out")["n"][0]
    return seconds, metrics, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topics", type=int, default=12)
    parser.add_argument("--target", type=int, default=24)
    args = parser.parse_args()
    settle()
    from dataflow.llm.backends.decoding import default_threads

    # every build loads the model itself: pinned, so the load the first build leaves does not cut the second's threads
    os.environ["DATAFLOW_TORCH_THREADS"] = str(default_threads())
    before = load()
    lines = ["| operator | instructions kept | model calls | cold build s | instructions/min | warm `--rebuild` s | "
             "calls on rebuild |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["DATAFLOW_LLM_CACHE"] = str(Path(scratch) / "cache.sqlite")
        for name, pipeline in pipelines(args.topics, args.target).items():
            out = Path(scratch) / pipeline.name
            cold, metrics, rows = timed(pipeline, out, ())
            warm, again, _ = timed(pipeline, out, ("synth",))
            lines.append(f"| {name} | {rows} | {metrics.get('llm_calls', 0)} | {cold:.1f} | {60 * rows / cold:.1f} | "
                         f"{warm:.2f} | {again.get('llm_calls', 0)} |")
    body = "\n".join([*run_facts(), f"- default model (`local`), transformers backend; {args.topics} topics x 3 "
                      f"templates x 3 samples; Self-Instruct to {args.target} tasks from the 60 seed tasks, 4 prompts "
                      f"per round; cold = an empty private request cache (the model load included); load before: "
                      f"{before}, after: {load()}", "", *lines])
    print(body)
    write_section("synthesis", "synthesis: instructions per minute on CPU, and a rebuild without model calls", body)


if __name__ == "__main__":
    main()
