"""Language identification with a model that ships in a package (py3langid, 97 languages).

The model (``py3langid/data/model.npz.xz``, installed with the package) is read from disk; nothing
is downloaded. The ``language`` column holds an ISO 639-1 code, ``language_confidence`` the
normalized probability of that label. A null, empty or whitespace-only text has no language:
label ``und`` (undetermined) with confidence 0.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import polars as pl

from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.text import column_text

UNDETERMINED = "und"


@cache
def language_identifier() -> Any:
    """The packaged py3langid model with probabilities normalized over its languages."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(texts: list[str | None]) -> tuple[list[str], list[float]]:
    """(labels, confidences) for texts; undetermined for null or blank ones."""
    identifier = language_identifier()
    labels, confidences = [], []
    for text in texts:
        if text is None or not text.strip():
            labels.append(UNDETERMINED)
            confidences.append(0.0)
            continue
        label, confidence = identifier.classify(text)
        labels.append(label)
        confidences.append(float(confidence))
    return labels, confidences


@dataclass(frozen=True)
class LanguageId(Operator):
    """Writes ``language`` and ``language_confidence`` for a text or conversation column.

    ``roles`` restricts a conversation to some turns (e.g. ``("user",)``). A Filter decides, e.g.
    ``node.filter((pl.col("language") == "en") & (pl.col("language_confidence") > 0.6), ...)``.
    """

    column: str = "text"
    roles: tuple[str, ...] = ()
    label_column: str = "language"
    confidence_column: str = "language_confidence"
    kind = Kind.BATCH

    def required_columns(self) -> dict[str, Any]:
        return {self.column: None}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, self.label_column: pl.String(), self.confidence_column: pl.Float64()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        text = column_text(self.column, frame.collect_schema()[self.column], self.roles)
        schema = self.output_schema(frame.collect_schema())

        def label(batch: pl.DataFrame) -> pl.DataFrame:
            labels, confidences = identify(batch.select(text.alias("t")).to_series().to_list())
            ctx.progress(batch.height)
            return batch.with_columns(pl.Series(self.label_column, labels, dtype=pl.String),
                                      pl.Series(self.confidence_column, confidences, dtype=pl.Float64))

        return Result(frame.map_batches(label, schema=schema, streamable=True))
