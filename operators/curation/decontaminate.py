"""Decontamination: drop rows sharing a word n-gram (default 13) with an evaluation set.

    clean = pairs.apply(Decontaminate(columns=("prompt", "response"),
                                      eval_sets=("evals/gsm8k_test.jsonl", "evals/mmlu.parquet")))

Text is compared after NFKC, lower-casing, and turning punctuation and symbols (Unicode categories P
and S) into spaces; words are the runs between whitespace. A row is contaminated when one of its
``ngram``-word windows is one of an eval item's; an eval item shorter than ``ngram`` words is matched
whole (its full word sequence must occur in the row). Rows shorter than ``ngram`` words can only be
caught by such short items. Eval files: ``.jsonl``, ``.json``, ``.parquet``, ``.csv``
(the string columns named in ``eval_columns``, or every string column) or ``.txt`` (one item per
line). Relative paths resolve against the pipeline file's directory; the files' content is part of the
node fingerprint, so editing an eval set rebuilds the node.

A contaminated row goes to rejects (reason ``contaminated``) with the eval set, the column and the
first matching n-gram in its detail; the score is the share of the row's ``ngram``-grams found in eval
sets (0 for a row caught only by a short item matched whole).
The first match is the earliest in the row (then the longer, then that of the set given first). Per
eval set, the count of rows it matches is a node metric (``contaminated_<set>``; a row that two sets
match counts in both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from dataflow.errors import DataflowError
from dataflow.filehash import file_digest
from dataflow.operator import Context, Kind, Operator, Result
from dataflow.operators.columns import column_text
from dataflow.operators.text import ngram_hashes, prepared_texts, starts_of, token_hashes

EVAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt")
_SEED = 11


def comparable(texts: pl.Series) -> pl.Series:
    """Texts as compared (see the module docstring), their words separated by single spaces."""
    return prepared_texts(texts, "word", punctuation=False)


def read_eval_texts(path: Path, columns: tuple[str, ...]) -> list[str]:
    """Every eval item's text from a file (string columns, or lines of a .txt)."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    readers = {".jsonl": pl.read_ndjson, ".json": pl.read_json, ".parquet": pl.read_parquet, ".csv": pl.read_csv}
    try:
        frame = readers[suffix](path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataflowError(f"eval set {path}: not a readable {suffix} file ({str(exc).splitlines()[0]}); fix the "
                            f"file or give it the suffix of what it holds") from exc
    chosen = list(columns) or [c for c, t in frame.schema.items() if t == pl.String()]
    missing = [c for c in chosen if c not in frame.columns]
    if missing:
        raise DataflowError(f"eval set {path}: column(s) {missing} not found; it has {frame.columns}")
    return [t for c in chosen for t in frame.get_column(c).cast(pl.String).drop_nulls().to_list()]


def ngram_index(texts: list[str], ngram: int) -> dict[int, np.ndarray]:
    """Sorted n-gram hashes of eval items by n-gram length: ``ngram`` for most items, the item's
    own word count for shorter ones (matched whole)."""
    tokens, lengths = token_hashes(comparable(pl.Series(texts, dtype=pl.String)), "word", _SEED)
    grams, counts, _ = ngram_hashes(tokens, lengths, ngram, short_as_whole=True)
    size = np.repeat(np.minimum(lengths, ngram), counts)
    return {int(n): np.unique(grams[size == n]) for n in np.unique(size)}


@dataclass(frozen=True)
class Decontaminate(Operator):
    """Rejects rows whose ``columns`` share a word ``ngram``-gram with any of ``eval_sets``."""

    columns: tuple[str, ...] = ("text",)
    eval_sets: tuple[str, ...] = ()
    ngram: int = 13
    eval_columns: tuple[str, ...] = ()
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "decontaminate"

    def with_base_dir(self, base_dir: Path) -> Decontaminate:
        return replace(self, eval_sets=tuple(str(base_dir / p) for p in self.eval_sets))

    def required_columns(self) -> dict[str, Any]:
        return dict.fromkeys(self.columns)

    def check(self) -> list[str]:
        problems = [] if self.columns else ["name at least one column to check, e.g. columns=('prompt', 'response')"]
        if not self.eval_sets:
            problems.append("give at least one eval set file in eval_sets=(...)")
        for path in self.eval_sets:
            if not Path(path).is_file():
                problems.append(f"eval set file not found: {path} (relative paths resolve against the pipeline file's directory)")
            elif Path(path).suffix.lower() not in EVAL_SUFFIXES:
                problems.append(f"eval set {path}: use one of {list(EVAL_SUFFIXES)}")
        if self.ngram < 1:
            problems.append(f"ngram must be at least 1, not {self.ngram}")
        names = [self.set_name(p) for p in self.eval_sets]
        if len(set(names)) != len(names):
            problems.append(f"eval set files need distinct names (file stems), got {names}")
        return problems

    @staticmethod
    def set_name(path: str) -> str:
        return Path(path).stem

    def fingerprint_extras(self) -> dict[str, Any]:
        return {"eval_sets": [file_digest(Path(p)) for p in self.eval_sets if Path(p).is_file()]}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return schema

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        schema = frame.collect_schema()
        table = frame.collect()
        indexes = {self.set_name(p): ngram_index(read_eval_texts(Path(p), self.eval_columns), self.ngram)
                   for p in self.eval_sets}
        hit_set = np.full(table.height, -1)
        hit_column, hit_gram = [None] * table.height, [None] * table.height
        matched, total = np.zeros(table.height), np.zeros(table.height)
        by_set = np.zeros((len(indexes), table.height), dtype=bool)  # the rows each eval set contaminates
        for column in self.columns:
            texts = comparable(table.select(column_text(column, schema[column]).alias("t")).to_series())
            found = self._scan(texts, indexes)
            matched += found["matched"]
            total += found["total"]
            by_set |= found["by_set"]
            for row in np.flatnonzero((hit_set < 0) & (found["set"] >= 0)):
                hit_set[row], hit_column[row] = found["set"][row], column
                words = [w for w in texts[int(row)].split(" ") if w]
                start, length = found["position"][row], found["length"][row]
                hit_gram[row] = " ".join(words[start:start + length])
        names = list(indexes)
        contaminated = np.flatnonzero(hit_set >= 0)
        for index, name in enumerate(names):
            ctx.count(f"contaminated_{name}", int(by_set[index].sum()))
        details = [json.dumps({"eval_set": names[hit_set[i]], "column": hit_column[i], "ngram": hit_gram[i]})
                   for i in contaminated]
        rejects = pl.DataFrame({"id": table.get_column("id").gather(contaminated),
                                "reason": ["contaminated"] * len(contaminated),
                                "score": matched[contaminated] / np.maximum(total[contaminated], 1),
                                "detail": pl.Series(details, dtype=pl.String)})
        keep = np.ones(table.height, dtype=bool)
        keep[contaminated] = False
        ctx.progress(table.height)
        return Result(table.filter(pl.Series(keep)), rejects)

    def _scan(self, texts: pl.Series, indexes: dict[str, dict[int, np.ndarray]]) -> dict[str, np.ndarray]:
        """Per row: the eval set of its first match (-1 for none; the earliest in the row, then the longer,
        then the set given first), where (word position, length), which sets match it at all, and how many of
        its ``ngram``-grams are in any eval set, of how many."""
        rows = len(texts)
        tokens, lengths = token_hashes(texts, "word", _SEED)
        doc_start = starts_of(lengths)
        result = {"set": np.full(rows, -1), "position": np.full(rows, np.iinfo(np.int64).max),
                  "length": np.zeros(rows, dtype=np.int64), "by_set": np.zeros((len(indexes), rows), dtype=bool)}
        grams, counts, _ = ngram_hashes(tokens, lengths, self.ngram)
        in_any = np.zeros(len(grams), dtype=bool)
        for index in indexes.values():
            if self.ngram in index:
                in_any |= np.isin(grams, index[self.ngram])
        result["total"] = counts.astype(np.float64)
        result["matched"] = np.bincount(np.repeat(np.arange(rows), counts)[in_any], minlength=rows).astype(np.float64)
        for n in sorted({n for index in indexes.values() for n in index}, reverse=True):
            grams, counts, starts = ngram_hashes(tokens, lengths, n)
            owner = np.repeat(np.arange(rows), counts)
            for set_index, index in enumerate(indexes.values()):
                if n not in index:
                    continue
                hits = np.flatnonzero(np.isin(grams, index[n]))
                rows_hit, at = np.unique(owner[hits], return_index=True)  # each row's earliest hit of this set and n
                result["by_set"][set_index, rows_hit] = True
                position = starts[hits[at]] - doc_start[rows_hit]
                earlier = position < result["position"][rows_hit]  # ties keep the longer n, then the earlier set
                rows_hit, position = rows_hit[earlier], position[earlier]
                result["set"][rows_hit] = set_index
                result["position"][rows_hit] = position
                result["length"][rows_hit] = n
        return result
