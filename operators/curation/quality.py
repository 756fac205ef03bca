"""fastText quality classifier: trained from labeled rows, stored with the node, scores rows.

    labeled = p.read_jsonl("judged.jsonl")               # text + label ("good" / "bad")
    scored = docs.apply(FastTextQuality(text="text", label_column="label", positive="good"), labeled)
    kept = scored.filter(pl.col("quality_prob") >= 0.5, reason="low quality", score="quality_prob")

The first input is scored, the second trains. The model is saved as ``quality.bin`` in the
node's store entry (``dataflow query "select * from nodes"`` shows where); training uses one
thread and a fixed seed, so a rebuild trains the same model. The bindings are the
``fasttext-numpy2`` package (the original ``fasttext`` wheels break under NumPy 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from dataflow.errors import DataflowError
from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.text import column_text

MODEL_FILE = "quality.bin"


def fasttext_line(text: str | None) -> str:
    """A text as fastText reads it: one line, lower case, punctuation split from words."""
    text = (text or "").lower().replace("\n", " ")
    return re.sub(r"\s+", " ", re.sub(r"([^\w\s])", r" \1 ", text)).strip()


def train_classifier(texts: list[str | None], positive: list[bool], path: Path, epoch: int, word_ngrams: int,
                     learning_rate: float, dim: int, seed: int) -> Any:
    """Train a two-class fastText model on texts (True = positive) and save it at ``path``."""
    import fasttext

    train_file = path.with_suffix(".train.txt")
    with open(train_file, "w", encoding="utf-8") as out:
        for text, good in zip(texts, positive):
            out.write(f"__label__{'positive' if good else 'negative'} {fasttext_line(text)}\n")
    model = fasttext.train_supervised(str(train_file), epoch=epoch, wordNgrams=word_ngrams, lr=learning_rate,
                                      dim=dim, thread=1, seed=seed, verbose=0, minCount=1)
    train_file.unlink()
    model.save_model(str(path))
    return model


def positive_probability(model: Any, texts: list[str | None]) -> list[float]:
    """The model's probability of the positive label for each text."""
    labels, probabilities = model.predict([fasttext_line(t) for t in texts], k=2)
    return [float(dict(zip(ls, ps)).get("__label__positive", 0.0)) for ls, ps in zip(labels, probabilities)]


@dataclass(frozen=True)
class FastTextQuality(Operator):
    """Trains on the second input (``label_column`` equal to ``positive`` = good) and writes
    ``output`` (probability of good) for every row of the first input."""

    text: str = "text"
    label_column: str = "label"
    positive: Any = "good"
    output: str = "quality_prob"
    epoch: int = 25
    word_ngrams: int = 2
    learning_rate: float = 0.5
    dim: int = 64
    seed: int = 0
    inputs_count = 2
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "fasttext_quality"

    def required_columns(self) -> dict[str, Any]:
        return {self.text: None}

    def check(self) -> list[str]:
        problems = []
        if self.epoch < 1 or self.dim < 1 or self.word_ngrams < 1:
            problems.append("epoch, dim and word_ngrams must be at least 1")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be positive, not {self.learning_rate}")
        return problems

    def output_schema(self, scored: pl.Schema, training: pl.Schema) -> pl.Schema:
        missing = [c for c in (self.text, self.label_column) if c not in training]
        if missing:
            raise KeyError(f"the training input (second) lacks column(s) {missing}; it has {list(training)}")
        if self.output in scored:
            raise ValueError(f"the input already has a '{self.output}' column: choose another output=")
        return pl.Schema({**scored, self.output: pl.Float64()})

    def apply(self, scored: pl.LazyFrame, training: pl.LazyFrame, ctx: Context) -> Result:
        train_schema = training.collect_schema()
        rows = training.select(column_text(self.text, train_schema[self.text]).alias("t"),
                               (pl.col(self.label_column) == self.positive).fill_null(False).alias("good")).collect()
        good = int(rows.get_column("good").sum())
        if good == 0 or good == rows.height:
            raise DataflowError(f"node '{ctx.node}': the training rows need both classes, but {good} of "
                                f"{rows.height} have {self.label_column} == {self.positive!r}; label some rows "
                                f"each way (or fix positive=)")
        model = train_classifier(rows.get_column("t").to_list(), rows.get_column("good").to_list(),
                                 Path(ctx.workdir) / MODEL_FILE, self.epoch, self.word_ngrams,
                                 self.learning_rate, self.dim, self.seed)
        ctx.record("train_rows", rows.height)
        ctx.record("train_positive", good)
        schema = scored.collect_schema()
        text = column_text(self.text, schema[self.text])

        def score(batch: pl.DataFrame) -> pl.DataFrame:
            probabilities = positive_probability(model, batch.select(text.alias("t")).to_series().to_list())
            ctx.progress(batch.height)
            return batch.with_columns(pl.Series(self.output, probabilities, dtype=pl.Float64))

        table = scored.collect()
        return Result(score(table) if table.height else table.with_columns(pl.lit(None, pl.Float64).alias(self.output)))
