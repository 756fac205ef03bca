"""Curation operators against short, obviously correct readings of their own documented definitions,
on texts built from real Debian descriptions (7 languages) mixed with short, empty, blank, CRLF,
full-width and null rows, in random order and random batch splits (hypothesis)."""

from __future__ import annotations

import json
import random
import re
import tempfile
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

from dataflow.operators import (CharacterMeasures, Decontaminate, EchoMeasures, ExactDedup, MinHashDedup,
                                RepetitionMeasures)
from dataflow.operators.curation.heuristics import _ngram_fractions

from conftest import run, shuffled

DATA = Path(__file__).parent / "data" / "curation"
# Unicode White_Space: what the engine's regexes (\s) and strip treat as whitespace
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
SPLIT = re.compile(f"[{re.escape(WHITE_SPACE)}]+")


def real_lines() -> list[str]:
    lines = []
    for name in ("debian_multilingual.jsonl", "debian_en.jsonl"):
        for record in (json.loads(line) for line in (DATA / name).read_text().splitlines()):
            lines += [line.strip() for line in record["text"].splitlines() if line.strip()]
    return lines


LINES = real_lines()
WORDS = sorted({w for line in LINES for w in line.split()})
SEPARATORS = [" ", " ", " ", "  ", "\n", "\r\n", "\t", " \n \n", "\r\n\r\n", "\n\n", "\u3000", "\xa0"]


@st.composite
def text(draw) -> str | None:
    """A real line, a few real words, a repeated chunk, a full-width copy, blank or null."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return None
    if kind == 1:
        return draw(st.sampled_from(["", " ", "\n", " \r\n\t ", "\u3000"]))
    words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=30))
    if kind in (2, 3):  # short: fewer words than most n-grams
        words = words[:draw(st.integers(1, 4))]
    if kind == 4:  # repetition: a chunk several times
        words = words[:draw(st.integers(1, 6))] * draw(st.integers(2, 4))
    if kind == 5:
        words = draw(st.sampled_from(LINES)).split(" ")
    separators = [draw(st.sampled_from(SEPARATORS)) for _ in words]
    joined = "".join(w + s for w, s in zip(words, separators)).strip(" ")
    if kind == 6:  # full-width letters and digits, as some sources write them
        joined = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" and c.isalnum() else c for c in joined)
    return joined


texts = st.lists(text(), min_size=1, max_size=25)


def frame(values: list[str | None]) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"r{i:03d}" for i in range(len(values))], "text": values},
                        schema={"id": pl.String, "text": pl.String})


# -- references ------------------------------------------------------------------------------
def words(value: str) -> list[str]:
    return [w for w in SPLIT.split(value) if w]


def comparable_words(value: str | None, punctuation: bool = False) -> list[str]:
    """NFKC, lower case, punctuation and symbols as spaces (unless kept), split on whitespace."""
    value = unicodedata.normalize("NFKC", value or "").lower()
    if not punctuation:
        value = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in value)
    return words(value)


def grams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def ref_lines(value: str) -> list[str]:
    lines = (line.strip(WHITE_SPACE) for line in re.sub(r"\r\n?", "\n", value).split("\n"))
    return [line for line in lines if line]


def ref_paragraphs(value: str) -> list[str]:
    paragraphs, current = [], []
    for line in re.sub(r"\r\n?", "\n", value).split("\n") + [""]:
        if line.strip(WHITE_SPACE):
            current.append(line)
        elif current:
            paragraphs.append("\n".join(current).strip(WHITE_SPACE))
            current = []
    return paragraphs


def duplicate_share(items: list[str]) -> float | None:
    return (len(items) - len(set(items))) / len(items) if items else None


def covered_share(tokens: list[str], starts: list[int], n: int) -> float:
    covered = {i for start in starts for i in range(start, start + n)}
    return sum(len(tokens[i]) for i in covered) / sum(map(len, tokens))


def ref_top(tokens: list[str], n: int) -> float | None:
    if not tokens:
        return None
    found = grams(tokens, n)
    if not found:
        return 0.0
    counts = Counter(found)
    best = max(counts.values())
    top = next(g for g in found if counts[g] == best)  # of the most frequent, the first to occur
    return covered_share(tokens, [i for i, g in enumerate(found) if g == top], n)


def ref_dup(tokens: list[str], n: int) -> float | None:
    if not tokens:
        return None
    found = grams(tokens, n)
    counts = Counter(found)
    return covered_share(tokens, [i for i, g in enumerate(found) if counts[g] > 1], n) if found else 0.0


def close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) < 1e-9)


# -- repetition and character measures -------------------------------------------------------

@given(texts, st.integers(0, 1000))
def test_repetition_measures_equal_their_definition_in_any_order(values, seed):
    op = RepetitionMeasures("text", top_ngrams=(2, 3), dup_ngrams=(2, 5))
    out, _ = run(op, shuffled(frame(values), seed))
    for row in out.iter_rows(named=True):
        value = values[int(row["id"][1:])]
        if value is None:
            assert all(row[c] is None for c in ("dup_line_frac", "top_2gram_frac", "dup_5gram_frac"))
            continue
        tokens = words(value)
        assert close(row["dup_line_frac"], duplicate_share(ref_lines(value))), (value, row)
        assert close(row["dup_para_frac"], duplicate_share(ref_paragraphs(value))), (value, row)
        for n in (2, 3):
            assert close(row[f"top_{n}gram_frac"], ref_top(tokens, n)), (value, n, row)
        for n in (2, 5):
            assert close(row[f"dup_{n}gram_frac"], ref_dup(tokens, n)), (value, n, row)


@given(texts, st.integers(1, 24))
def test_batch_boundaries_never_change_a_rows_ngram_fractions(values, cut):
    series = pl.Series(values, dtype=pl.String)
    whole = _ngram_fractions(series, (2, 4), (3,))
    cut = min(cut, len(values))
    parts = [_ngram_fractions(series[:cut], (2, 4), (3,)), _ngram_fractions(series[cut:], (2, 4), (3,))]
    for name, column in whole.items():
        assert pl.concat([parts[0][name], parts[1][name]]).to_list() == column.to_list()


def test_the_defects_found_on_real_text_are_fixed():
    measured, _ = run(RepetitionMeasures("text", top_ngrams=(2,)), frame([
        "x\n \ny\n \nz", "one\r\n\r\ntwo\r\n\r\none", "a b\n  \t\nc d\n\na b", "the cat sat on the mat the cat sat",
        "word", "the cat sat on the mat the cat sat"]))
    rows = measured.rows(named=True)
    assert rows[0]["dup_line_frac"] == 0.0  # blank lines are not duplicate lines
    assert rows[1]["dup_para_frac"] == pytest.approx(1 / 3)  # CRLF paragraphs split
    assert rows[2]["dup_para_frac"] == pytest.approx(1 / 3)  # a blank line with spaces splits paragraphs
    assert rows[3]["top_2gram_frac"] == rows[5]["top_2gram_frac"] == pytest.approx(12 / 26)  # no shift after "word"


@given(texts)
def test_character_measures_equal_their_definition(values):
    out, _ = run(CharacterMeasures("text"), frame(values))
    for value, row in zip(values, out.iter_rows(named=True)):
        if value is None:
            continue
        tokens = words(value)
        visible = [c for c in value if c not in WHITE_SPACE]
        letters = sum(unicodedata.category(c).startswith("L") for c in value)
        symbols = len(re.findall(r"#|\.\.\.|…", value))
        assert close(row["symbol_word_ratio"], symbols / len(tokens) if tokens else None)
        assert close(row["alpha_word_frac"], sum(any(unicodedata.category(c).startswith("L") for c in w)
                                                 for w in tokens) / len(tokens) if tokens else None)
        assert close(row["non_alpha_char_frac"], (len(visible) - letters) / len(visible) if visible else None)


# -- echo ------------------------------------------------------------------------------------------
def ref_echo(prompt: str | None, response: str | None, n: int) -> float | None:
    """The share of the response's word n-grams (a text of fewer words: one gram of all) in the prompt's."""
    if prompt is None or response is None:
        return None

    def word_grams(value: str) -> list[tuple[str, ...]]:
        tokens = regex.findall(r"\w+", value.lower())
        return grams(tokens, n) if len(tokens) >= n else [tuple(tokens)] if tokens else []

    found, prompt_grams = word_grams(response), set(word_grams(prompt))
    return sum(g in prompt_grams for g in found) / len(found) if found else None


@st.composite
def prompt_and_response(draw) -> tuple[str | None, str | None]:
    """A prompt, and a response that is unrelated, the prompt itself, a part of it, or the prompt with more."""
    prompt, other = draw(text()), draw(text())
    kind = draw(st.integers(0, 3))
    if kind == 0 or prompt is None:
        return prompt, other
    if kind == 1:
        return prompt, prompt.upper() if draw(st.booleans()) else prompt
    tokens = prompt.split()
    start = draw(st.integers(0, len(tokens)))
    part = " ".join(tokens[start:start + draw(st.integers(0, len(tokens)))])
    return prompt, part if kind == 2 else f"{part}. {other or ''}"


@given(st.lists(prompt_and_response(), min_size=1, max_size=25), st.integers(1, 4), st.integers(0, 1000))
def test_echo_measures_equal_their_definition_in_any_order(pairs, n, seed):
    table = pl.DataFrame({"id": [f"r{i:03d}" for i in range(len(pairs))], "instruction": [p for p, _ in pairs],
                          "response": [r for _, r in pairs]}, schema={"id": pl.String, "instruction": pl.String,
                                                                      "response": pl.String})
    out, _ = run(EchoMeasures(n=n), shuffled(table, seed))
    for row in out.iter_rows(named=True):
        prompt, response = pairs[int(row["id"][1:])]
        assert close(row["echo_share"], ref_echo(prompt, response, n)), (prompt, response, row)


def test_echo_measures_read_the_turns_of_a_conversation():
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name the largest planet."},
             {"role": "assistant", "content": "Name the largest planet: Jupiter."}]
    table = pl.DataFrame({"id": ["c1"], "messages": [turns]})
    out, _ = run(EchoMeasures("messages", "messages"), table)
    assert out["echo_share"].to_list() == [pytest.approx(2 / 3)]  # name-the-largest, the-largest-planet; not -jupiter


# -- decontamination ---------------------------------------------------------------------------
def ref_contaminated(rows: list[str | None], items: list[str], n: int) -> tuple[set[int], dict[int, float]]:
    """Rows sharing an n-word window with an eval item, or holding a shorter item whole; and the
    share of each contaminated row's n-grams found among the items'."""
    item_words = [comparable_words(t) for t in items]
    long = {g for w in item_words for g in grams(w, n)}
    short = [tuple(w) for w in item_words if 0 < len(w) < n]
    hit, score = set(), {}
    for i, value in enumerate(rows):
        tokens = comparable_words(value)
        windows = grams(tokens, n)
        contains_short = any(grams(tokens, len(s)).count(s) for s in short)
        if any(g in long for g in windows) or contains_short:
            hit.add(i)
            score[i] = sum(g in long for g in windows) / max(len(windows), 1)
    return hit, score


@given(texts, st.lists(text(), min_size=1, max_size=6), st.integers(2, 8), st.integers(0, 1000))
def test_decontamination_equals_its_definition_in_any_order(values, items, n, seed):
    items = [t for t in items if t]
    rows = list(values)
    rng = random.Random(seed)
    for item in items[:2]:  # plant eval text in some rows, inside other words
        rows[rng.randrange(len(rows))] = f"{rng.choice(WORDS)} {item} {rng.choice(WORDS)}"
    with tempfile.TemporaryDirectory() as work:
        evals = Path(work) / "evals.jsonl"
        evals.write_text("".join(json.dumps({"text": t}) + "\n" for t in items) or '{"text": "zzz"}\n')
        _, rejects = run(Decontaminate(columns=("text",), eval_sets=(str(evals),), ngram=n), shuffled(frame(rows), seed))
    expected, score = ref_contaminated(rows, items or ["zzz"], n)
    assert sorted(int(i[1:]) for i in rejects["id"]) == sorted(expected)
    for row_id, got, detail in rejects.select("id", "score", "detail").iter_rows():
        assert got == pytest.approx(score[int(row_id[1:])])
        matched = json.loads(detail)["ngram"].split(" ")
        assert any(grams(comparable_words(t), len(matched)).count(tuple(matched)) for t in items or ["zzz"])


def test_a_short_row_before_a_contaminated_one_does_not_hide_it(tmp_path):
    passage = [f"eval{i}" for i in range(20)]
    (tmp_path / "evals.txt").write_text(" ".join(passage) + "\n")
    rows = [" ".join(f"a{i}" for i in range(12)), "hello", " ".join(passage), " ".join(f"o{i}" for i in range(30))]
    _, rejects = run(Decontaminate(eval_sets=(str(tmp_path / "evals.txt"),)), frame(rows))
    assert rejects["id"].to_list() == ["r002"]


# -- deduplication ----------------------------------------------------------------------------

@given(texts, st.integers(0, 1000))
def test_exact_dedup_keeps_the_first_of_each_normalized_text(values, seed):
    values = values + values[:3]  # some certain duplicates
    table = shuffled(frame(values), seed)
    out, rejects = run(ExactDedup(("text",)), table)

    def key(value: str | None) -> str:
        value = unicodedata.normalize("NFKC", value or "").lower()
        value = "".join("" if unicodedata.category(c)[0] in "PS" else c for c in value)
        return " ".join(words(value))

    first: dict[str, str] = {}
    for row_id, value in table.iter_rows():
        first.setdefault(key(value), row_id)
    assert sorted(out["id"]) == sorted(first.values())
    assert len(out) + len(rejects) == len(values)


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def shingles(value: str | None, n: int) -> set[tuple[str, ...]]:
    tokens = comparable_words(value, punctuation=True)
    return set(grams(tokens, n)) if len(tokens) >= n else ({tuple(tokens)} if tokens else set())


@given(texts, st.integers(0, 1000), st.sampled_from([0.5, 0.7, 0.9]))
def test_minhash_on_small_inputs_equals_exact_jaccard_clusters(values, seed, threshold):
    values = values + [v + " extra" for v in values[:4] if v]  # near duplicates
    table = shuffled(frame(values), seed)
    op = MinHashDedup(column="text", ngram=3, threshold=threshold, bands=128, rows=1, window=1000)
    out, rejects = run(op, table)
    ids = sorted(table["id"])  # processed in id order: the lowest id of a cluster survives
    sets = {i: shingles(values[int(i[1:])], 3) for i in ids}
    parent = {i: i for i in ids}

    def root(i: str) -> str:
        while parent[i] != i:
            i = parent[i]
        return i

    for a_index, a in enumerate(ids):
        for b in ids[a_index + 1:]:
            if sets[a] and sets[b] and jaccard(sets[a], sets[b]) >= threshold - 1e-9:
                ra, rb = root(a), root(b)
                parent[max(ra, rb)] = min(ra, rb)
    assert sorted(out["id"]) == sorted(i for i in ids if root(i) == i)
    assert dict(zip(out["id"], out["cluster_id"])) == {i: i for i in out["id"]}
    assert {r: json.loads(d)["duplicate_of"] for r, d in zip(rejects["id"], rejects["detail"])} == \
        {i: root(i) for i in ids if root(i) != i}


def test_minhash_survivors_and_clusters_do_not_depend_on_row_order():
    values = [line for line in LINES[:300]] + LINES[:40]
    runs = [run(MinHashDedup(column="text", threshold=0.7), shuffled(frame(values), seed))[0] for seed in (1, 2)]
    assert runs[0].sort("id").equals(runs[1].sort("id"))
    assert np.all(runs[0]["cluster_size"].to_numpy() >= 1)
