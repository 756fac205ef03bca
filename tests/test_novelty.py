"""ROUGE-L novelty (Self-Instruct's filter) against brute force with rouge-score itself, pair by pair,
on real instructions (pipelines/data) and Debian package summaries, with near-duplicates made by
editing them so that many pairs straddle the threshold, in random orders and subsets (hypothesis)."""

from __future__ import annotations

import json
import random
import unicodedata
from functools import cache

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from dataflow import CompileError, Pipeline
from dataflow.operators import NoveltyFilter
from dataflow.operators.curation.diversity import distinct_n as operator_distinct_n
from dataflow.operators.text import NoveltyIndex, distinct_metrics, distinct_n, rouge_tokens

from conftest import REPO, run

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
CURATION = REPO / "tests" / "data" / "curation"


def rouge(new: str, existing: str) -> float:
    """The paper's call: ``scorer.score(new_instruction, existing).fmeasure``."""
    return SCORER.score(new, existing)["rougeL"].fmeasure


def real_instructions() -> list[str]:
    """The user's text of every row of the quickstart dataset that parses (duplicates included)."""
    found = []
    for line in (REPO / "pipelines" / "data" / "instructions.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        turns = [t.get("value") or t.get("content") for t in row.get("conversations", []) + row.get("messages", [])
                 if t.get("from") == "human" or t.get("role") == "user"]
        text = row.get("instruction") or (turns[0] if turns else None)
        if isinstance(text, str) and text:
            found.append(text)
    return found


def debian_summaries() -> list[str]:
    """The one-line summaries of real Debian packages (Haskell -dev/-doc/-prof families among them)."""
    lines = (CURATION / "debian_en.jsonl").read_text().splitlines()
    return [json.loads(line)["text"].split("\n")[0] for line in lines]


def edited(text: str, words: list[str], rng: random.Random) -> str:
    """A near-duplicate: one to three words dropped, inserted, replaced or swapped, maybe re-cased."""
    tokens = text.split()
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(tokens))
        kind = rng.randrange(4)
        if kind == 0 and len(tokens) > 1:
            del tokens[at]
        elif kind == 1:
            tokens.insert(at, rng.choice(words))
        elif kind == 2:
            tokens[at] = rng.choice(words)
        elif len(tokens) > 1:
            other = min(at + 1, len(tokens) - 1)
            tokens[at], tokens[other] = tokens[other], tokens[at]
    joined = " ".join(tokens)
    return joined.upper() if rng.random() < 0.1 else joined


def corpus() -> list[str]:
    rng = random.Random(7)
    originals = real_instructions()[:110] + debian_summaries()[:70]
    words = sorted({w for text in originals for w in text.split()})
    variants = [edited(rng.choice(originals), words, rng) for _ in range(110)]
    # no token at all, non-ASCII letters and digits, the Kelvin sign (lower-cases to 'k')
    odd = ["", "   ", "写一首关于秋天的诗。", "Écris un poème sur l'été, s'il te plaît.", "Ｗｒｉｔｅ ａ ｐｏｅｍ",
           "Explain \u212aelvin and °C: 273.15 K = 0 °C", "!!!", "x² + y² = z²"]
    return originals + variants + odd


TEXTS = corpus()
N = len(TEXTS)


@cache
def scores() -> np.ndarray:
    """rouge-score's F of every ordered pair of texts: [i, j] = rouge(TEXTS[i], TEXTS[j])."""
    matrix = np.zeros((N, N))
    for i in range(N):
        for j in range(N):
            matrix[i, j] = rouge(TEXTS[i], TEXTS[j])
    return matrix


def test_the_corpus_puts_many_pairs_near_the_threshold():
    upper = scores()[np.triu_indices(N, 1)]
    assert ((upper > 0.6) & (upper <= 0.7)).sum() >= 50 and ((upper > 0.7) & (upper < 0.8)).sum() >= 50
    assert (upper == 1).sum() >= 5  # equal token sequences: ties


@given(st.lists(st.text(), max_size=5))
def test_tokens_are_those_of_rouge_scores_tokenizer(extra):
    for text in TEXTS + extra:
        assert rouge_tokens(text) == SCORER._tokenizer.tokenize(text), text


# -- the index --------------------------------------------------------------------------------

@given(st.permutations(range(N)), st.integers(1, 120), st.sampled_from([0.3, 0.5, 0.7, 0.8]),
       st.sampled_from([0.0, 0.05, 0.2]))
def test_the_index_answers_as_brute_force_in_any_order(order, count, threshold, above):
    """Before each text is added, it and another text are queried: the best pool text (first among
    equals) and its score whenever the best reaches the query's threshold, else None."""
    order = order[:count]
    index = NoveltyIndex(threshold, corpus=[TEXTS[i] for i in order] if count % 2 else ())
    added: list[int] = []
    for step, i in enumerate(order):
        for query in (i, order[-1 - step]):
            at = min(threshold + above, 1.0)
            found = index.most_similar(TEXTS[query], at)
            pool_scores = scores()[query, added]
            best = int(np.argmax(pool_scores)) if added else None
            expected = None if best is None or pool_scores[best] < at else (pool_scores[best], best)
            assert (None if found is None else (found.score, found.index)) == expected, (TEXTS[query], at)
            if found is not None:
                assert found.text == TEXTS[added[found.index]]
        assert index.add(TEXTS[i]) == step
        added.append(i)
    assert len(index) == count


@pytest.mark.parametrize("threshold", [0.5, 2 / 3, 0.7, 0.75, 0.8, 0.9, 1.0])
def test_no_length_or_overlap_bound_prunes_a_text_exactly_at_the_threshold(threshold):
    """Every length pair up to 20 tokens and every LCS: pool texts are a query's first L words then
    fillers, so scores land on the bounds themselves (e.g. 2 of 3 tokens at 0.8: 0.8 exactly)."""
    words = real_instructions()[0].split() + debian_summaries()[0].split() + debian_summaries()[1].split()
    words = list(dict.fromkeys(w.lower().strip("?.,;:") for w in words))[:20]
    fillers = [f"filler{k}" for k in range(20)]
    pool = [" ".join(words[:lcs] + fillers[:n - lcs]) for n in range(1, 21) for lcs in range(n + 1)]
    index = NoveltyIndex(threshold)
    for text in pool:
        index.add(text)
    for m in range(1, 21):
        query = " ".join(words[:m])
        pool_scores = [rouge(query, text) for text in pool]
        best = int(np.argmax(pool_scores))
        found = index.most_similar(query)
        expected = (pool_scores[best], best) if pool_scores[best] >= threshold else None
        assert (None if found is None else (found.score, found.index)) == expected, m


@pytest.mark.parametrize(("threshold", "lcs", "m", "n"), [(0.1, 1, 1, 19), (0.05, 1, 39, 1)])
def test_float_rounding_of_the_bounds_never_prunes_a_match(threshold, lcs, m, n):
    """Pairs whose score is the threshold exactly, where the bounds computed in floats without slack
    fall just inside (floor(1 * 1.9 / 0.1) is 18, not 19)."""
    query = " ".join([f"common{k}" for k in range(lcs)] + [f"query{k}" for k in range(m - lcs)])
    text = " ".join([f"common{k}" for k in range(lcs)] + [f"pool{k}" for k in range(n - lcs)])
    assert rouge(query, text) >= threshold
    index = NoveltyIndex(threshold)
    index.add(text)
    assert index.most_similar(query) == (rouge(query, text), 0, text)


def test_an_index_refuses_thresholds_it_was_not_built_for():
    with pytest.raises(ValueError, match="threshold"):
        NoveltyIndex(0)
    index = NoveltyIndex(0.7)
    index.add("Write a poem about the sea.")
    with pytest.raises(ValueError, match="at least 0.7"):
        index.most_similar("Write a poem about the sea.", 0.5)
    assert index.most_similar("Write a poem about the sea.", 0.9).score == 1.0
    assert NoveltyIndex(0.5).most_similar("Write a poem.") is None  # an empty pool


# -- the filter against Self-Instruct's loop ------------------------------------------------------

def brute_force(rows: list[tuple[str, int]], pool: list[tuple[str, int]], threshold: float
                ) -> dict[str, tuple[float, str] | None]:
    """Self-Instruct's loop read from its definition: each row (id, text) in id order against every
    pool text and every row kept before it; rejected when the best score is above ``threshold``.
    Per row: None when kept, else (best score, id of the first text with it)."""
    kept = sorted(pool)
    decisions: dict[str, tuple[float, str] | None] = {}
    for id_, i in sorted(rows):
        row_scores = [scores()[i, j] for _, j in kept]
        best = max(row_scores, default=0.0)
        if best > threshold:
            decisions[id_] = (best, kept[row_scores.index(best)][0])
        else:
            decisions[id_] = None
            kept.append((id_, i))
    return decisions


def table(entries: list[tuple[str, int]], column: str) -> pl.DataFrame:
    return pl.DataFrame({"id": [id_ for id_, _ in entries], column: [TEXTS[i] for _, i in entries]},
                        schema={"id": pl.String, column: pl.String})


@given(st.permutations(range(N)), st.integers(1, 90), st.integers(0, 25), st.sampled_from([0.5, 0.7, 0.9]),
       st.randoms(use_true_random=False))
def test_the_filter_decides_as_brute_force_in_any_order(order, count, pool_count, threshold, rng):
    rows = [(f"r{rank:03d}", i) for rank, i in enumerate(order[:count])]
    pool = [(f"p{rank:03d}", i) for rank, i in enumerate(order[count:count + pool_count])]
    rng.shuffle(rows)  # the input's row order is not the id order
    expected = brute_force(rows, pool, threshold)
    op = NoveltyFilter("instruction", threshold=threshold, pool_column="text")
    output, rejects = run(op, table(rows, "instruction"), *([table(pool, "text")] if pool else []))
    assert output["id"].to_list() == [id_ for id_, _ in rows if expected[id_] is None]  # input order kept
    found = {r["id"]: (r["score"], json.loads(r["detail"])) for r in rejects.iter_rows(named=True)}
    assert set(found) == {id_ for id_, decision in expected.items() if decision is not None}
    texts = dict(rows + pool)
    for id_, (score, detail) in found.items():
        assert (score, detail["similar_to"]) == expected[id_]
        assert detail["from"] == ("pool" if detail["similar_to"].startswith("p") else "input")
        assert detail["rouge_l"] == round(score, 4)
        assert TEXTS[texts[detail["similar_to"]]].startswith(detail["text"].removesuffix("..."))
    assert set(rejects["reason"]) <= {"not_novel"}


def test_the_boundary_is_self_instructs_strictly_above():
    """rouge-score's floats decide: LCS 7 of 10 and 10 tokens scores 0.7 (kept at 0.7); LCS 7 of 9
    and 11 tokens scores 0.7000000000000001 (rejected), though both are 14/20 exactly."""
    seed = "the quick brown fox jumps over the lazy dog today"
    at_threshold = "the quick brown fox jumps over the red cat now"
    short_seed = "the quick brown fox jumps over the lazy dog"
    above = "the quick brown fox jumps over the red cat in town"
    assert rouge(at_threshold, seed) == 0.7 and rouge(above, short_seed) == 0.7000000000000001
    for text, pool_text, kept in ((at_threshold, seed, True), (above, short_seed, False)):
        rows, pool = (pl.DataFrame({"id": [id_], "instruction": [t]}) for id_, t in (("a", text), ("s", pool_text)))
        output, rejects = run(NoveltyFilter(threshold=0.7), rows, pool)
        assert output.height == kept and rejects["score"].to_list() == ([] if kept else [0.7000000000000001])


# -- in a build ------------------------------------------------------------------------------

def test_a_build_keeps_novel_instructions_and_names_the_most_similar_in_rejects(builder):
    seeds = real_instructions()[:20]
    near_seed, rust, go = seeds[3] + " Keep it short.", "Write a limerick about a cat who codes in Rust.", \
        "Write a limerick about a cat who codes in Go."
    generated = [near_seed, rust, go, None, "", "写一首诗", "写一首诗"]
    p = Pipeline("self_instruct")
    seed_node = p.from_rows([{"instruction": text} for text in seeds], name="seeds")
    rows = p.from_rows([{"instruction": text} for text in generated], name="generated")
    p.output("o", rows.apply(NoveltyFilter(), seed_node, name="novel"))
    report = builder.build(p)
    id_of = {r["instruction"]: r["id"] for r in builder.sql("select * from generated order by id desc").to_dicts()}
    seed_id = {r["instruction"]: r["id"] for r in builder.sql("select * from seeds order by id desc").to_dicts()}
    rejects = {r["id"]: r for r in builder.rejects("novel").to_dicts()}
    assert sorted(rejects) == sorted([id_of[near_seed], id_of[go]])
    assert json.loads(rejects[id_of[near_seed]]["detail"]) == {"similar_to": seed_id[seeds[3]], "from": "pool",
                                                               "text": seeds[3],
                                                               "rouge_l": round(rouge(near_seed, seeds[3]), 4)}
    assert json.loads(rejects[id_of[go]]["detail"]) == {
        "similar_to": id_of[rust], "from": "input", "text": rust, "rouge_l": round(rouge(go, rust), 4)}
    assert rejects[id_of[go]]["score"] == rouge(go, rust) and rejects[id_of[go]]["reason"] == "not_novel"
    # null, empty and untokenized texts have no token: novel by definition, never rejected
    assert builder.output("o")["instruction"].to_list() == [t for t in generated if t not in (near_seed, go)]
    metrics = next(s.metrics for s in report.stats if s.name == "novel")
    assert metrics["pool_size"] == 20 and metrics["no_tokens"] == 4 and metrics["candidates_checked"] >= 2


def test_a_long_most_similar_text_is_shortened_in_the_detail():
    long_text = "Summarize the following article about " + " ".join(debian_summaries()[:20])
    rows = pl.DataFrame({"id": ["a", "b"], "instruction": [long_text, long_text + " Please."]})
    _, rejects = run(NoveltyFilter(), rows)
    detail = json.loads(rejects["detail"].item())
    assert len(detail["text"]) == 100 and detail["text"].endswith("...") and long_text.startswith(detail["text"][:97])


def test_bad_pipelines_fail_at_compile_time_naming_the_column():
    def pipeline(op: NoveltyFilter, *pools: str) -> Pipeline:
        p = Pipeline("bad")
        rows = p.from_rows([{"prompt": "Write a poem."}], name="rows")
        seeds = p.from_rows([{"task": "Write a song."}], name="seeds")
        p.output("o", rows.apply(op, *[seeds] * len(pools), name="novel"))
        return p

    with pytest.raises(CompileError, match="column 'instruction' not found in the output of 'rows'"):
        pipeline(NoveltyFilter()).compile()
    with pytest.raises(CompileError, match="pool column 'prompt' not found in the second input .* task"):
        pipeline(NoveltyFilter("prompt"), "seeds").compile()
    with pytest.raises(CompileError, match="at most one pool node, was given 3 inputs"):
        pipeline(NoveltyFilter("prompt", pool_column="task"), "seeds", "seeds").compile()
    with pytest.raises(CompileError, match="threshold must be between 0 and 1, not 1.5"):
        pipeline(NoveltyFilter("prompt", threshold=1.5)).compile()
    pipeline(NoveltyFilter("prompt", pool_column="task"), "seeds").compile()


# -- distinct-n ------------------------------------------------------------------------------------

def reference_distinct(texts: list[str | None], n: int) -> float | None:
    grams = []
    for text in texts:
        words = unicodedata.normalize("NFKC", text or "").lower().split()
        grams += [tuple(words[k:k + n]) for k in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def test_distinct_n_is_its_definition_and_the_diversity_operators_number():
    texts = TEXTS + [None]
    for n in (1, 2, 3):
        assert distinct_n(texts, n) == pytest.approx(reference_distinct(texts, n), abs=1e-12)
        assert distinct_n(texts, n) == operator_distinct_n(pl.Series(texts, dtype=pl.String), n)
    assert distinct_metrics(["a b a b", None, "A. b"]) == {"distinct_1": 0.5, "distinct_2": 0.75}
    assert distinct_metrics([None, ""]) == {"distinct_1": None, "distinct_2": None}
