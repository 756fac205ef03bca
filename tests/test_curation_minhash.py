"""MinHash near-duplicate removal on real Debian package descriptions."""

from __future__ import annotations

import json
import math
import random
import unicodedata
from pathlib import Path

import polars as pl
import pytest

from dataflow import CompileError, Pipeline
from dataflow.operators import MinHashDedup

DATA = Path(__file__).parent / "data" / "curation"


def descriptions() -> list[dict]:
    rows = [json.loads(line) for line in (DATA / "debian_en.jsonl").read_text().splitlines()]
    return [{"id": r["package"], "text": r["text"]} for r in rows]


def shingles(text: str | None, n: int = 5) -> set[str]:
    words = unicodedata.normalize("NFKC", (text or "").lower()).split()
    return {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))} if words else set()


def brute_force_clusters(rows: list[dict], threshold: float = 0.8) -> dict[str, str]:
    """Ground truth by brute force: all pairs' exact Jaccard, components; each id's lowest cluster member."""
    ids = sorted(r["id"] for r in rows)
    sets = {r["id"]: shingles(r["text"]) for r in rows}
    parent = {i: i for i in ids}

    def find(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            if sets[a] and sets[b] and len(sets[a] & sets[b]) / len(sets[a] | sets[b]) >= threshold:
                ra, rb = find(a), find(b)
                parent[max(ra, rb)] = min(ra, rb)
    return {i: find(i) for i in ids}


def exact_drop_set(rows: list[dict], threshold: float = 0.8) -> set[str]:
    """Every document but the lowest id of its brute-force cluster."""
    return {i for i, root in brute_force_clusters(rows, threshold).items() if root != i}


def pipeline(rows: list[dict], op: MinHashDedup) -> Pipeline:
    p = Pipeline("minhash")
    p.output("o", p.from_rows(rows, name="src").apply(op, name="near_dedup"))
    return p


def run(builder, rows: list[dict], op: MinHashDedup) -> tuple[pl.DataFrame, pl.DataFrame]:
    builder.build(pipeline(rows, op))
    return builder.output("o"), builder.rejects("near_dedup")


def test_drops_exactly_the_ground_truth_near_duplicates(builder):
    rows = descriptions()
    truth = exact_drop_set(rows)
    assert len(truth) >= 10  # Haskell -dev/-doc/-prof packages repeat their descriptions
    kept, rejects = run(builder, rows, MinHashDedup(column="text"))
    assert set(rejects["id"]) == truth
    assert set(kept["id"]) == {r["id"] for r in rows} - truth
    assert set(rejects["reason"]) == {"near_duplicate"}


def test_result_does_not_depend_on_input_order(builder, tmp_path):
    rows = descriptions()
    _, first = run(builder, rows, MinHashDedup(column="text", keep="longest"))
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    builder.out = tmp_path / "shuffled"
    kept, second = run(builder, shuffled, MinHashDedup(column="text", keep="longest"))
    assert first.sort("id").to_dicts() == second.sort("id").to_dicts()
    removed = set(second["id"])
    assert kept["id"].to_list() == [r["id"] for r in shuffled if r["id"] not in removed]  # input order kept


def test_rejects_name_survivor_and_similarity_and_rows_carry_cluster_ids(builder):
    rows = descriptions()
    kept, rejects = run(builder, rows, MinHashDedup(column="text"))
    detail = json.loads(rejects.filter(pl.col("id") == "libghc-acid-state-doc")["detail"][0])
    assert detail["duplicate_of"] == "libghc-acid-state-dev"
    assert detail["cluster_id"] == "libghc-acid-state-dev"
    assert 0.8 <= detail["jaccard"] <= 1.0 and 0.5 <= detail["similarity"] <= 1.0
    assert kept["cluster_id"].null_count() == 0
    survivor = kept.filter(pl.col("id") == "libghc-acid-state-dev").row(0, named=True)
    assert survivor["cluster_size"] >= 2
    loners = kept.filter(pl.col("cluster_size") == 1)
    assert (loners["cluster_id"] == loners["id"]).all()


def test_survivor_rules_longest_and_highest_score(builder, tmp_path):
    base = "Agda is a dependently typed functional programming language with inductive families and modules"
    rows = [{"id": "a", "text": base, "votes": 1.0},
            {"id": "b", "text": base + " and more", "votes": None},
            {"id": "c", "text": base + ".", "votes": 5.0}]
    kept, _ = run(builder, rows, MinHashDedup(column="text", threshold=0.7))
    assert kept["id"].to_list() == ["a"]
    builder.out = tmp_path / "longest"
    kept, rejects = run(builder, rows, MinHashDedup(column="text", threshold=0.7, keep="longest"))
    assert kept["id"].to_list() == ["b"]
    assert {json.loads(d)["duplicate_of"] for d in rejects["detail"]} == {"b"}
    builder.out = tmp_path / "score"
    kept, _ = run(builder, rows, MinHashDedup(column="text", threshold=0.7, keep="highest_score",
                                              score_column="votes"))
    assert kept["id"].to_list() == ["c"]


def test_bad_input_empty_null_short_and_non_string(builder, tmp_path):
    rows = [{"id": "1", "text": ""}, {"id": "2", "text": ""}, {"id": "3", "text": None}, {"id": "4", "text": "   "},
            {"id": "5", "text": "hello world"}, {"id": "6", "text": "Hello   WORLD"},
            {"id": "7", "text": "hello world again"}]
    kept, rejects = run(builder, rows, MinHashDedup(column="text"))
    # empty/blank/null texts have no shingle and are never duplicates; short texts shingle as a whole
    assert rejects["id"].to_list() == ["6"]
    assert json.loads(rejects["detail"][0])["duplicate_of"] == "5"
    assert kept["id"].to_list() == ["1", "2", "3", "4", "5", "7"]
    builder.out = tmp_path / "ints"
    kept, rejects = run(builder, [{"id": "a", "code": 123456}, {"id": "b", "code": 123456}, {"id": "c", "code": 7}],
                        MinHashDedup(column="code"))
    assert rejects["id"].to_list() == ["b"]


def test_ten_megabyte_documents(builder):
    text = "\n".join(r["text"] for r in descriptions())
    big = (text + "\n") * (10_000_000 // len(text) + 1)
    assert len(big) >= 10_000_000
    rows = [{"id": "big", "text": big}, {"id": "big-copy", "text": big.replace("Haskell", "haskell", 3) + " end"},
            {"id": "small", "text": text[:500]}]
    kept, rejects = run(builder, rows, MinHashDedup(column="text"))
    assert rejects["id"].to_list() == ["big-copy"]
    assert kept["id"].to_list() == ["big", "small"]


def test_non_latin_scripts_with_character_shingles(builder, tmp_path):
    rows = [json.loads(line) for line in (DATA / "debian_multilingual.jsonl").read_text().splitlines()]
    chinese = [r["text"] for r in rows if r["lang"] == "zh"]
    russian = [r["text"] for r in rows if r["lang"] == "ru"]
    edited = chinese[0].replace("。", "，", 1) + "此外"
    docs = [{"id": f"zh{i}", "text": t} for i, t in enumerate(chinese)] + [{"id": "zh_edit", "text": edited}]
    docs += [{"id": f"ru{i}", "text": t} for i, t in enumerate(russian)]
    docs += [{"id": "ru_edit", "text": russian[0].upper() + " Конец."}]
    _, rejects = run(builder, docs, MinHashDedup(column="text", shingle="char", ngram=5, threshold=0.8))
    assert set(rejects["id"]) == {"zh_edit", "ru_edit"}
    builder.out = tmp_path / "words"
    _, rejects = run(builder, docs, MinHashDedup(column="text", threshold=0.8))
    assert "ru_edit" in set(rejects["id"])  # Cyrillic words are case-folded like Latin ones


def test_conversations_and_unverified_mode(builder):
    rows = descriptions()[:30]
    chats = [{"id": r["id"], "messages": [{"role": "user", "content": "Describe the package."},
                                          {"role": "assistant", "content": r["text"]}]} for r in rows]
    _, verified = run(builder, chats, MinHashDedup(column="messages"))
    as_text = [{"id": r["id"], "text": f"user: Describe the package.\nassistant: {r['text']}"} for r in rows]
    assert set(verified["id"]) == exact_drop_set(as_text)
    p = Pipeline("unverified")
    p.output("o2", p.from_rows(chats, name="src").apply(MinHashDedup(column="messages", verify=False), name="fast"))
    report = builder.build(p)
    unverified = builder.rejects("fast")
    assert "jaccard" not in json.loads(unverified["detail"][0])
    # signature estimates err by a few hundredths: pairs close to the threshold may differ
    assert len(set(unverified["id"]) ^ set(verified["id"])) <= 3
    metrics = next(s.metrics for s in report.stats if s.name == "fast")
    assert metrics["duplicate_pairs"] > 0 and metrics["candidate_pairs"] >= metrics["duplicate_pairs"]


@pytest.mark.parametrize("params, problem", [
    ({"bands": 10}, "give both bands and rows"),
    ({"bands": 20, "rows": 10}, "at most num_perm"),
    ({"keep": "highest_score"}, "score_column"),
    ({"shingle": "line"}, "shingle must be"),
    ({"threshold": 1.5}, "threshold must be"),
])
def test_parameter_problems_fail_at_compile(params, problem):
    p = Pipeline("bad")
    p.output("o", p.from_rows([{"text": "x"}], name="src").apply(MinHashDedup(**params)))
    with pytest.raises(CompileError, match=problem):
        p.compile()


def test_missing_column_fails_at_compile():
    p = Pipeline("missing")
    p.output("o", p.from_rows([{"body": "x"}], name="src").apply(MinHashDedup(column="text"), name="md"))
    with pytest.raises(CompileError, match="text"):
        p.compile()


def with_copies(seed: int) -> list[dict]:
    """The descriptions with exact copies (verbatim, with higher ids; upper-cased, with lower ids: equal once
    prepared), a copy with doubled spaces (equal once whitespace is collapsed), repeated empty/blank/null
    texts, and scores; shuffled."""
    rows = [{**r, "votes": float(len(r["text"]) % 11)} for r in descriptions()]
    picked = rows[::9]
    rows += [{"id": f"zz-copy-{i}", "text": r["text"], "votes": float(i % 13)} for i, r in enumerate(picked)]
    rows += [{"id": f"aa-upper-{i}", "text": r["text"].upper(), "votes": 20.0 if i % 2 else None}
             for i, r in enumerate(picked[::2])]
    ascii_text = next(r["text"] for r in picked if r["text"].isascii())  # (others' whitespace runs count as one)
    rows += [{"id": "zz-spaced", "text": ascii_text.replace(" ", "  "), "votes": 0.0}]
    rows += [{"id": f"blank-{i}", "text": text, "votes": 1.0} for i, text in enumerate(["", "", "  ", None, None])]
    random.Random(seed).shuffle(rows)
    return rows


def expected_survivors(rows: list[dict], keep: str) -> dict[str, str]:
    """Each id's survivor by brute force: clusters, then the ``keep`` rule (ties to the lowest id)."""
    by_id = {r["id"]: r for r in rows}
    clusters: dict[str, list[str]] = {}
    for i, root in brute_force_clusters(rows).items():
        clusters.setdefault(root, []).append(i)

    def rank(i: str) -> tuple:
        value = {"lowest_id": 0, "longest": len(by_id[i]["text"] or ""),
                 "highest_score": by_id[i]["votes"] if by_id[i]["votes"] is not None else -math.inf}[keep]
        return -value, i

    return {i: min(members, key=rank) for members in clusters.values() for i in members}


def prepared(text: str) -> str:
    """The text as the docstring says it is compared: NFKC, lower case, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text or "").lower().split())


@pytest.mark.parametrize("keep", ["lowest_id", "longest", "highest_score"])
def test_exact_copies_are_collapsed_into_the_brute_force_clusters(builder, keep):
    rows = with_copies(seed=3)
    by_id = {r["id"]: r for r in rows}
    survivor = expected_survivors(rows, keep)
    kept, rejects = run(builder, rows, MinHashDedup(column="text", keep=keep, score_column="votes"))
    assert set(rejects["id"]) == {i for i, s in survivor.items() if s != i}
    assert set(kept["id"]) == {i for i, s in survivor.items() if s == i}
    for reject in rejects.iter_rows(named=True):
        detail = json.loads(reject["detail"])
        assert detail["duplicate_of"] == survivor[reject["id"]]
        copy = prepared(by_id[reject["id"]]["text"]) == prepared(by_id[detail["duplicate_of"]]["text"])
        assert reject["reason"] == ("exact_duplicate" if copy else "near_duplicate")
        if copy:
            assert detail["jaccard"] == detail["similarity"] == 1.0
    reasons = rejects["reason"].value_counts().rows()
    assert dict(reasons)["exact_duplicate"] >= 10 and dict(reasons)["near_duplicate"] >= 10
    survivors = {json.loads(d)["duplicate_of"] for d in rejects["detail"]}
    assert "zz-spaced" in set(rejects["id"]) | survivors  # a copy once whitespace is collapsed: checked above
    assert {f"blank-{i}" for i in range(5)} <= set(kept["id"])  # no shingle: never a duplicate


def test_exact_copies_do_not_depend_on_input_order_and_are_counted(builder, tmp_path):
    rows = with_copies(seed=1)
    report = builder.build(pipeline(rows, MinHashDedup(column="text", keep="longest")))
    first = builder.rejects("near_dedup")
    builder.out = tmp_path / "again"
    run(builder, with_copies(seed=2), MinHashDedup(column="text", keep="longest"))
    assert first.sort("id").to_dicts() == builder.rejects("near_dedup").sort("id").to_dicts()
    texts = {}
    for r in sorted(rows, key=lambda r: r["id"]):
        if shingles(r["text"]):
            texts.setdefault(prepared(r["text"]), []).append(r["id"])
    metrics = next(s.metrics for s in report.stats if s.name == "near_dedup")
    assert metrics["exact_duplicates"] == sum(len(ids) - 1 for ids in texts.values()) > 0
