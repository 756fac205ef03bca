"""MinHash near-duplicate removal: dataflow vs datasketch vs datatrove, against exact ground truth.

    python benchmarks/minhash.py                # 3 runs per method, scales 1x 4x 16x
    python benchmarks/minhash.py --runs 1 --scales 1

Corpus: the ~64,000 English descriptions of Debian 12 main packages (see minhash_corpus.py).
Word 5-gram shingles (lower case, NFKC, whitespace tokens), 128 permutations, Jaccard 0.8.
Ground truth: exact Jaccard of all pairs at or above 0.8 (sparse shingle matrix with the
prefix filter, which provably misses no pair: see minhash_truth.py); the drop set is every
document but the lowest-numbered of each connected component. Every method's clusters are scored
with that same survivor rule, so the scores measure the clusters found. Each method runs in its
own process (peak RSS is that process's maximum resident set, corpus included).

Scaling: 4x and 16x are the corpus plus 3 or 15 replicas in which every word carries the replica's
tag: each replica has the corpus's own near-duplicates and shares no shingle with the others, so
the expected drop set is the ground truth's, replicated. Peers run at 1x.
Results go to benchmarks/RESULTS.md between the ``minhash`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
sys.path.insert(0, str(HERE))

THRESHOLD, NUM_PERM, NGRAM = 0.8, 128, 5
METHODS = ("dataflow", "dataflow_core", "datasketch", "datatrove")


def corpus_path(scale: int) -> Path:
    """Parquet file of the corpus at a scale (written on first use): columns id, text."""
    import polars as pl

    from minhash_corpus import load_corpus

    path = DATA / f"minhash_corpus_x{scale}.parquet"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        docs = load_corpus()
        texts = list(docs)
        for replica in range(1, scale):  # every word tagged: a replica shares no shingle with others
            texts += [" ".join(f"{word}~{replica}" for word in doc.split()) for doc in docs]
        width = len(str(len(texts)))
        pl.DataFrame({"id": [f"{i:0{width}d}" for i in range(len(texts))], "text": texts}).write_parquet(path)
    return path


def lowest_member_drop_set(labels: np.ndarray) -> np.ndarray:
    """Indices of every document but the lowest-numbered one of its cluster."""
    index = np.arange(len(labels))
    lowest = np.full(labels.max() + 1, len(labels), dtype=np.int64) if len(labels) else np.empty(0, np.int64)
    np.minimum.at(lowest, labels, index)
    return np.flatnonzero(lowest[labels] != index)


def union_find_labels(count: int, pairs) -> np.ndarray:
    parent = list(range(count))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(count)], dtype=np.int64)


def word_shingles(text: str) -> set[str]:
    """The ground truth's and datasketch's shingles: word 5-grams, short texts as a whole."""
    import unicodedata

    words = unicodedata.normalize("NFKC", text.lower()).split()
    if len(words) < NGRAM:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


# -- methods (each runs in a worker process and returns the cluster label of every document) ---------

def run_dataflow(path: Path) -> np.ndarray:
    """The pipeline: a stored Parquet source (built first, untimed, as a rebuild finds it) ->
    MinHashDedup with exact verification -> stored output and rejects. Timed: the second build."""
    import io

    import polars as pl

    from dataflow import Pipeline
    from dataflow.build import build
    from dataflow.catalog import query
    from dataflow.operators import MinHashDedup
    from dataflow.progress import Progress

    def pipeline(dedup: bool) -> Pipeline:
        p = Pipeline("minhash_bench")
        docs = p.read_parquet(path, name="docs")
        if dedup:
            op = MinHashDedup(column="text", threshold=THRESHOLD, num_perm=NUM_PERM, ngram=NGRAM)
            p.output("deduplicated", docs.apply(op, name="near_dedup"))
        else:
            p.output("deduplicated", docs)
        return p

    with tempfile.TemporaryDirectory(dir=DATA) as out:
        build(pipeline(False), Path(out), Progress(io.StringIO()))
        started = time.perf_counter()
        build(pipeline(True), Path(out), Progress(io.StringIO()))
        run_dataflow.seconds = time.perf_counter() - started
        kept = pl.read_parquet(Path(out) / "deduplicated" / "data.parquet", columns=["id", "cluster_id"])
        removed = query(Path(out), "select id, detail from rejects where node = 'near_dedup'")
    labels = np.arange(pl.scan_parquet(path).select(pl.len()).collect().item())
    labels[kept.get_column("id").cast(pl.Int64).to_numpy()] = kept.get_column("cluster_id").cast(pl.Int64).to_numpy()
    if len(removed):
        ids = removed.get_column("id").cast(pl.Int64).to_numpy()
        labels[ids] = [int(json.loads(d)["cluster_id"]) for d in removed.get_column("detail")]
    return labels


def run_dataflow_core(path: Path) -> np.ndarray:
    """The operator's clustering alone, on texts already in memory (no store, no Parquet)."""
    import polars as pl

    from dataflow.operators.curation.minhash import MinHashDedup
    from dataflow.operators.text import prepared_texts

    texts = pl.read_parquet(path).get_column("text")
    started = time.perf_counter()
    op = MinHashDedup(column="text", threshold=THRESHOLD, num_perm=NUM_PERM, ngram=NGRAM)
    clusters = op.find(prepared_texts(texts, "word"), np.zeros(len(texts), dtype=np.int64))
    run_dataflow_core.seconds = time.perf_counter() - started
    return clusters.cluster


def run_datasketch(path: Path) -> np.ndarray:
    """datasketch as its docs show: MinHash.bulk, MinHashLSH insert and query, then union-find."""
    import polars as pl
    from datasketch import MinHash, MinHashLSH

    texts = pl.read_parquet(path).get_column("text").to_list()
    started = time.perf_counter()
    shingles = [[s.encode() for s in word_shingles(t)] for t in texts]
    usable = [i for i, s in enumerate(shingles) if s]
    hashes = MinHash.bulk([shingles[i] for i in usable], num_perm=NUM_PERM)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    with lsh.insertion_session() as session:
        for i, m in zip(usable, hashes):
            session.insert(i, m)
    pairs = [(i, j) for i, m in zip(usable, hashes) for j in lsh.query(m) if j != i]
    labels = union_find_labels(len(texts), pairs)
    run_datasketch.seconds = time.perf_counter() - started
    return labels


def run_datatrove(path: Path) -> np.ndarray:
    """datatrove's four MinHash stages on 2 tasks, with the same tokens as the ground truth."""
    import polars as pl
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.utils.text import TextNormConfig
    from datatrove.utils.word_tokenizers import WordTokenizer
    from datasketch.lsh import _optimal_param

    class Whitespace(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            raise NotImplementedError

    texts = pl.read_parquet(path).get_column("text").to_list()
    tasks = 2
    half = (len(texts) + tasks - 1) // tasks

    def shard(data, rank: int = 0, world_size: int = 1):
        for i in range(rank * half, min((rank + 1) * half, len(texts))):
            yield Document(text=texts[i], id=str(i))

    bands, rows = _optimal_param(THRESHOLD, NUM_PERM, 0.5, 0.5)
    config = MinhashConfig(n_grams=NGRAM, num_buckets=bands, hashes_per_bucket=rows,
                           norm_config=TextNormConfig(remove_punctuation=False, norm_unicode_diacritics=False,
                                                      norm_numbers=False))
    import xxhash

    def signature_stage(folder: str) -> MinhashDedupSignature:
        step = MinhashDedupSignature(folder, config=config, language=Whitespace())
        # datatrove 0.10.1 hands str to xxhash, which xxhash >= 4 refuses: encode, as older xxhash did
        step._hash_func = lambda text: xxhash.xxh64_intdigest(text.encode())
        return step

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=DATA) as work:
        w = Path(work)
        stages = [
            LocalPipelineExecutor([shard, signature_stage(str(w / "sigs"))],
                                  tasks=tasks, workers=tasks, logging_dir=str(w / "l1"), skip_completed=False),
            LocalPipelineExecutor([MinhashDedupBuckets(str(w / "sigs"), str(w / "buckets"), config=config)],
                                  tasks=bands, workers=tasks, logging_dir=str(w / "l2"), skip_completed=False),
            LocalPipelineExecutor([MinhashDedupCluster(str(w / "buckets"), str(w / "remove"), config=config,
                                                       save_cluster_id=True)],
                                  tasks=1, logging_dir=str(w / "l3"), skip_completed=False),
            LocalPipelineExecutor([shard, MinhashDedupFilter(str(w / "remove"), load_cluster_ids=True)],
                                  tasks=tasks, workers=tasks, logging_dir=str(w / "l4"), skip_completed=False),
        ]
        for stage in stages:
            stage.run()
        run_datatrove.seconds = time.perf_counter() - started
        labels = np.arange(len(texts), dtype=np.int64)
        for rank in range(tasks):
            cluster_file = w / "remove" / f"{rank:06d}.clusters"
            if cluster_file.exists():
                pairs = np.fromfile(cluster_file, dtype="<u4").reshape(-1, 2).astype(np.int64)
                labels[rank * half + pairs[:, 0]] = len(texts) + pairs[:, 1]
    # relabel so each cluster is named by a member
    _, labels = np.unique(labels, return_inverse=True)
    return labels


# -- harness -------------------------------------------------------------------------------------------

def worker(method: str, scale: int, out: Path) -> None:
    path = corpus_path(scale)
    started = time.perf_counter()
    labels = globals()[f"run_{method}"](path)
    seconds = getattr(globals()[f"run_{method}"], "seconds", time.perf_counter() - started)
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) * 1024
    np.save(out.with_suffix(".npy"), labels)
    out.write_text(json.dumps({"seconds": seconds, "peak_rss": peak, "docs": len(labels)}))


def measure(method: str, scale: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "POLARS_MAX_THREADS": os.environ.get("POLARS_MAX_THREADS", str(os.cpu_count()))}
        subprocess.run([sys.executable, __file__, "--worker", method, "--scale", str(scale), "--out", str(out)],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = json.loads(out.read_text())
        result["labels"] = np.load(out.with_suffix(".npy"))
    return result


def scores(dropped: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    hit = len(np.intersect1d(dropped, truth))
    precision = hit / len(dropped) if len(dropped) else 1.0
    recall = hit / len(truth) if len(truth) else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def load_average() -> float:
    return os.getloadavg()[0]


def wait_for_quiet(limit: float = 1.2, patience: float = 45) -> float:
    """Wait (up to ``patience`` seconds) for the 1-minute load to drop under ``limit``."""
    deadline = time.time() + patience
    while load_average() > limit and time.time() < deadline:
        time.sleep(10)
    return load_average()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scales", default="1,4,16")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--worker")
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.scale, args.out)
        return

    from minhash_truth import ground_truth

    path = corpus_path(1)
    started = time.perf_counter()
    truth_labels = ground_truth(path, THRESHOLD)
    truth_seconds = time.perf_counter() - started
    truth = lowest_member_drop_set(truth_labels)
    docs = len(truth_labels)
    print(f"ground truth: {docs} docs, {len(truth)} to drop ({truth_seconds:.1f} s)", flush=True)

    loads, rows = [], []
    for method in args.methods.split(","):
        runs = []
        for _ in range(args.runs):
            loads.append(wait_for_quiet())
            runs.append(measure(method, 1))
            print(method, f"{runs[-1]['seconds']:.2f} s", flush=True)
        seconds = statistics.median(r["seconds"] for r in runs)
        dropped = lowest_member_drop_set(runs[0]["labels"])
        precision, recall, f1 = scores(dropped, truth)
        rows.append({"method": method, "seconds": seconds, "docs_per_s": docs / seconds,
                     "peak_rss": max(r["peak_rss"] for r in runs), "dropped": len(dropped),
                     "precision": precision, "recall": recall, "f1": f1,
                     "runs": [round(r["seconds"], 2) for r in runs]})

    scaling = []
    for scale in [int(s) for s in args.scales.split(",")]:
        runs = []
        for _ in range(args.runs if scale == 1 else max(1, args.runs // 3)):
            loads.append(wait_for_quiet())
            runs.append(measure("dataflow", scale))
            print(f"dataflow x{scale}", f"{runs[-1]['seconds']:.2f} s", flush=True)
        seconds = statistics.median(r["seconds"] for r in runs)
        dropped = lowest_member_drop_set(runs[0]["labels"])
        replicated_truth = np.concatenate([truth + replica * docs for replica in range(scale)])
        scaling.append({"scale": scale, "docs": runs[0]["docs"], "seconds": seconds,
                        "peak_rss": max(r["peak_rss"] for r in runs), "dropped": len(dropped),
                        "f1": scores(dropped, replicated_truth)[2], "runs": len(runs)})

    from results import write_section

    write_section("minhash", "MinHash near-duplicate removal: dataflow vs datasketch vs datatrove (issue 4)",
                  report(rows, scaling, docs, len(truth), truth_seconds, loads, args))


def report(rows: list[dict], scaling: list[dict], docs: int, truth_size: int, truth_seconds: float,
           loads: list[float], args) -> str:
    peers = [r for r in rows if not r["method"].startswith("dataflow")]
    fastest = max(peers, key=lambda r: r["docs_per_s"]) if peers else None
    lines = [
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- command: `python benchmarks/minhash.py --runs {args.runs} --scales {args.scales}`",
        f"- corpus: Debian 12 main package descriptions (English), {docs} documents; word 5-grams, "
        f"{NUM_PERM} permutations, Jaccard >= {THRESHOLD}",
        f"- ground truth: exact Jaccard of all pairs (prefix-filtered sparse join, {truth_seconds:.1f} s): "
        f"{truth_size} documents to drop",
        f"- 1-minute load before runs: min {min(loads):.2f}, max {max(loads):.2f} (the machine is shared)",
        "- survivors: every method's clusters are scored with the ground truth's rule (lowest-numbered "
        "document of a cluster kept)",
        "",
        "| method | median s | docs/s | vs fastest peer | peak RSS | dropped | precision | recall | F1 | runs (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ratio = f"{r['docs_per_s'] / fastest['docs_per_s']:.1f}x" if fastest else "-"
        lines.append(f"| {r['method']} | {r['seconds']:.2f} | {r['docs_per_s']:,.0f} | {ratio} | "
                     f"{r['peak_rss'] / 2**30:.2f} GiB | {r['dropped']} | {r['precision']:.4f} | "
                     f"{r['recall']:.4f} | {r['f1']:.4f} | {r['runs']} |")
    lines += [
        "",
        "`dataflow` is a pipeline build of the dedup node (its Parquet source already stored, as on a rebuild; "
        "MinHashDedup with exact verification; Parquet output and rejects written); `dataflow_core` is the "
        "operator's clustering on texts in memory, the same work the peers are timed on.",
        "",
        "Why the scores differ: datasketch and datatrove take every LSH candidate as a duplicate, so pairs "
        "between Jaccard ~0.6 and 0.8 that share a band are dropped (precision ~0.73) while pairs just above "
        "0.8 that share no band are kept (recall ~0.87). dataflow bands for recall (18 x 7: a pair at exactly "
        "0.8 becomes a candidate with probability 0.99), then checks candidates by exact Jaccard of their "
        "shingle sets, so precision is 1 and the few misses are pairs no band caught. Its speed comes from "
        "one-permutation hashing (one hash per shingle instead of 128), NumPy/Polars batch work on both cores, "
        "and checking only pairs that can still join two clusters.",
        "",
        "Scaling (dataflow pipeline; 4x and 16x add replicas of the corpus with every word tagged by replica, "
        "so each replica holds the corpus's near-duplicates and none across replicas):",
        "",
        "| scale | docs | median s (runs) | docs/s | seconds per 1x | peak RSS | dropped | F1 vs replicated truth |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in scaling:
        lines.append(f"| {s['scale']}x | {s['docs']:,} | {s['seconds']:.2f} ({s['runs']}) | "
                     f"{s['docs'] / s['seconds']:,.0f} | {s['seconds'] / s['scale']:.2f} | "
                     f"{s['peak_rss'] / 2**30:.2f} GiB | {s['dropped']:,} | {s['f1']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
