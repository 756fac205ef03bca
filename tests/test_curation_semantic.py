"""Semantic dedup and diversity metrics with the packaged all-MiniLM-L6-v2 (no hub download)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dataflow import Pipeline
from dataflow.operators import DiversityMetrics, SemanticDedup

DATA = Path(__file__).parent / "data" / "curation"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """The packaged model must load with the hub unreachable."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def descriptions(n: int) -> list[dict]:
    rows = [json.loads(line) for line in (DATA / "debian_en.jsonl").read_text().splitlines()]
    return [{"id": r["package"], "text": r["text"]} for r in rows[:n]]


def paraphrased() -> list[dict]:
    rows = [r for r in descriptions(200) if not r["id"].startswith("libghc-")][:30]
    first = max(rows, key=lambda r: len(r["text"]))["text"].split("\n")[0]  # a long text's summary line
    rows.append({"id": "zz-paraphrase", "text": first.upper() + "!!"})
    rows.append({"id": "zz-summary-only", "text": first})
    rows += [{"id": "empty-1", "text": ""}, {"id": "empty-2", "text": "   "}, {"id": "null", "text": None}]
    return rows


def test_semantic_dedup_removes_meaning_duplicates_and_explains(builder):
    rows = paraphrased()
    p = Pipeline("semantic")
    p.output("o", p.from_rows(rows, name="src").apply(SemanticDedup("text", threshold=0.95), name="sem"))
    report = builder.build(p)
    rejects = builder.rejects("sem")
    assert rejects["id"].to_list() == ["zz-summary-only"]
    detail = json.loads(rejects["detail"][0])
    assert detail["duplicate_of"] == "zz-paraphrase" and detail["similarity"] >= 0.95
    assert "all-MiniLM-L6-v2" in detail["model"]
    kept = builder.output("o")
    assert {"empty-1", "empty-2", "null"} <= set(kept["id"])  # blank texts are never duplicates
    assert kept.filter(pl.col("id") == "zz-paraphrase")["semantic_cluster_size"][0] == 2
    assert next(s.metrics for s in report.stats if s.name == "sem")["similar_pairs"] >= 1


def test_semantic_dedup_does_not_depend_on_row_order(builder, tmp_path):
    rows = descriptions(60)
    p = Pipeline("semantic")
    p.output("o", p.from_rows(rows, name="src").apply(SemanticDedup("text", threshold=0.9), name="sem"))
    builder.build(p)
    first = builder.rejects("sem")
    assert len(first) >= 5  # Haskell -dev/-doc/-prof descriptions say the same thing
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    builder.out = tmp_path / "shuffled"
    p = Pipeline("semantic")
    p.output("o", p.from_rows(shuffled, name="src").apply(SemanticDedup("text", threshold=0.9), name="sem"))
    builder.build(p)
    assert builder.rejects("sem")["id"].to_list() == first["id"].to_list()


def test_clustering_finds_the_same_pairs_as_all_pairs():
    from dataflow.operators.curation.semantic import embed, similar_pairs

    vectors = embed([r["text"] for r in descriptions(120)])
    pairs, _ = similar_pairs(vectors, 0.9, probes=2)
    similarity = vectors @ vectors.T
    a, b = np.nonzero(np.triu(similarity >= 0.9, k=1))
    assert len(pairs) >= 0.9 * len(a)
    assert {tuple(p) for p in pairs.tolist()} <= set(zip(a.tolist(), b.tolist()))


def test_diversity_metrics_in_the_build_summary(builder):
    varied = descriptions(200)[120:]
    repetitive = [{"id": f"r{i}", "text": "Haskell library for JSON parsing and encoding."} for i in range(40)]
    p = Pipeline("diversity")
    p.output("varied", p.from_rows(varied, name="a").apply(DiversityMetrics("text", sample=50), name="div_varied"))
    p.output("same", p.from_rows(repetitive, name="b").apply(DiversityMetrics("text", sample=50), name="div_same"))
    report = builder.build(p)
    metrics = {s.name: s.metrics for s in report.stats}
    high, low = metrics["div_varied"], metrics["div_same"]
    assert high["distinct_1"] > low["distinct_1"] and high["distinct_2"] > low["distinct_2"]
    assert low["distinct_2"] == pytest.approx(6 / (40 * 6))
    assert high["mean_embedding_distance"] > 0.5 and low["mean_embedding_distance"] == pytest.approx(0, abs=1e-3)
    assert len(builder.output("varied")) == len(varied)
    stored = builder.sql("select metrics from nodes where name = 'div_varied'")["metrics"][0]
    assert stored["distinct_2"] == high["distinct_2"]


def test_every_removed_row_is_within_the_threshold_of_its_survivor(builder):
    rows = descriptions(200)  # the Haskell library descriptions chain: -dev ~ -doc ~ -prof of many packages
    results = {}
    for rule in ("survivor", "components"):
        p = Pipeline("semantic")
        p.output("o", p.from_rows(rows, name="src").apply(SemanticDedup("text", threshold=0.9, cluster=rule),
                                                          name="sem"))
        builder.build(p)
        results[rule] = builder.rejects("sem")
    assert len(results["survivor"]) > 0 and results["survivor"]["score"].min() >= 0.9
    assert results["components"]["score"].min() < 0.9  # connected components chain past the threshold


def test_survivors_within_never_chains():
    from dataflow.operators.text import survivors_within

    pairs = np.array([[0, 1], [1, 2], [2, 3]])  # a chain: 0 ~ 1 ~ 2 ~ 3
    similarity = np.array([0.96, 0.97, 0.99])
    lengths = np.zeros(4, dtype=np.int64)
    assert survivors_within(pairs, similarity, 4, "lowest_id", lengths, None).tolist() == [0, 0, 2, 2]
    assert survivors_within(pairs, similarity, 4, "longest", np.array([1, 1, 1, 9]), None).tolist() == [0, 0, 3, 3]
