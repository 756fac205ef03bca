"""Heuristic text measures (Gopher/C4 style). Each writes measured columns; a Filter decides.

    measured = docs.apply(LengthMeasures("text")).apply(RepetitionMeasures("text"))
    kept = measured.filter(pl.col("dup_line_frac") <= 0.3, reason="repeated lines", score="dup_line_frac")

The text of a column is read as it is for strings, as ``role: content`` lines for conversations
(``roles`` picks turns, e.g. ``("assistant",)``), and cast to text for other types. A null text
gives null measures (a Filter then rejects the row, since null is not true); an empty text gives
zero counts and null fractions (nothing to divide).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.columns import column_text
from dataflow.operators.text import ngram_hashes

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
REFUSAL_PHRASES = (
    "as an ai language model", "as an ai assistant", "as a language model", "i'm sorry, but i can't",
    "i'm sorry, but i cannot", "i am sorry, but i cannot", "i cannot help with", "i can't help with",
    "i cannot assist with", "i can't assist with", "i'm unable to", "i am unable to",
    "i cannot provide", "i can't provide", "i'm not able to", "it is not appropriate",
    "it's not appropriate", "i apologize, but", "openai's use case policy", "against my programming",
)


def _fraction(part: pl.Expr, whole: pl.Expr) -> pl.Expr:
    return pl.when(whole > 0).then(part.cast(pl.Float64) / whole).otherwise(None)


@dataclass(frozen=True)
class _Measures(Operator):
    """Shared shape: read ``column`` (``roles`` for conversations), add measured columns."""

    column: str = "text"
    roles: tuple[str, ...] = ()
    kind = Kind.ROW

    def required_columns(self) -> dict[str, Any]:
        return {self.column: None}

    def text(self, frame: pl.LazyFrame) -> pl.Expr:
        return column_text(self.column, frame.collect_schema()[self.column], self.roles)

    def measures(self, text: pl.Expr) -> dict[str, pl.Expr]:
        raise NotImplementedError

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        return Result(frame.with_columns(**self.measures(self.text(frame))))


@dataclass(frozen=True)
class LengthMeasures(_Measures):
    """``n_chars``, ``n_words`` (whitespace-separated) and, with ``tokenizer`` (a tokenizer.json file
    or a directory holding one), ``n_tokens`` counted by that tokenizer."""

    tokenizer: str | None = None

    def check(self) -> list[str]:
        if self.tokenizer and not _tokenizer_file(self.tokenizer).exists():
            return [f"tokenizer {self.tokenizer!r} is not a tokenizer.json file nor a directory holding "
                    f"one: give the path of your model's tokenizer.json"]
        return []

    def fingerprint_extras(self) -> dict[str, Any]:
        if not self.tokenizer:
            return {}
        from dataflow.filehash import file_digest

        return {"tokenizer": file_digest(_tokenizer_file(self.tokenizer))}

    def measures(self, text: pl.Expr) -> dict[str, pl.Expr]:
        return {"n_chars": text.str.len_chars(),
                "n_words": text.str.extract_all(r"\S+").list.len()}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        extra = {"n_chars": pl.UInt32(), "n_words": pl.UInt32()}
        if self.tokenizer:
            extra["n_tokens"] = pl.Int64()
        return pl.Schema({**schema, **extra})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        measured = frame.with_columns(**self.measures(self.text(frame)))
        if not self.tokenizer:
            return Result(measured)
        text = self.text(frame)
        schema = self.output_schema(frame.collect_schema())
        path = _tokenizer_file(self.tokenizer)

        def count(batch: pl.DataFrame) -> pl.DataFrame:
            from tokenizers import Tokenizer

            tokenizer = _load_tokenizer(str(path), Tokenizer)
            values = batch.select(text.alias("t")).to_series()
            present = values.drop_nulls().to_list()
            encoded = iter(tokenizer.encode_batch(present, add_special_tokens=False)) if present else iter(())
            counts = [None if v is None else len(next(encoded).ids) for v in values.to_list()]
            ctx.progress(batch.height)
            return batch.with_columns(n_tokens=pl.Series(counts, dtype=pl.Int64))

        return Result(measured.map_batches(count, schema=schema, streamable=True))


def _tokenizer_file(path: str) -> Path:
    candidate = Path(path)
    return candidate / "tokenizer.json" if candidate.is_dir() else candidate


_TOKENIZERS: dict[str, Any] = {}


def _load_tokenizer(path: str, tokenizer_class: Any) -> Any:
    if path not in _TOKENIZERS:
        tokenizer = tokenizer_class.from_file(path)
        tokenizer.no_truncation()
        tokenizer.no_padding()
        _TOKENIZERS[path] = tokenizer
    return _TOKENIZERS[path]


@dataclass(frozen=True)
class RepetitionMeasures(_Measures):
    """Gopher repetition measures.

    Lines end at ``\n``, ``\r\n`` or ``\r``; a line of whitespace only is blank; paragraphs are
    runs of non-blank lines; both are compared without their surrounding whitespace. Words are
    the runs between whitespace.

    ``dup_line_frac`` / ``dup_para_frac``: share of non-blank lines / paragraphs that repeat an
    earlier one. ``top_{n}gram_frac`` for n in ``top_ngrams``: characters of the words covered by
    the occurrences of the most frequent word n-gram (of those as frequent, the one that occurs
    first), over the characters of all words. ``dup_{n}gram_frac`` for n in ``dup_ngrams``:
    characters of the words inside any word n-gram occurring more than once, over the characters
    of all words. A text with fewer than n words has 0 for the n-gram fractions.
    """

    top_ngrams: tuple[int, ...] = (2, 3, 4)
    dup_ngrams: tuple[int, ...] = (5, 10)
    kind = Kind.BATCH

    def check(self) -> list[str]:
        bad = [n for n in (*self.top_ngrams, *self.dup_ngrams) if n < 1]
        return [f"n-gram sizes must be at least 1, not {bad}"] if bad else []

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        names = ["dup_line_frac", "dup_para_frac", *[f"top_{n}gram_frac" for n in self.top_ngrams],
                 *[f"dup_{n}gram_frac" for n in self.dup_ngrams]]
        return pl.Schema({**schema, **dict.fromkeys(names, pl.Float64())})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        text = self.text(frame)
        unix = text.str.replace_all(r"\r\n?", "\n")
        lines = unix.str.extract_all(r"[^\n]*\S[^\n]*").list.eval(pl.element().str.strip_chars())
        paragraphs = unix.str.extract_all(r"[^\n]*\S[^\n]*(?:\n[^\n]*\S[^\n]*)*").list.eval(
            pl.element().str.strip_chars())
        dup = {"dup_line_frac": _fraction(lines.list.len() - lines.list.n_unique(), lines.list.len()),
               "dup_para_frac": _fraction(paragraphs.list.len() - paragraphs.list.n_unique(), paragraphs.list.len())}
        schema = self.output_schema(frame.collect_schema())

        def ngram_measures(batch: pl.DataFrame) -> pl.DataFrame:
            values = batch.select(text.alias("t")).to_series()
            out = batch.with_columns(**dup, **_ngram_fractions(values, self.top_ngrams, self.dup_ngrams)).select(
                list(schema))
            ctx.progress(batch.height)
            return out

        return Result(frame.map_batches(ngram_measures, schema=schema, streamable=True))


def _ngram_fractions(texts: pl.Series, top: tuple[int, ...], dup: tuple[int, ...]) -> dict[str, pl.Series]:
    """Character fractions of the top and of repeated word n-grams, vectorized over a batch."""
    missing = texts.is_null().to_numpy()
    words, lengths = _words(texts, r"\S+")
    doc = words.get_column("doc").to_numpy()
    hashes = words.get_column("word").hash(seed=7).to_numpy()
    chars = words.get_column("word").str.len_chars().to_numpy().astype(np.int64)
    total_chars = np.bincount(doc, weights=chars, minlength=len(texts))
    cumulative = np.concatenate(([0], np.cumsum(chars)))
    result = {}
    for n in sorted({*top, *dup}):
        grams, counts, position = ngram_hashes(hashes, lengths, n)
        owner = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
        gram_chars = cumulative[position + n] - cumulative[position]
        table = pl.DataFrame({"doc": owner, "gram": grams, "chars": gram_chars, "position": position})
        occurrences = table.with_columns(times=pl.len().over("doc", "gram"),
                                         first=pl.col("position").min().over("doc", "gram"))
        if n in top:  # the most frequent n-gram (ties: the first to occur), the words its occurrences cover
            best_gram = (occurrences.sort(["doc", "times", "first"], descending=[False, True, False])
                         .group_by("doc", maintain_order=True).agg(pl.col("gram").first()))
            positions = occurrences.join(best_gram, on=["doc", "gram"]).get_column("position").to_numpy()
            covered = np.bincount(doc, weights=chars * _covered_words(positions, n, len(chars)),
                                  minlength=len(texts))
            result[f"top_{n}gram_frac"] = _ratio(covered, total_chars, lengths >= n, missing)
        if n in dup:
            repeated = occurrences.filter(pl.col("times") > 1).get_column("position").to_numpy()
            covered = np.bincount(doc, weights=chars * _covered_words(repeated, n, len(chars)),
                                  minlength=len(texts))
            result[f"dup_{n}gram_frac"] = _ratio(covered, total_chars, lengths > 0, missing)
    return result


def _words(texts: pl.Series, pattern: str) -> tuple[pl.DataFrame, np.ndarray]:
    """Each text's words (the matches of ``pattern``, in order) as rows (doc, word), and how many each has."""
    words = pl.DataFrame({"doc": pl.int_range(len(texts), eager=True, dtype=pl.Int64),
                          "word": texts.fill_null("").str.extract_all(pattern)}).explode("word").drop_nulls("word")
    return words, np.bincount(words.get_column("doc").to_numpy(), minlength=len(texts)).astype(np.int64)


def _covered_words(positions: np.ndarray, n: int, words: int) -> np.ndarray:
    """Which words lie inside at least one n-gram starting at ``positions``."""
    depth = np.zeros(words + 1, dtype=np.int64)
    np.add.at(depth, positions, 1)
    np.add.at(depth, positions + n, -1)
    return np.cumsum(depth)[:-1] > 0


def _ratio(part: np.ndarray, whole: np.ndarray, defined: np.ndarray, missing: np.ndarray) -> pl.Series:
    value = np.where(whole > 0, part / np.maximum(whole, 1), 0.0)
    return pl.Series(np.where(missing | (whole == 0), np.nan, np.where(defined, value, 0.0))).fill_nan(None)


@dataclass(frozen=True)
class CharacterMeasures(_Measures):
    """``symbol_word_ratio`` (count of '#', '...' and '…' per word, Gopher), ``alpha_word_frac``
    (words holding a letter), ``non_alpha_char_frac`` (non-space characters that are not letters)."""

    def measures(self, text: pl.Expr) -> dict[str, pl.Expr]:
        words = text.str.extract_all(r"\S+").list.len()
        symbols = text.str.count_matches(r"#|\.\.\.|…")
        alpha_words = text.str.extract_all(r"\S*\p{L}\S*").list.len()
        visible = text.str.count_matches(r"\S")
        letters = text.str.count_matches(r"\p{L}")
        return {"symbol_word_ratio": _fraction(symbols, words),
                "alpha_word_frac": _fraction(alpha_words, words),
                "non_alpha_char_frac": _fraction(visible - letters, visible)}


@dataclass(frozen=True)
class StopWordMeasures(_Measures):
    """``stop_words``: how many distinct words of ``words`` the text contains, case-insensitive (Gopher
    keeps documents with at least 2 of its 8 English stop words)."""

    words: tuple[str, ...] = GOPHER_STOP_WORDS

    def measures(self, text: pl.Expr) -> dict[str, pl.Expr]:
        tokens = text.str.to_lowercase().str.extract_all(r"[\p{L}']+")
        words = sorted({w.lower() for w in self.words})
        found = tokens.list.eval(pl.element().filter(pl.element().is_in(words))).list.n_unique()
        return {"stop_words": found.cast(pl.Int64)}


@dataclass(frozen=True)
class RefusalMeasures(_Measures):
    """``refusal_phrases``: how many of ``phrases`` (case-insensitive, ’ read as ') occur in the text;
    for a conversation, in its assistant turns (``roles``). ``refusal_match`` names the match that
    ends first in the text (lower case)."""

    roles: tuple[str, ...] = ("assistant",)
    phrases: tuple[str, ...] = REFUSAL_PHRASES

    def check(self) -> list[str]:
        return [] if self.phrases else ["give at least one phrase to look for"]

    def measures(self, text: pl.Expr) -> dict[str, pl.Expr]:
        lowered = text.str.to_lowercase().str.replace_all("’", "'", literal=True)
        phrases = [p.lower().replace("’", "'") for p in self.phrases]
        found = lowered.str.extract_many(phrases, overlapping=True)
        return {"refusal_phrases": found.list.n_unique().cast(pl.Int64),
                "refusal_match": found.list.first()}



@dataclass(frozen=True)
class EchoMeasures(Operator):
    """``echo_share``: how much of a response repeats its prompt (small models often answer with the
    instruction), the share of the response's word ``n``-grams that occur in the prompt. Words are runs
    of word characters (``\\w``) in lower case; a text of fewer than ``n`` words is one n-gram of all its
    words. Each column is a string or a conversation, read as its ``prompt_roles`` / ``response_roles``
    turns (a ``messages`` column can be both). Null when either text is null or the response has no
    word."""

    prompt: str = "instruction"
    response: str = "response"
    n: int = 3
    prompt_roles: tuple[str, ...] = ("system", "user")
    response_roles: tuple[str, ...] = ("assistant",)
    kind = Kind.BATCH

    def check(self) -> list[str]:
        return [] if isinstance(self.n, int) and self.n >= 1 else [f"n must be an int of at least 1, not {self.n!r}"]

    def required_columns(self) -> dict[str, Any]:
        return {self.prompt: None, self.response: None}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, "echo_share": pl.Float64()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        schema = frame.collect_schema()
        texts = [column_text(self.prompt, schema[self.prompt], self.prompt_roles).alias("p"),
                 column_text(self.response, schema[self.response], self.response_roles).alias("r")]

        def measure(batch: pl.DataFrame) -> pl.DataFrame:
            both = batch.select(texts)
            ctx.progress(batch.height)
            return batch.with_columns(echo_share=echo_shares(both["p"], both["r"], self.n))

        return Result(frame.map_batches(measure, schema=self.output_schema(schema), streamable=True))


def echo_shares(prompts: pl.Series, responses: pl.Series, n: int) -> pl.Series:
    """Per row, the share of the response's word n-grams found among the prompt's (``EchoMeasures``)."""
    prompt_grams, _ = _word_grams(prompts, n)
    response_grams, counts = _word_grams(responses, n)
    echoed = response_grams.join(prompt_grams.unique(), on=["doc", "gram"], how="semi")
    found = np.bincount(echoed["doc"].to_numpy(), minlength=len(responses))
    missing = (prompts.is_null() | responses.is_null()).to_numpy() | (counts == 0)
    return pl.Series("echo_share", np.where(missing, np.nan, found / np.maximum(counts, 1))).fill_nan(None)


def _word_grams(texts: pl.Series, n: int) -> tuple[pl.DataFrame, np.ndarray]:
    """(row, n-gram hash) of each text's word n-grams, and how many each row has."""
    words, lengths = _words(texts.str.to_lowercase(), r"\w+")
    grams, counts, _ = ngram_hashes(words["word"].hash(seed=7).to_numpy(), lengths, n, short_as_whole=True)
    return pl.DataFrame({"doc": np.repeat(np.arange(len(texts), dtype=np.int64), counts), "gram": grams}), counts
