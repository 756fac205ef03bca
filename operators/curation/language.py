"""Language identification with a model that ships in a package (py3langid), read from disk.

Labels are the model's: an ISO 639-1 code where the language has one, else its ISO 639-3 code (26
of the model's 140 labels, e.g. ``yue`` Cantonese, ``wuu`` Wu Chinese, ``fuv`` Nigerian Fulfulde),
and ``zxx`` for text without linguistic content. ``language_macro`` maps each label to its ISO
639-1 macrolanguage where there is one (``yue``/``wuu`` -> ``zh``, ``arz``/``ary`` -> ``ar``, see
``MACROLANGUAGES``) and keeps it otherwise, so ``language_macro == "zh"`` keeps all Chinese text.
``language_confidence`` is the normalized probability of the label; ``language_reliable`` is false
for texts of fewer than ``min_chars`` non-space characters, on which such a model is often wrong.
A null, empty or whitespace-only text has no language: ``und`` (undetermined), confidence 0.0.
The model file's content is part of the node fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

from dataflow.filehash import file_digest
from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.columns import column_text

UNDETERMINED = "und"
# The model's ISO 639-3 labels whose macrolanguage has an ISO 639-1 code (or that have one themselves).
MACROLANGUAGES = {"ary": "ar", "arz": "ar", "fuv": "ff", "gug": "gn", "kik": "ki", "ltg": "lv", "sdh": "ku",
                  "uzs": "uz", "wuu": "zh", "yue": "zh"}


@cache
def language_identifier() -> Any:
    """The packaged py3langid model with probabilities normalized over its languages."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def model_file() -> Path:
    import py3langid.langid

    return Path(py3langid.langid.__file__).parent / py3langid.langid.MODEL_FILE


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
    """Writes ``language``, ``language_macro``, ``language_confidence`` and ``language_reliable``
    for a text or conversation column (see the module docstring).

    ``roles`` restricts a conversation to some turns (e.g. ``("user",)``). A Filter decides, e.g.
    ``node.filter((pl.col("language_macro") == "en") & pl.col("language_reliable"), ...)``.
    """

    column: str = "text"
    roles: tuple[str, ...] = ()
    label_column: str = "language"
    confidence_column: str = "language_confidence"
    min_chars: int = 20
    kind = Kind.BATCH

    def required_columns(self) -> dict[str, Any]:
        return {self.column: None}

    def check(self) -> list[str]:
        return [] if self.min_chars >= 0 else [f"min_chars must be >= 0, not {self.min_chars}"]

    def fingerprint_extras(self) -> dict[str, Any]:
        return {"language model": file_digest(model_file())}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, self.label_column: pl.String(), f"{self.label_column}_macro": pl.String(),
                          self.confidence_column: pl.Float64(), f"{self.label_column}_reliable": pl.Boolean()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        text = column_text(self.column, frame.collect_schema()[self.column], self.roles)
        schema = self.output_schema(frame.collect_schema())
        label = self.label_column

        def identified(batch: pl.DataFrame) -> pl.DataFrame:
            texts = batch.select(text.alias("t")).to_series()
            labels, confidences = identify(texts.to_list())
            visible = texts.fill_null("").str.count_matches(r"\S")
            ctx.progress(batch.height)
            return batch.with_columns(
                pl.Series(label, labels, dtype=pl.String),
                pl.Series(f"{label}_macro", labels, dtype=pl.String).replace(MACROLANGUAGES),
                pl.Series(self.confidence_column, confidences, dtype=pl.Float64),
                (visible >= self.min_chars).alias(f"{label}_reliable"))

        return Result(frame.map_batches(identified, schema=schema, streamable=True))
