"""Ray executor benchmarks (issue 18).

    python benchmarks/ray_overhead.py                  # overhead, scaling and plan; writes RESULTS.md
    python benchmarks/ray_overhead.py --plan-only      # the bytes each MinHash stage ships, and the plan
    python benchmarks/ray_overhead.py --rows 20000 --scales 1 --repeat 1 --print   # a quick check, not written

1. Overhead: the engine benchmark's chain (5 filters + 1 map over a stored source) and the MinHash benchmark's
   build (Debian package descriptions at 1x/4x/16x, see benchmarks/minhash.py), local vs Ray on this machine (a
   local Ray cluster, one worker per core), interleaved in one run, with the same outputs; medians and ratios.
2. Scaling: the MinHash build on a 2-node ``ray.cluster_utils.Cluster`` (1 CPU each) vs 1 node (1 CPU).
3. The bytes per document that each stage of the Ray MinHash plan ships, measured by running its steps on the
   1x corpus, and the plan for 10M and 100M documents on 10-100 nodes derived from them.
Results go to benchmarks/RESULTS.md (section "ray_overhead"). Only a run at load average <= ~0.5 counts as a
measurement; the section says whether this one was.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dataflow  # noqa: F401  (before polars, as in the CLI)
import polars as pl

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "ray"
sys.path.insert(0, str(HERE))
from engine import CHAIN, make_input  # noqa: E402
from minhash import NGRAM, NUM_PERM, THRESHOLD, corpus_path  # noqa: E402
from results import load, run_facts, settle, write_section  # noqa: E402

MINHASH = f'''
from dataflow import Pipeline
from dataflow.operators import MinHashDedup

p = Pipeline("near")
docs = p.read_parquet(p.param("path", ""), name="docs")
p.output("result", docs.apply(MinHashDedup(column="text", threshold={THRESHOLD}, num_perm={NUM_PERM},
                                           ngram={NGRAM}), name="near_dedup"))
'''
CORES_PER_NODE, WEB_TEXT, STORE_GBPS = 16, 4000, 10  # the plan's nodes, documents and shared store
RANGE_ROWS = 200_000  # as the ray executor (dataflow.executors.ray)
GB = 1e9


def pipeline_file(name: str, text: str) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"{name}.py"
    path.write_text(text)
    return path


def builder(pipeline: Path, source: Path, out: Path, executor: str, first: str):
    """A function that rebuilds ``first`` and what follows it (its source stays cached), and its report; its
    build log is its ``log``."""
    from dataflow.build import build, load_pipeline
    from dataflow.progress import Progress

    shutil.rmtree(out, ignore_errors=True)
    log = io.StringIO()

    def run(rebuild: tuple[str, ...] = (first,)):
        return build(load_pipeline(pipeline, {"path": str(source)}), out, Progress(log), rebuild, executor=executor)

    run(())
    run.log = log
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


def overhead(rows: int, scales: list[int], repeat: int) -> tuple[dict[str, float], float, dict[int, str]]:
    """Median seconds of each job on each executor, the local cluster's start, and by scale the stages of the
    last Ray MinHash build (from its log)."""
    import ray

    started = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - started
    jobs = [("chain", pipeline_file("chain", CHAIN), make_input(rows), "f1")]
    jobs += [(f"minhash_{s}x", pipeline_file("near", MINHASH), corpus_path(s), "near_dedup") for s in scales]
    runs = {f"{job}_{executor}": builder(file, data, DATA / f"out_{job}_{executor}", executor, first)
            for job, file, data, first in jobs for executor in ("local", "ray")}
    times = interleaved(runs, repeat)
    for job, *_ in jobs:
        assert same_output(DATA / f"out_{job}_local", DATA / f"out_{job}_ray"), f"{job}: outputs differ"
    stages = {s: [line for line in runs[f"minhash_{s}x_ray"].log.getvalue().splitlines() if "MinHash on" in line][-1]
              for s in scales}
    ray.shutdown()
    return times, startup, stages


def scaling(scale: int, repeat: int) -> dict[int, float]:
    """Median seconds of the MinHash build on a Cluster of 1 and of 2 nodes (1 CPU each)."""
    import ray
    from ray.cluster_utils import Cluster

    times = {}
    for nodes in (1, 2):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        run = builder(pipeline_file("near", MINHASH), corpus_path(scale), DATA / f"out_scale_{nodes}", "ray",
                      "near_dedup")
        times[nodes] = interleaved({nodes: run}, repeat)[nodes]
        ray.shutdown()
        cluster.shutdown()
    return times


def shipped(scale: int = 1, partitions: int = CORES_PER_NODE) -> dict[str, float]:
    """What each step of the Ray MinHash plan writes or sends, in bytes per document of the corpus (and its
    candidate rates): the steps run in this process over one range, their files and frames measured."""
    from dataflow.executors.ray_minhash import BANDS, DOCS, A, B, MinHashJob
    from dataflow.executors.ray_tasks import ROW, NodeJob, StoredInput
    from dataflow.operators import MinHashDedup

    path = corpus_path(scale)
    docs = pl.scan_parquet(path).select(pl.len()).collect().item()
    op = MinHashDedup(column="text", threshold=THRESHOLD, num_perm=NUM_PERM, ngram=NGRAM)
    with tempfile.TemporaryDirectory() as work:
        job = MinHashJob(NodeJob(op, "near_dedup", work, (StoredInput(str(path), ()),), docs), partitions)
        job.sign(0, docs)
        files = {f: job.job.part(0, f) for f in (DOCS, BANDS)}
        signed, keyed = pl.read_parquet(files[DOCS]), pl.read_parquet(files[BANDS])
        found = pl.concat([part for p in range(partitions) for part in job.bucket(p, [str(files[BANDS])])])
        pairs = found.unique()
        screened = job.measure(pairs, [str(files[DOCS])], screen=True)
        involved = signed.filter(pl.col(ROW).cast(pl.Int64).is_in(pl.concat([pairs[A], pairs[B]]).implode()))
        return {"text": pl.read_parquet(path).get_column("text").str.len_bytes().mean(),
                "docs_file": files[DOCS].stat().st_size / docs, "docs_memory": signed.estimated_size() / docs,
                "shingles": signed.get_column("shingles").list.len().mean() * 8,
                "bands_file": files[BANDS].stat().st_size / docs, "bands_memory": keyed.estimated_size() / docs,
                "band_rows": keyed.height / docs, "pairs_shuffle": found.estimated_size() / docs,
                "pairs_memory": pairs.estimated_size() / docs,
                "candidates": pairs.height / docs, "screened": screened.height / docs,
                "measured": screened.estimated_size() / docs, "involved": involved.height / docs,
                "read": involved.select("signature", "shingles").estimated_size() / max(involved.height, 1),
                # the driver, per document in a pair: its row, id, length and score, then number, row order,
                # component, survivor and two similarities (8 B each)
                "driver_doc": involved.drop("signature", "shingles").estimated_size() / max(involved.height, 1) + 48}


def plan(facts: dict[str, float]) -> list[str]:
    """The plan for 10M and 100M documents from the measured bytes per document."""
    from dataflow.operators.curation.minhash import recall_bands

    bands, rows = recall_bands(THRESHOLD, NUM_PERM)
    f = facts
    web = WEB_TEXT / f["text"]  # shingles and text grow with a document's length; signatures and band keys do not
    doc, read = f["docs_memory"] + f["shingles"] * (web - 1), NUM_PERM * 4 + f["shingles"] * web
    task = RANGE_ROWS * (WEB_TEXT + doc + f["bands_memory"]) / GB
    lines = [
        f"Measured per document of the 1x corpus (Debian descriptions, {f['text']:,.0f} B of text; word {NGRAM}-grams, "
        f"{NUM_PERM} permutations, {bands} bands x {rows} rows for threshold {THRESHOLD}) by running the plan's "
        "steps on it (`shipped()`):", "",
        "| stage | what moves | bytes per document |", "| --- | --- | --- |",
        f"| 1. signatures (map_batches over ranges) | a documents file: row, id, length, score, signature "
        f"({NUM_PERM * 4} B), shingles ({f['shingles']:,.0f} B) | {f['docs_file']:,.0f} on disk, "
        f"{f['docs_memory']:,.0f} in memory |",
        f"| 2. band-key shuffle (files, a row group per partition) | {f['band_rows']:.0f} rows (band, key, row, id, "
        f"partition): {bands} bands and the id check | {f['bands_file']:,.0f} on disk, {f['bands_memory']:,.0f} in "
        "memory |",
        f"| 2. pair shuffle (objects) | the pairs of each bucket partition (a, b), by a's partition | "
        f"{f['pairs_shuffle']:,.1f} |",
        f"| 2. to the driver | {f['candidates']:.3f} distinct candidate pairs (a, b) | {f['pairs_memory']:,.1f} |",
        f"| 3. verification reads | signature and shingles of the {f['involved']:.3f} documents in pairs "
        f"({f['read']:,.0f} B each), once per task that checks one of their pairs | "
        f"{f['involved'] * f['read']:,.1f} or more |",
        f"| 3. to the driver | {f['screened']:.3f} screened pairs (a, b, estimate, exact) | {f['measured']:,.1f} |",
        f"| 4. driver memory | per document in a pair: row, id, length, score, number, union-find, similarities | "
        f"{f['involved'] * f['driver_doc']:,.1f} |", "",
        f"Scaled to web documents of {WEB_TEXT:,} B ({web:.0f}x the text, so {web:.0f}x the shingles: "
        f"{doc:,.0f} B a document in stage 1, {read:,.0f} B a verification read), nodes of {CORES_PER_NODE} cores "
        f"(a shuffle partition per core) and {RANGE_ROWS:,} documents per signature task, at this corpus's "
        "candidate rate:", "",
        "| documents | nodes | documents files (stage 1) | band-key shuffle (stage 2) | pair shuffle "
        "| pairs to the driver | verification reads (stage 3) | memory of a signature task "
        "| memory of a shuffle partition | driver memory |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n in (10_000_000, 100_000_000):
        for nodes in (10, 100):
            driver = n * (f["involved"] * f["driver_doc"] + f["pairs_memory"] + f["measured"]) / GB
            lines.append(f"| {n / 1e6:.0f}M | {nodes} | {n * doc / GB:,.0f} GB | {n * f['bands_file'] / GB:,.0f} GB "
                         f"| {n * f['pairs_shuffle'] / GB:,.1f} GB | {n * f['pairs_memory'] / GB:,.1f} GB "
                         f"| {n * f['involved'] * read / GB:,.1f} GB "
                         f"| {task:,.1f} GB | {n * f['bands_memory'] / (nodes * CORES_PER_NODE) / GB:,.2f} GB "
                         f"| {driver:,.1f} GB |")
    moved = 100_000_000 * (doc + 2 * f["bands_file"] + f["involved"] * read) / GB
    pool = 100_000_000 * f["screened"]
    lines += ["", f"Expected bottleneck: the shared store. Stage 1 writes every document's shingles for the exact "
              f"check, stage 2 writes and reads the band keys and stage 3 reads the documents in pairs: {moved:,.0f} "
              f"GB at 100M documents, {moved / STORE_GBPS:,.0f} s at a {STORE_GBPS} GB/s aggregate store bandwidth "
              "however many nodes there are, while the CPU work (shingling, signatures, exact Jaccard) divides by the "
              "cores. Next, the driver: it holds the documents in candidate pairs and the pairs (the last column) and "
              f"runs the operator's rounds over the {pool / 1e6:,.0f}M screened pairs of 100M documents in one "
              "process (a union-find over them per round, about log2 of the largest cluster rounds). Both grow with "
              "the corpus's duplicate rate, not its size; past ~100M documents at this rate (half of them in a "
              "pair) the components would need a distributed union-find."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="chain rows")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16], help="MinHash corpus scales")
    parser.add_argument("--scaling-scale", type=int, default=4, help="the corpus scale of the 1- vs 2-node run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--plan-only", action="store_true", help="measure the bytes each stage ships; no timing")
    parser.add_argument("--print", action="store_true", help="print the section; leave RESULTS.md as it is")
    args = parser.parse_args()
    lines = [*run_facts()]
    if not args.plan_only:
        settle(patience=60)
        before, quiet = load(), os.getloadavg()[0] <= 0.5
        times, startup, stages = overhead(args.rows, args.scales, args.repeat)
        scaled = scaling(args.scaling_scale, args.repeat)
        lines += [f"- load average before: {before}; after: {load()} (the benchmark's own Ray workers keep both cores "
                  "busy, so only the load before tells whether the machine was quiet)",
                  "- status: " + ("a measurement (load <= 0.5 before the run)" if quiet else "PROVISIONAL: other "
                                  "processes loaded the machine (load > 0.5); rerun on a quiet machine"),
                  f"- local Ray cluster start: {startup:.1f} s (once per build, not in the times below)", "",
                  "| job | local | ray (local cluster, one worker per core) | ray / local |",
                  "| --- | --- | --- | --- |",
                  f"| chain ({args.rows:,} rows, 5 filters + 1 map) | {times['chain_local']:.2f} s | "
                  f"{times['chain_ray']:.2f} s | {times['chain_ray'] / times['chain_local']:.1f}x |"]
        for s in args.scales:
            local, ray = times[f"minhash_{s}x_local"], times[f"minhash_{s}x_ray"]
            lines.append(f"| MinHash, {s}x corpus | {local:.2f} s | {ray:.2f} s | {ray / local:.1f}x |")
        lines += ["", "Where Ray's time goes: the filters run on the driver as locally; the map goes through Ray Data "
                  "(task start, each range read from the store and written as a part, the parts concatenated by the "
                  "driver: one extra write of the node). MinHash runs its distributed plan "
                  "(dataflow/executors/ray_minhash.py): signatures in map_batches, each range writing its documents "
                  "and band keys to the store; a task per shuffle partition pairing buckets; verification tasks "
                  "reading the documents of their pairs; the driver's rounds and union-find, and its one write of "
                  "the kept rows. The stages of the last Ray MinHash build at each scale, from its build log:", "",
                  *[f"- {s}x: {stages[s].split(': ', 1)[1]}" for s in args.scales], "",
                  f"Scaling: the MinHash build ({args.scaling_scale}x corpus) on `ray.cluster_utils.Cluster`, 1 CPU "
                  "per node, the same machine:", "", "| 1 node | 2 nodes | speed-up |", "| --- | --- | --- |",
                  f"| {scaled[1]:.2f} s | {scaled[2]:.2f} s | {scaled[1] / scaled[2]:.2f}x |", "",
                  "Both clusters share this machine's 2 cores, and the driver is outside Ray's CPU count: beside the "
                  "1-node cluster's one worker, the driver already runs on the second core (its reads, the "
                  "verification rounds, union-find, the final write). So this row shows how much worker work the "
                  "plan overlaps on one machine, not the speed-up of a second machine."]
    else:
        lines += ["- timings: not measured in this run (`--plan-only`); run `python benchmarks/ray_overhead.py` on a "
                  "quiet machine for the overhead and scaling tables"]
    lines += ["", "### Plan for 10M and 100M documents", "", *plan(shipped())]
    body = "\n".join(lines)
    write_section("ray_overhead", "Ray executor: overhead vs local, scaling, and a plan for 10M-100M documents "
                  "(issue 18)", body, record=not args.print)


if __name__ == "__main__":
    main()
