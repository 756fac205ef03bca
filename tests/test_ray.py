"""``--executor ray``: the same fingerprints and rows as the local executor, on a two-node Ray cluster
started once for the whole test run (``ray.cluster_utils.Cluster``, one CPU per node)."""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from conftest import EXAMPLES
from dataflow import DataflowError, Pipeline, global_op, row_op
from dataflow.build import build, load_pipeline
from dataflow.operators import MinHashDedup
from dataflow.progress import Progress
from dataflow.store import DATA, REJECTS, Store

REPO = Path(__file__).resolve().parent.parent
ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")


@pytest.fixture(scope="session", autouse=True)
def cluster():
    """Two Ray nodes on this machine for the whole test run; shut down after it."""
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, log_to_driver=False)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def built(pipeline: Pipeline, out: Path, executor: str, progress: Progress | None = None):
    log = io.StringIO()
    report = build(pipeline, out, progress or Progress(log), executor=executor)
    return report, log.getvalue()


def stored(out: Path) -> dict[str, dict[str, tuple[pl.DataFrame, object]]]:
    """Every node in a store, by fingerprint: its data and rejects as frames, each with the Arrow schema that
    other readers see (the types its footer declares)."""
    import pyarrow.parquet as pq

    return {entry.name: {f: (pl.read_parquet(entry / f), pq.read_schema(entry / f)) for f in (DATA, REJECTS)
                         if (entry / f).exists()} for entry in Store(out).cache.iterdir()}


def assert_same_store(local: Path, distributed: Path) -> None:
    ours, theirs = stored(local), stored(distributed)
    assert ours.keys() == theirs.keys()  # the same fingerprints
    for fingerprint, files in ours.items():
        assert files.keys() == theirs[fingerprint].keys(), fingerprint
        for name, (frame, schema) in files.items():
            assert frame.equals(theirs[fingerprint][name][0]), (fingerprint, name)  # same rows, same order
            assert schema.remove_metadata() == theirs[fingerprint][name][1].remove_metadata(), (fingerprint, name)


def example(file: str, **params) -> Pipeline:
    return load_pipeline(str(REPO / "pipelines" / file), {k: str(v) for k, v in params.items()})


def test_quickstart_same_fingerprints_rows_and_cache_as_local(tmp_path):
    local, _ = built(example("quickstart.py"), tmp_path / "local", "local")
    distributed, log = built(example("quickstart.py"), tmp_path / "ray", "ray")
    assert [(s.name, s.fingerprint, s.rows_out, s.rejected) for s in distributed.stats] == \
        [(s.name, s.fingerprint, s.rows_out, s.rejected) for s in local.stats]
    assert_same_store(tmp_path / "local", tmp_path / "ray")
    for output in ("train", "eval"):
        ours, theirs = (pl.read_parquet(tmp_path / executor / output / DATA) for executor in ("local", "ray"))
        assert theirs.equals(ours)
    assert "train: SplitPart runs on one worker: each row's part is the rank" in log  # no distributed plan: why
    assert "deduped: ExactDedup needs" not in log  # exact dedup is shuffled, not collected
    switched, _ = built(example("quickstart.py"), tmp_path / "local", "ray")  # the other executor's store
    assert switched.nothing_done


@pytest.mark.parametrize("file", EXAMPLES)
def test_every_example_pipeline_gives_the_local_fingerprints_and_rows(example_build, tmp_path, file):
    local = example_build(file, **EXAMPLES[file])
    distributed, _ = built(example(file, **EXAMPLES[file]), tmp_path / "ray", "ray")
    assert sum(s.metrics.get("llm_calls", 0) for s in distributed.stats) == 0  # the same requests: all cached
    assert_same_store(local, tmp_path / "ray")


def test_llm_misses_go_to_engines_and_the_driver_caches_them(tmp_path, monkeypatch):
    """With an empty request cache the engines on the cluster answer; the driver stored every answer, so
    a local build afterwards makes no model call and gets the same rows."""
    monkeypatch.setenv("DATAFLOW_LLM_CACHE", str(tmp_path / "llm_cache.sqlite"))
    params = {"prompts": 2, "k": 2, "max_tokens": 8}
    distributed, _ = built(example("generate_demo.py", **params), tmp_path / "ray", "ray")
    calls = sum(s.metrics.get("llm_calls", 0) for s in distributed.stats)
    assert calls > 0
    local, _ = built(example("generate_demo.py", **params), tmp_path / "local", "local")
    assert sum(s.metrics.get("llm_calls", 0) for s in local.stats) == 0
    assert sum(s.metrics.get("cache_hits", 0) for s in local.stats) == calls
    assert_same_store(tmp_path / "local", tmp_path / "ray")


def numbers(rows: int = 40) -> Pipeline:
    p = Pipeline("numbers")
    return p, p.from_rows([{"n": i, "text": f"row {i % 7}"} for i in range(rows)], name="src")


def near_duplicates() -> Pipeline:
    """Debian descriptions (their -dev/-doc/-prof packages repeat), in shuffled order, with empty and null texts,
    one large cluster (3,000 one-word edits of a text: more open pairs than the operator checks at once) and exact
    copies of some descriptions and edits."""
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "curation" / "debian_en.jsonl").open()]
    rows = [{"id": r["package"], "text": r["text"], "stars": len(r["text"]) % 7} for r in rows]
    words = rows[0]["text"].split()
    rows += [{"id": f"edit-{i:04d}", "text": " ".join(words[:i % len(words)] + [f"w{i}"] + words[i % len(words) + 1:]),
              "stars": i % 5} for i in range(3000)]
    rows += [{"id": f"copy-{i:03d}", "text": r["text"].upper() if i % 2 else r["text"], "stars": i % 7}
             for i, r in enumerate(rows[:600:4] + rows[-40:])]  # exact copies (upper case is one once prepared)
    rows += [{"id": "empty", "text": "", "stars": 1}, {"id": "null", "text": None, "stars": 2},
             {"id": "empty-again", "text": "", "stars": 4}]
    random.Random(0).shuffle(rows)
    p = Pipeline("near")
    docs = p.from_rows(rows, name="docs").filter(pl.col("stars") != 3, reason="three stars", name="not_three")
    for name, params in {"lowest_id": {}, "longest": {"keep": "longest", "window": 2},
                         "highest_score": {"keep": "highest_score", "score_column": "stars"},
                         "estimated": {"verify": False, "threshold": 0.7},
                         "chars": {"shingle": "char", "ngram": 9, "bands": 16, "rows": 4}}.items():
        p.output(name, docs.apply(MinHashDedup(column="text", **params), name=name))
    return p


def test_minhash_is_distributed_with_the_local_rows_rejects_and_metrics(tmp_path):
    local, _ = built(near_duplicates(), tmp_path / "local", "local")
    distributed, log = built(near_duplicates(), tmp_path / "ray", "ray")
    assert "runs on one worker" not in log
    assert [(s.name, s.fingerprint, s.rows_out, s.rejected, s.metrics) for s in distributed.stats] == \
        [(s.name, s.fingerprint, s.rows_out, s.rejected, s.metrics) for s in local.stats]
    assert_same_store(tmp_path / "local", tmp_path / "ray")
    metrics = {s.name: s.metrics for s in local.stats}
    assert metrics["lowest_id"]["verified_pairs"] < metrics["lowest_id"]["candidate_pairs"]  # the rounds skipped some
    assert {s.name: s.rejected for s in local.stats}["lowest_id"] > 2000
    assert metrics["lowest_id"]["exact_duplicates"] > 100


def test_repeated_ids_fail_the_node_as_locally(tmp_path):
    @global_op(inputs={"text": str})
    def twice(table):  # a user's global step that repeats ids
        return pl.concat([table, table])

    p = Pipeline("repeated")
    docs = p.from_rows([{"topic": t, "text": f"words about {t}"} for t in "abc"], name="docs")
    tags = p.from_rows([{"topic": t, "tag": tag} for t, tag in ("bx", "by", "cz")], name="tags")
    tagged = docs.join(tags, on="topic", name="tagged").apply(twice, name="twice")
    p.output("o", tagged.apply(MinHashDedup(column="text"), name="near"))
    with pytest.raises(DataflowError, match=r"node 'twice': the function's result repeats ids, e.g. \['docs-2\+tags-1', "
                                            r"'docs-2\+tags-2', 'docs-3'\]") as raised:
        built(p, tmp_path / "local", "local")
    with pytest.raises(DataflowError, match=re.escape(str(raised.value))):
        built(p, tmp_path / "ray", "ray")
    assert len(list(Store(tmp_path / "ray").cache.iterdir())) == 3  # docs, tags and tagged are kept
    assert not list(Store(tmp_path / "ray").tmp.iterdir())


def test_rows_spread_over_both_nodes(tmp_path):
    @row_op(inputs={"n": int}, outputs={"node_id": str})
    def placed_on(row):
        time.sleep(0.05)  # long enough that both range tasks run at once, one per node's single CPU
        return {"node_id": ray.get_runtime_context().get_node_id()}

    p, src = numbers()
    p.output("placed", src.filter(pl.col("n") % 2 == 0, reason="odd").apply(placed_on, name="placed"))
    built(p, tmp_path / "out", "ray")
    placed = pl.read_parquet(tmp_path / "out" / "placed" / DATA)
    assert placed["n"].to_list() == list(range(0, 40, 2))  # the filter's rows, in order
    assert placed["node_id"].n_unique() == 2


def test_a_worker_killed_mid_node_is_retried_with_the_same_outputs(tmp_path):
    marker = tmp_path / "killed"

    @row_op(inputs={"n": int}, outputs={"double": int})
    def double(row):
        if row["n"] == 30 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)  # this worker dies in the middle of the node
        return {"double": 2 * row["n"]}

    outputs = {}
    for executor in ("ray", "local"):  # the local build finds the marker: it must not kill the test's process
        p, src = numbers()
        p.output("result", src.apply(double, name="doubled").dedup("text", name="distinct_text"))
        built(p, tmp_path / executor, executor)
        assert marker.exists()  # the ray build's worker died at row 30, before the local build ran
        outputs[executor] = pl.read_parquet(tmp_path / executor / "result" / DATA)
    assert outputs["ray"].equals(outputs["local"])
    assert outputs["ray"]["double"].to_list() == [0, 2, 4, 6, 8, 10, 12]


class InterruptedProgress(Progress):
    """Ctrl-C while the node named ``at`` is being built on the cluster."""

    def __init__(self, at: str):
        super().__init__(io.StringIO())
        self.at = at

    def advance(self, name: str, rows: int) -> None:
        if name == self.at:
            raise KeyboardInterrupt


def test_ctrl_c_keeps_finished_nodes_and_commits_nothing_half_way(tmp_path):
    @row_op(inputs={"n": int}, outputs={"m": int})
    def add_one(row):
        return {"m": row["n"] + 1}

    def pipeline():  # row steps run on the cluster (maps by expression run on the driver)
        p, src = numbers()
        p.output("result", src.apply(add_one, name="plus").dedup("text", name="distinct_text"))
        return p

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        built(pipeline(), out, "ray", InterruptedProgress("plus"))
    local, _ = built(pipeline(), tmp_path / "local", "local")
    assert [e.name for e in Store(out).cache.iterdir()] == [s.fingerprint for s in local.stats if s.name == "src"]
    assert not list(Store(out).tmp.iterdir())
    resumed, _ = built(pipeline(), out, "ray")
    assert {s.name: s.status for s in resumed.stats} == {"src": "cached", "plus": "built", "distinct_text": "built"}
    assert_same_store(tmp_path / "local", out)


def test_an_operator_that_cannot_be_sent_is_named_before_the_cluster_is_contacted(tmp_path, monkeypatch):
    lock = threading.Lock()

    @row_op(inputs={"n": int}, outputs={"m": int})
    def locked(row):
        with lock:
            return {"m": row["n"]}

    def no_cluster(address):
        raise AssertionError("the cluster was contacted")

    monkeypatch.setattr("dataflow.executors.ray.connected", no_cluster)
    p, src = numbers()
    p.output("out", src.apply(locked, name="locked"))
    with pytest.raises(DataflowError, match=r"node 'locked': its operator cannot be sent to Ray workers .*lock"):
        built(p, tmp_path / "out", "ray")
    assert not Store(tmp_path / "out").cache.exists()


def test_out_of_memory_names_the_node_and_the_fix_and_commits_nothing(tmp_path):
    """The worker raises Ray's own ObjectStoreFullError (a stand-in for a full object store, which Ray
    otherwise spills to disk long before a small test fills it)."""
    @global_op(inputs={"n": int})
    def hungry(table):
        raise ray.exceptions.ObjectStoreFullError("object store is full")

    p, src = numbers()
    p.output("result", src.apply(hungry, name="hungry"))
    with pytest.raises(DataflowError, match=r"node 'hungry' ran out of memory on the Ray cluster .*--object-store"):
        built(p, tmp_path / "out", "ray")
    assert len(list(Store(tmp_path / "out").cache.iterdir())) == 1  # the source only
    assert not list(Store(tmp_path / "out").tmp.iterdir())


def test_a_failing_row_function_is_named_as_the_local_executor_names_it(tmp_path):
    @row_op(inputs={"n": int}, outputs={"m": int})
    def broken(row):
        return {"m": 1 // (row["n"] - 3)}

    p, src = numbers()
    p.output("result", src.apply(broken, name="broken"))
    with pytest.raises(DataflowError, match=r"node 'broken' failed on row id=src-4: ZeroDivisionError"):
        built(p, tmp_path / "out", "ray")


def test_without_ray_one_line_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    p, src = numbers()
    p.output("out", src)
    with pytest.raises(DataflowError, match=r"^--executor ray needs Ray: pip install -e '\.\[ray\]'"):
        built(p, tmp_path / "out", "ray")


def test_an_unreachable_address_fails_in_seconds_with_the_fix(tmp_path):
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9"}
    command = [str(Path(sys.executable).parent / "dataflow"), "build", str(REPO / "pipelines" / "quickstart.py"),
               "--out", str(tmp_path / "out"), "--executor", "ray"]
    run = subprocess.run(command,
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode != 0
    assert "--address 127.0.0.1:9: cannot reach a Ray cluster there" in run.stderr
    assert "ray start --head" in run.stderr


def test_maps_over_the_whole_input_and_one_to_many_joins_give_the_local_rows(tmp_path):
    def pipeline() -> Pipeline:
        p = Pipeline("whole")
        rows = p.from_rows([{"x": float(i), "tag": "ab"[i % 2]} for i in range(10)], name="rows")
        mapped = rows.map(centered=pl.col("x") - pl.col("x").mean(), rank=pl.col("x").rank("ordinal"), name="mapped")
        tags = p.from_rows([{"tag": "a", "n": 1}, {"tag": "a", "n": 2}, {"tag": "b", "n": 3}], name="tags")
        joined = mapped.join(tags, on="tag", name="joined")  # every 'a' row matches two tags
        p.output("kept", joined.filter(pl.col("n") != 2, name="not_two").dedup("x", name="deduped"))
        return p

    built(pipeline(), tmp_path / "local", "local")
    built(pipeline(), tmp_path / "ray", "ray")
    assert_same_store(tmp_path / "local", tmp_path / "ray")
    kept = pl.read_parquet(tmp_path / "ray" / "kept" / DATA)
    assert kept["centered"].to_list() == [i - 4.5 for i in range(10)] and kept["rank"].to_list() == list(range(1, 11))
    assert kept["id"].to_list() == [f"rows-{i + 1}+tags-1" if i % 2 == 0 else f"rows-{i + 1}" for i in range(10)]


def test_a_polars_error_on_a_worker_is_the_local_one_line(tmp_path):
    def pipeline() -> Pipeline:
        p = Pipeline("cast")
        p.output("o", p.from_rows([{"n": "1"}, {"n": "x"}], name="rows").cast({"n": int}, name="casted"))
        return p

    messages = []
    for executor in ("local", "ray"):
        with pytest.raises(DataflowError) as failed:
            built(pipeline(), tmp_path / executor, executor)
        messages.append(str(failed.value))
    assert messages[1].startswith("node 'casted' failed: conversion from `str` to `i64` failed in column 'n'")
    assert "ray::" not in messages[1] and messages[0].split(" for ")[0] == messages[1].split(" for ")[0]
