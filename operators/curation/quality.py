"""fastText quality classifier: a training node stores the model, a scoring node uses it.

    labeled = p.read_jsonl("judged.jsonl")               # text + label ("good" / "bad")
    model = labeled.apply(FastTextTrain(text="text", label_column="label", positive="good"), name="quality_model")
    scored = docs.apply(FastTextQuality(text="text"), model)
    kept = scored.filter(pl.col("quality_prob") >= 0.5, reason="low quality", score="quality_prob")

The model is its own node: one row holding the model file (``model``, bytes) and what it was trained
on, so it is trained once per training data and parameters, and scoring new rows reuses it (``dataflow
query "select model_bytes, train_rows from quality_model"``). Training uses one thread and a fixed
seed, so a rebuild trains the same model. ``bucket`` (hashed word n-gram rows) is 100,000, not
fastText's 2,000,000: the same accuracy at a twentieth of the size (``benchmarks/RESULTS.md``,
fastText). The bindings are the ``fasttext-numpy2`` package (the original wheels break under NumPy 2).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from dataflow.errors import DataflowError
from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.columns import column_text

MODEL_COLUMNS = {"model": pl.Binary(), "model_bytes": pl.Int64(), "train_rows": pl.Int64(),
                 "train_positive": pl.Int64()}


def fasttext_line(text: str | None) -> str:
    """A text as fastText reads it: one line, lower case, punctuation split from words."""
    text = (text or "").lower().replace("\n", " ")
    return re.sub(r"\s+", " ", re.sub(r"([^\w\s])", r" \1 ", text)).strip()


# Training runs in a fresh process whose allocator maps every large block afresh: with one thread,
# fastText initializes only the first tenth of its input matrix and the fasttext-numpy2 build does
# not zero the rest, so on reused heap memory training reads garbage (NaN, or a different model).
# Fresh mapped pages are zeros, as upstream fastText's vectors are.
TRAIN = """import json, sys, fasttext
fasttext.train_supervised(sys.argv[1], thread=1, verbose=0, minCount=1, **json.loads(sys.argv[3])).save_model(sys.argv[2])
"""
FRESH_PAGES = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def train_classifier(texts: list[str | None], positive: list[bool], path: Path, node: str, **options: Any) -> None:
    """Train a two-class fastText model on texts (True = positive) and save it at ``path``."""
    train_file = path.with_suffix(".train.txt")
    with open(train_file, "w", encoding="utf-8") as out:
        for text, good in zip(texts, positive):
            out.write(f"__label__{'positive' if good else 'negative'} {fasttext_line(text)}\n")
    done = subprocess.run([sys.executable, "-c", TRAIN, str(train_file), str(path), json.dumps(options)],
                          env={**os.environ, **FRESH_PAGES}, capture_output=True, text=True)
    train_file.unlink()
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise DataflowError(f"node '{node}': fastText training failed: {last}")


def positive_probability(model: Any, texts: list[str | None]) -> list[float]:
    """The model's probability of the positive label for each text."""
    if not texts:
        return []
    labels, probabilities = model.predict([fasttext_line(t) for t in texts], k=2)
    return [float(dict(zip(ls, ps)).get("__label__positive", 0.0)) for ls, ps in zip(labels, probabilities)]


@dataclass(frozen=True)
class FastTextTrain(Operator):
    """Trains a classifier on labeled rows (``label_column`` equal to ``positive`` = good); its one
    output row holds the model (``model``), its size and the training counts."""

    text: str = "text"
    label_column: str = "label"
    positive: Any = "good"
    epoch: int = 25
    word_ngrams: int = 2
    learning_rate: float = 0.5
    dim: int = 64
    bucket: int = 100_000
    seed: int = 0
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "fasttext_model"

    def required_columns(self) -> dict[str, Any]:
        return {self.text: None, self.label_column: None}

    def check(self) -> list[str]:
        problems = []
        if self.epoch < 1 or self.dim < 1 or self.word_ngrams < 1 or self.bucket < 1:
            problems.append("epoch, dim, word_ngrams and bucket must be at least 1")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be positive, not {self.learning_rate}")
        return problems

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({"id": pl.String(), **MODEL_COLUMNS})

    def apply(self, labeled: pl.LazyFrame, ctx: Context) -> Result:
        schema = labeled.collect_schema()
        rows = labeled.select(column_text(self.text, schema[self.text]).alias("t"),
                              (pl.col(self.label_column) == self.positive).fill_null(False).alias("good")).collect()
        good = int(rows.get_column("good").sum())
        if good == 0 or good == rows.height:
            raise DataflowError(f"node '{ctx.node}': the training rows need both classes, but {good} of "
                                f"{rows.height} have {self.label_column} == {self.positive!r}; label some rows "
                                f"each way (or fix positive=)")
        path = ctx.scratch() / "quality.bin"
        train_classifier(rows.get_column("t").to_list(), rows.get_column("good").to_list(), path, ctx.node,
                         epoch=self.epoch, wordNgrams=self.word_ngrams, lr=self.learning_rate, dim=self.dim,
                         bucket=self.bucket, seed=self.seed)
        model = path.read_bytes()
        ctx.record("train_rows", rows.height)
        ctx.record("train_positive", good)
        ctx.record("model_bytes", len(model))
        return Result(pl.DataFrame({"id": [ctx.node], "model": [model], "model_bytes": [len(model)],
                                    "train_rows": [rows.height], "train_positive": [good]},
                                   schema={"id": pl.String(), **MODEL_COLUMNS}))


@dataclass(frozen=True)
class FastTextQuality(Operator):
    """Writes ``output``, the probability of good, for every row of the first input, by the model
    of the second input (a FastTextTrain node)."""

    text: str = "text"
    output: str = "quality_prob"
    inputs_count = 2
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "fasttext_quality"

    def required_columns(self) -> dict[str, Any]:
        return {self.text: None}

    def output_schema(self, scored: pl.Schema, model: pl.Schema) -> pl.Schema:
        if model.get("model") != pl.Binary():
            raise KeyError(f"the second input is not a trained model (no binary 'model' column; it has "
                           f"{list(model)}): give it a node made by FastTextTrain")
        if self.output in scored:
            raise ValueError(f"the input already has a '{self.output}' column: choose another output=")
        return pl.Schema({**scored, self.output: pl.Float64()})

    def apply(self, scored: pl.LazyFrame, model: pl.LazyFrame, ctx: Context) -> Result:
        import fasttext

        found = model.select("model").collect()
        if found.height != 1:
            raise DataflowError(f"node '{ctx.node}': the model input has {found.height} rows, not one; give it the "
                                f"node made by FastTextTrain itself")
        path = ctx.scratch() / "quality.bin"
        path.write_bytes(found.item())
        classifier = fasttext.load_model(str(path))
        table = scored.collect()
        texts = table.select(column_text(self.text, table.schema[self.text]).alias("t")).to_series().to_list()
        ctx.progress(table.height)
        return Result(table.with_columns(pl.Series(self.output, positive_probability(classifier, texts),
                                                   dtype=pl.Float64)))
