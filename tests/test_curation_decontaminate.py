"""Decontamination against eval set files, on real Debian package descriptions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataflow import CompileError, Pipeline
from dataflow.errors import DataflowError
from dataflow.operators import Decontaminate

DATA = Path(__file__).parent / "data" / "curation"


def descriptions() -> list[dict]:
    return [json.loads(line) for line in (DATA / "debian_en.jsonl").read_text().splitlines()]


@pytest.fixture
def eval_sets(tmp_path: Path) -> dict[str, Path]:
    """Two eval sets in two formats: Haskell -doc descriptions (jsonl) and short phrases (txt)."""
    docs = [r for r in descriptions() if r["package"].endswith("-doc")][:5]
    haskell = tmp_path / "haskell_docs.jsonl"
    haskell.write_text("".join(json.dumps({"question": r["text"], "answer": r["package"]}) + "\n" for r in docs))
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("Real-time strategy game\nthe quick brown fox\n")
    return {"haskell": haskell, "phrases": phrases}


def training_rows() -> list[dict]:
    rows = [r for r in descriptions() if not r["package"].endswith(("-doc", "-prof"))]
    return [{"id": r["package"], "prompt": f"Describe the Debian package {r['package']}.", "response": r["text"]}
            for r in rows]


def test_rows_sharing_a_13_gram_with_an_eval_set_are_rejected_with_the_set_and_ngram(builder, eval_sets):
    rows = training_rows() + [{"id": "zz-rts", "prompt": "Name a REAL-TIME strategy game!", "response": "0 A.D."}]
    op = Decontaminate(columns=("prompt", "response"), eval_sets=tuple(str(p) for p in eval_sets.values()))
    p = Pipeline("decon")
    p.output("o", p.from_rows(rows, name="src").apply(op, name="clean"))
    report = builder.build(p)
    rejects = builder.rejects("clean")
    details = {r["id"]: json.loads(r["detail"]) for r in rejects.to_dicts()}
    # the -dev packages share their long description with the -doc packages in the eval set
    haskell_hits = {i for i, d in details.items() if d["eval_set"] == "haskell_docs"}
    assert haskell_hits and all(i.startswith("libghc-") and i.endswith("-dev") for i in haskell_hits)
    sample = details[sorted(haskell_hits)[0]]
    assert sample["column"] == "response" and len(sample["ngram"].split()) == 13
    assert details["zz-rts"] == {"eval_set": "phrases", "column": "prompt", "ngram": "real time strategy game"}
    assert set(rejects["reason"]) == {"contaminated"}
    scores = dict(zip(rejects["id"], rejects["score"]))
    assert all(0 < scores[i] <= 1 for i in haskell_hits) and scores["zz-rts"] == 0  # no 13-gram, a whole item
    metrics = next(s.metrics for s in report.stats if s.name == "clean")
    assert metrics == {"contaminated_haskell_docs": len(haskell_hits), "contaminated_phrases": 1}
    assert len(builder.output("o")) == len(rows) - len(rejects)


def test_editing_an_eval_set_rebuilds_the_node(builder, eval_sets):
    def pipeline() -> Pipeline:
        p = Pipeline("decon")
        op = Decontaminate(columns=("response",), eval_sets=(str(eval_sets["phrases"]),))
        p.output("o", p.from_rows(training_rows()[:10], name="src").apply(op, name="clean"))
        return p

    builder.build(pipeline())
    assert builder.status(builder.build(pipeline()))["clean"] == "cached"
    eval_sets["phrases"].write_text("purely functional\n")
    assert builder.status(builder.build(pipeline()))["clean"] == "built"


def test_missing_eval_file_fails_at_compile(tmp_path):
    p = Pipeline("bad")
    op = Decontaminate(columns=("text",), eval_sets=(str(tmp_path / "missing.jsonl"),))
    p.output("o", p.from_rows([{"text": "x"}], name="src").apply(op))
    with pytest.raises(CompileError, match="eval set file not found"):
        p.compile()


def test_the_detail_names_the_earliest_match_and_each_set_counts_every_row_it_matches(builder, tmp_path):
    (tmp_path / "a.txt").write_text("the quick brown fox jumps over\n")
    (tmp_path / "b.txt").write_text("hello there general kenobi\n")
    rows = [{"text": "Hello there, general Kenobi, said the quick brown fox jumps over."}]
    op = Decontaminate(eval_sets=(str(tmp_path / "a.txt"), str(tmp_path / "b.txt")), ngram=3)
    p = Pipeline("first")
    p.output("o", p.from_rows(rows, name="src").apply(op, name="g"))
    report = builder.build(p)
    detail = json.loads(builder.rejects("g")["detail"][0])
    assert (detail["eval_set"], detail["ngram"]) == ("b", "hello there general")  # at word 0, not the later one
    metrics = next(s.metrics for s in report.stats if s.name == "g")
    assert (metrics["contaminated_a"], metrics["contaminated_b"]) == (1, 1)


def test_an_eval_file_that_is_not_what_its_suffix_says_is_named(builder, tmp_path):
    evals = tmp_path / "evals.jsonl"
    evals.write_text("not json at all\n")
    p = Pipeline("bad")
    p.output("o", p.from_rows([{"text": "x y z"}], name="src").apply(Decontaminate(eval_sets=(str(evals),)), name="g"))
    with pytest.raises(DataflowError, match=f"eval set {evals}: not a readable .jsonl file"):
        builder.build(p)


def test_bad_input_big_empty_null_numeric_and_non_latin(builder, tmp_path):
    chinese = [json.loads(line)["text"] for line in (DATA / "debian_multilingual.jsonl").read_text().splitlines()
               if json.loads(line)["lang"] == "zh"]
    leaked = chinese[0].splitlines()[1]  # one line of a Chinese description: few space-separated words
    evals = tmp_path / "zh_eval.txt"
    evals.write_text(leaked + "\n")
    text = "\n".join(r["text"] for r in descriptions())
    big = (text + "\n") * (10_000_000 // len(text) + 1)
    rows = [{"id": "big", "text": big + leaked}, {"id": "zh", "text": chinese[0]},
            {"id": "zh-other", "text": chinese[1]},
            {"id": "empty", "text": ""}, {"id": "null", "text": None}]
    p = Pipeline("decon_bad")
    p.output("o", p.from_rows(rows, name="src").apply(Decontaminate(eval_sets=(str(evals),)), name="clean"))
    builder.build(p)
    assert builder.rejects("clean")["id"].to_list() == ["big", "zh"]
    assert builder.output("o")["id"].to_list() == ["zh-other", "empty", "null"]
