"""Ray executor benchmarks (issue 18). Run: python benchmarks/ray_overhead.py [--rows 200000] [--docs 20000]

1. Overhead: the engine benchmark's chain (5 filters + 1 map over a stored source) and a MinHash build,
   local vs Ray on this machine (a local Ray cluster, one worker per core), interleaved, same outputs.
2. Scaling: the chain's map and a MinHash build on a 2-node ``ray.cluster_utils.Cluster`` (1 CPU each)
   vs 1 node (1 CPU).
3. A plan for 10M and 100M documents on 10-100 nodes, from sizes measured here.
Results go to benchmarks/RESULTS.md (section "ray_overhead"). Only a run at load average <= ~0.5
counts as a measurement; the section says whether this one was.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import dataflow  # noqa: F401  (before polars, as in the CLI)
import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "ray"
sys.path.insert(0, str(HERE))
from engine import CHAIN, make_input  # noqa: E402
from results import load, run_facts, settle, write_section  # noqa: E402

MINHASH = '''
from dataflow import Pipeline
from dataflow.operators import MinHashDedup

p = Pipeline("near")
docs = p.read_parquet(p.param("path", ""), name="docs")
p.output("result", docs.apply(MinHashDedup(column="text", threshold=0.8), name="near_dedup"))
'''
NUM_PERM, SIGNATURE_BYTES = 128, 4  # MinHashDedup's default permutations; uint32 per position


def near_duplicates(docs: int) -> Path:
    """``docs`` texts, a fifth of them an earlier text with one word changed (written once)."""
    path = DATA / f"near_{docs}.parquet"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        vocabulary = np.array([f"w{i}" for i in range(5000)])
        texts = [" ".join(rng.choice(vocabulary, size=int(rng.integers(30, 120)))) for _ in range(docs)]
        for i in rng.choice(np.arange(1, docs), size=docs // 5, replace=False):
            words = texts[int(rng.integers(0, i))].split()
            words[int(rng.integers(0, len(words)))] = "changed"
            texts[i] = " ".join(words)
        pl.DataFrame({"text": texts}).write_parquet(path)
    return path


def pipeline_file(name: str, text: str) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"{name}.py"
    path.write_text(text)
    return path


def builder(pipeline: Path, source: Path, out: Path, executor: str, first: str):
    """A function that rebuilds ``first`` and what follows it (its source stays cached), and its report."""
    from dataflow.build import build, load_pipeline
    from dataflow.progress import Progress

    shutil.rmtree(out, ignore_errors=True)

    def run(rebuild: tuple[str, ...] = (first,)):
        return build(load_pipeline(pipeline, {"path": str(source)}), out, Progress(io.StringIO()), rebuild,
                     executor=executor)

    run(())
    return run


def interleaved(contenders: dict, repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def same_output(*outs: Path) -> bool:
    frames = [pl.read_parquet(out / "result" / "data.parquet") for out in outs]
    return all(f.equals(frames[0]) for f in frames[1:])


def overhead(rows: int, docs: int, repeat: int) -> tuple[dict, float, dict]:
    import ray

    started = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - started
    chain, near = pipeline_file("chain", CHAIN), pipeline_file("near", MINHASH)
    source, corpus = make_input(rows), near_duplicates(docs)
    runs = {f"{job}_{executor}": builder(file, data, DATA / f"out_{job}_{executor}", executor, first)
            for job, file, data, first in (("chain", chain, source, "f1"), ("minhash", near, corpus, "near_dedup"))
            for executor in ("local", "ray")}
    times = interleaved(runs, repeat)
    metrics = next(s.metrics for s in runs["minhash_local"]().stats if s.name == "near_dedup")
    for job in ("chain", "minhash"):
        assert same_output(DATA / f"out_{job}_local", DATA / f"out_{job}_ray"), f"{job}: outputs differ"
    ray.shutdown()
    return times, startup, metrics


def scaling(rows: int, docs: int, repeat: int) -> dict[str, float]:
    import ray
    from ray.cluster_utils import Cluster

    times = {}
    chain, near = pipeline_file("chain", CHAIN), pipeline_file("near", MINHASH)
    for nodes in (1, 2):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        runs = {f"chain_map_{nodes}": builder(chain, make_input(rows), DATA / f"out_scale_chain_{nodes}", "ray",
                                              "upper"),
                f"minhash_{nodes}": builder(near, near_duplicates(docs), DATA / f"out_scale_near_{nodes}", "ray",
                                            "near_dedup")}
        times.update(interleaved(runs, repeat))
        ray.shutdown()
        cluster.shutdown()
    return times


def plan(docs: int, metrics: dict) -> list[str]:
    """The plan for 10M and 100M documents, scaled from this corpus's text size and candidate rates."""
    corpus = pl.read_parquet(near_duplicates(docs))
    text = corpus.get_column("text").str.len_bytes().mean()
    candidates = metrics.get("candidate_pairs", 0) / docs
    edges = metrics.get("duplicate_pairs", 0) / docs
    from dataflow.operators.curation.minhash import recall_bands

    bands, _ = recall_bands(0.8, NUM_PERM)
    gb = 1e9
    lines = [f"Per document, measured on this corpus: {text:,.0f} B of text, {candidates:.2f} candidate pairs and "
             f"{edges:.2f} duplicate edges; {NUM_PERM} x {SIGNATURE_BYTES} B signature, {bands} bands "
             f"(threshold 0.8, recall banding). Real web text is ~3-5 KB a document: scale the text columns.", "",
             "| documents | nodes | exact-dedup key shuffle | signatures (map, no shuffle) | band-key shuffle | "
             "candidate verification (text fetched twice per pair) | components (edges) | text per worker |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n in (10_000_000, 100_000_000):
        for nodes in (10, 100):
            lines.append(
                f"| {n / 1e6:.0f}M | {nodes} | {n * (text + 24) / gb:,.1f} GB "
                f"| {n * NUM_PERM * SIGNATURE_BYTES / gb:,.1f} GB "
                f"| {n * bands * 16 / gb:,.1f} GB | {n * candidates * (2 * text + 16) / gb:,.1f} GB | "
                f"{n * edges * 16 / gb:,.2f} GB | {n * (text + NUM_PERM * SIGNATURE_BYTES) / nodes / gb:,.2f} GB |")
    exchanges = {"the exact-dedup key shuffle": text + 24, "the band-key shuffle": bands * 16,
                 "fetching candidate pairs' texts": candidates * (2 * text + 16)}
    largest = max(exchanges, key=exchanges.get)
    seconds = 100_000_000 * exchanges[largest] / 100 / 1.25e9  # per node, 100 nodes at 10 Gbit/s
    lines += ["", "Expected bottleneck: today MinHash runs whole on one worker (no distributed plan yet), so that "
              f"worker holds the corpus plus signatures, {10_000_000 * (text + NUM_PERM * SIGNATURE_BYTES) / gb:,.0f} "
              f"GB at 10M and {100_000_000 * (text + NUM_PERM * SIGNATURE_BYTES) / gb:,.0f} GB at 100M, and its time "
              "does not fall with nodes: past ~10M documents it is the bottleneck. With the distributed plan "
              "(signatures in map_batches, band-key shuffle, verification by pair partition, components on the edge "
              f"list) the largest exchange is {largest} ({exchanges[largest]:,.0f} B a document): at 100M documents "
              f"on 100 nodes with 10 Gbit/s each that is {seconds:,.1f} s of transfer per node, so the bottleneck "
              "becomes the signature CPU work (128 hashes per shingle) and object-store spilling when a worker's "
              "share exceeds its memory; the edge list for connected components fits one worker."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="chain rows")
    parser.add_argument("--docs", type=int, default=20_000, help="MinHash documents")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    settle(patience=60)
    before = load()
    quiet = os.getloadavg()[0] <= 0.5
    times, startup, metrics = overhead(args.rows, args.docs, args.repeat)
    scaled = scaling(args.rows, args.docs, args.repeat)
    after = load()
    quiet = quiet and os.getloadavg()[0] <= 0.5
    lines = [*run_facts(), f"- load average before: {before}; after: {after}",
             "- status: " + ("a measurement (load <= 0.5 throughout)" if quiet else
                             "PROVISIONAL: other processes loaded the machine (load > 0.5); rerun on a quiet machine"),
             f"- local Ray cluster start: {startup:.1f} s (once per build, not in the times below)", "",
             "| job | local | ray (local cluster, 2 workers) | ray / local |", "| --- | --- | --- | --- |"]
    for job, size in (("chain", f"{args.rows:,} rows, 5 filters + 1 map"), ("minhash", f"{args.docs:,} docs")):
        local, ray = times[f"{job}_local"], times[f"{job}_ray"]
        lines.append(f"| {job} ({size}) | {local:.2f} s | {ray:.2f} s | {ray / local:.1f}x |")
    lines += ["", "Where Ray's time goes: the filters run on the driver as locally; the map goes through Ray Data "
              "(task start, each range read from the store and written as a part, the parts concatenated by the "
              "driver: one extra write of the node); MinHash has no distributed plan yet, so it runs whole on one "
              "worker (its input read from the store there, its output written back).", "",
              "Scaling on `ray.cluster_utils.Cluster` (1 CPU per node, the same machine):", "",
              "| job | 1 node | 2 nodes | speed-up |", "| --- | --- | --- | --- |"]
    for job in ("chain_map", "minhash"):
        one, two = scaled[f"{job}_1"], scaled[f"{job}_2"]
        lines.append(f"| {job} | {one:.2f} s | {two:.2f} s | {one / two:.2f}x |")
    lines += ["", "### Plan for 10M and 100M documents", "", *plan(args.docs, metrics)]
    write_section("ray_overhead", "Ray executor: overhead vs local, scaling, and a plan for 10M-100M documents "
                  "(issue 18)", "\n".join(lines))


if __name__ == "__main__":
    main()
