"""fastText quality classifier trained from labeled real text, stored as its own node."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from dataflow import DataflowError, Pipeline
from dataflow.operators import FastTextQuality, FastTextTrain

DATA = Path(__file__).parent / "data" / "curation"


def topics() -> list[dict]:
    rows = [json.loads(line) for line in (DATA / "debian_topics.jsonl").read_text().splitlines()]
    return [{"id": r["package"], "text": r["text"], "source": r["source"]} for r in rows]


def split() -> tuple[list[dict], list[dict]]:
    rows = topics()
    train = [r for i, r in enumerate(rows) if i % 4]
    held_out = [r for i, r in enumerate(rows) if not i % 4]
    return train, held_out


def pipeline(train: list[dict], held_out: list[dict]) -> Pipeline:
    p = Pipeline("quality")
    labeled = p.from_rows(train, name="labeled")
    docs = p.from_rows([{"id": r["id"], "text": r["text"]} for r in held_out], name="docs")
    model = labeled.apply(FastTextTrain(text="text", label_column="source", positive="python"), name="model")
    scored = docs.apply(FastTextQuality(text="text"), model, name="scored")
    p.output("o", scored.filter(pl.col("quality_prob") >= 0.5, reason="low quality", score="quality_prob",
                                name="good"))
    return p


def test_trains_stores_the_model_as_a_node_and_scores_held_out_rows(builder, tmp_path):
    train, held_out = split()
    report = builder.build(pipeline(train, held_out))
    scored = builder.sql("select id, quality_prob from scored").to_dicts()
    truth = {r["id"]: r["source"] for r in held_out}
    right = sum((s["quality_prob"] >= 0.5) == (truth[s["id"]] == "python") for s in scored)
    assert right >= 0.9 * len(scored)
    assert len(builder.output("o")) + len(builder.rejects("good")) == len(held_out)
    stats = next(s for s in report.stats if s.name == "model")
    assert stats.metrics.pop("model_bytes") < 50e6  # fastText's default bucket count made 518 MB
    assert stats.metrics == {"train_rows": len(train), "train_positive": sum(r["source"] == "python" for r in train)}
    stored = builder.sql("select model, model_bytes from model").row(0)
    assert len(stored[0]) == stored[1]
    import fasttext

    (tmp_path / "model.bin").write_bytes(stored[0])
    model = fasttext.load_model(str(tmp_path / "model.bin"))
    assert set(model.get_labels()) == {"__label__positive", "__label__negative"}


def test_new_rows_to_score_reuse_the_trained_model(builder):
    train, held_out = split()
    builder.build(pipeline(train, held_out))
    report = builder.build(pipeline(train, held_out[:-3]))
    assert builder.status(report)["model"] == "cached" and builder.status(report)["scored"] == "built"
    assert builder.sql("select count(*) as n from scored")["n"][0] == len(held_out) - 3


def test_same_inputs_train_the_same_model(builder, tmp_path):
    train, held_out = split()
    builder.build(pipeline(train, held_out))
    first = builder.sql("select id, quality_prob from scored order by id")
    builder.out = tmp_path / "again"
    builder.build(pipeline(train, held_out))
    assert builder.sql("select id, quality_prob from scored order by id").equals(first)


def test_one_class_training_data_is_a_clear_error(builder):
    train, held_out = split()
    only_python = [r for r in train if r["source"] == "python"]
    with pytest.raises(DataflowError, match="need both classes"):
        builder.build(pipeline(only_python, held_out))
