"""ROUGE-L novelty (Self-Instruct's filter): NoveltyFilter against brute-force rouge-score.

    python benchmarks/novelty.py                                     # 10,000 new against a 100,000 pool
    python benchmarks/novelty.py --pool 10000 --queries 1000 --no-record

Instructions: real-looking Self-Instruct tasks made from the Debian package descriptions (see
minhash_corpus.py): a task template ("Explain what {topic} is ...", "Rewrite this sentence in plain
English: {sentence}", 30 of them) filled with a package's summary line or the first sentence of its long
description. The pool is --pool of them; the new instructions are --queries more, half of them fresh,
half near-duplicates of pool tasks (one to three words dropped, inserted, replaced or swapped), so that
many pairs straddle the threshold.

dataflow: a build of NoveltyFilter(threshold=0.7) on the new instructions with the pool as its second
input: each new instruction in id order against the whole pool and every new one kept before it, as
Self-Instruct does (the node's seconds). Brute force: rouge-score on a seeded sample of --sample new
instructions against the whole pool, one process, as the paper's code calls it (``scorer.score(new,
old)`` for every pair) and as Stanford Alpaca's does (tokens computed once, ``rouge_scorer._score_lcs``);
its time per pair times the pairs the full filter compares is the extrapolated time. On the sample,
NoveltyIndex over the pool must give brute force's decisions, best scores and most similar tasks.
The table is printed; it goes to benchmarks/RESULTS.md (section ``novelty``) unless --no-record.
"""

from __future__ import annotations

import argparse
import io
import random
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from rouge_score import rouge_scorer  # noqa: E402

from minhash_corpus import load_corpus  # noqa: E402
from results import load, run_facts, settle, write_section  # noqa: E402

from dataflow import Pipeline  # noqa: E402
from dataflow.build import build  # noqa: E402
from dataflow.catalog import query  # noqa: E402
from dataflow.operators import NoveltyFilter  # noqa: E402
from dataflow.operators.text import NoveltyIndex  # noqa: E402
from dataflow.progress import Progress  # noqa: E402

THRESHOLD = 0.7
TOPIC_TEMPLATES = (
    "Explain what {topic} is and when you would use it.", "Write a short tutorial on getting started with {topic}.",
    "List three advantages of {topic}.", "Describe how {topic} works to a complete beginner.",
    "Compare {topic} with two alternatives and say which you would choose.",
    "Write a product description for {topic}.", "Give an example of a task that needs {topic}.",
    "Summarize the main features of {topic} in two sentences.", "What problems does {topic} solve?",
    "Suggest a catchy name for {topic}.", "Write a tweet announcing {topic}.",
    "Create a multiple-choice quiz question about {topic}.", "Write a haiku about {topic}.",
    "What should a new user know before installing {topic}?", "Draft an email to your team proposing {topic}.",
    "Classify {topic} as a library, an application, a font, documentation or data.",
    "Write a FAQ entry about {topic}.", "Explain {topic} to a ten-year-old.",
    "Generate a list of five search keywords for {topic}.", "Write a one-paragraph review of {topic}.")
SENTENCE_TEMPLATES = (
    "Rewrite this sentence in plain English: {sentence}", "Translate into French: {sentence}",
    "Is the following statement about software true or false? {sentence}",
    "Summarize in five words: {sentence}", "Find the grammatical subject of this sentence: {sentence}",
    "Turn this description into a question: {sentence}", "Make this sentence more formal: {sentence}",
    "Extract the key terms from: {sentence}", "Write a title for a text that begins: {sentence}",
    "Correct any spelling mistakes in: {sentence}")
VERBS = ("Explain", "Describe", "Summarize", "Write a short note on", "Tell me about", "Give an overview of",
         "Write a paragraph about", "Outline", "Discuss", "Present")
ASPECTS = ("", "the main features of ", "how to install ", "the purpose of ", "the history of ", "common uses of ",
           "the limitations of ", "alternatives to ", "how to configure ", "who would use ")
AUDIENCES = ("", " to a beginner", " in two sentences", " for a system administrator", " in plain English",
             " as a bulleted list", " for a blog post", " in under 50 words")
SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def tasks(count: int, rng: random.Random, descriptions: list[str]) -> list[str]:
    """``count`` tasks, each a random template filled with a random description's summary or first sentence."""
    made = []
    for _ in range(count):
        summary, _, body = rng.choice(descriptions).partition("\n")
        sentence = SENTENCE_END.split(" ".join(body.split()), maxsplit=1)[0]
        topic = "the " + (summary[0].lower() + summary[1:] if summary[:2].istitle() else summary)
        kind = rng.random()
        if kind < 0.5 or not sentence:
            made.append(f"{rng.choice(VERBS)} {rng.choice(ASPECTS)}{topic}{rng.choice(AUDIENCES)}.")
        elif kind < 0.7:
            made.append(rng.choice(TOPIC_TEMPLATES).format(topic=topic))
        else:
            made.append(rng.choice(SENTENCE_TEMPLATES).format(sentence=sentence))
    return made


def near_duplicate(text: str, words: list[str], rng: random.Random) -> str:
    """One to three words dropped, inserted, replaced or swapped."""
    tokens = text.split()
    for _ in range(rng.randint(1, 3)):
        at, kind = rng.randrange(len(tokens)), rng.randrange(4)
        if kind == 0 and len(tokens) > 1:
            del tokens[at]
        elif kind == 1:
            tokens.insert(at, rng.choice(words))
        elif kind == 2:
            tokens[at] = rng.choice(words)
        elif len(tokens) > 1:
            other = min(at + 1, len(tokens) - 1)
            tokens[at], tokens[other] = tokens[other], tokens[at]
    return " ".join(tokens)


def instructions(pool_size: int, queries: int) -> tuple[list[str], list[str]]:
    rng = random.Random(0)
    descriptions = load_corpus()
    pool = tasks(pool_size, rng, descriptions)
    words = sorted({w for text in pool[:5000] for w in text.split()})
    fresh = tasks(queries - queries // 2, rng, descriptions)
    edited = [near_duplicate(rng.choice(pool), words, rng) for _ in range(queries // 2)]
    new = fresh + edited
    rng.shuffle(new)
    return pool, new


def dataflow_filter(pool: list[str], new: list[str]) -> tuple[float, set[int], dict]:
    """The NoveltyFilter node's seconds, the positions of the new instructions it kept, its metrics."""
    with tempfile.TemporaryDirectory() as work:
        p = Pipeline("novelty")
        seeds = p.from_rows([{"id": f"p{i:07d}", "instruction": t} for i, t in enumerate(pool)], name="pool")
        rows = p.from_rows([{"id": f"q{i:07d}", "instruction": t} for i, t in enumerate(new)], name="new")
        p.output("novel", rows.apply(NoveltyFilter(threshold=THRESHOLD), seeds, name="novel"))
        report = build(p, Path(work) / "out", Progress(io.StringIO()))
        kept = {int(i[1:]) for i in query(Path(work) / "out", "select id from novel")["id"]}
    stats = next(s for s in report.stats if s.name == "novel")
    return stats.seconds, kept, stats.metrics


def brute_force(sample: list[str], pool: list[str]) -> dict[str, tuple[float, list[tuple[float, int]]]]:
    """Per way of calling rouge-score: seconds per pair, and each sampled text's best score and the
    first pool position with it."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool_tokens = [scorer._tokenizer.tokenize(old) for old in pool]

    def paper(text: str) -> list[float]:
        return [scorer.score(text, old)["rougeL"].fmeasure for old in pool]

    def alpaca(text: str) -> list[float]:
        tokens = scorer._tokenizer.tokenize(text)
        return [rouge_scorer._score_lcs(tokens, old).fmeasure for old in pool_tokens]

    found = {}
    for name, scores_of in (("rouge-score `score()` per pair (the paper's code)", paper),
                            ("rouge-score `_score_lcs` on tokens made once (Alpaca's code)", alpaca)):
        started, best = time.perf_counter(), []
        for text in sample:
            scores = scores_of(text)
            best.append((max(scores), int(np.argmax(scores))))
        found[name] = ((time.perf_counter() - started) / (len(sample) * len(pool)), best)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=20, help="new instructions scored by brute force")
    parser.add_argument("--no-record", action="store_true", help="print the table only; leave RESULTS.md alone")
    args = parser.parse_args()
    if not args.no_record:
        settle()
    load_before = load()
    pool, new = instructions(args.pool, args.queries)
    seconds, kept, metrics = dataflow_filter(pool, new)
    # what brute force scores in the same filter: each new task against the pool and the new ones kept before it
    kept_flags = np.array([i in kept for i in range(len(new))])
    pairs = int(len(new) * len(pool) + (np.cumsum(kept_flags) - kept_flags).sum())

    sample = random.Random(1).sample(new, args.sample)
    index = NoveltyIndex(THRESHOLD, corpus=pool)
    for text in pool:
        index.add(text)
    ours = [index.most_similar(text) for text in sample]
    peers = brute_force(sample, pool)
    rows = []
    for name, (per_pair, best) in peers.items():
        same = sum((m is None and b[0] < THRESHOLD) or (m is not None and (m.score, m.index) == b)
                   for m, b in zip(ours, best))
        rows.append(f"| {name}, extrapolated | {per_pair * pairs:,.0f} s | {pairs:,} | {same} of {len(sample)} |")
    rejected = sum(score > THRESHOLD for score, _ in next(iter(peers.values()))[1])
    lines = run_facts() + [
        f"- load average before: {load_before}, after: {load()}",
        f"- {len(pool):,} pool tasks and {len(new):,} new ones (half near-duplicates of pool tasks) from Debian "
        f"descriptions; ROUGE-L F threshold {THRESHOLD} (rejected above it)",
        f"- NoveltyFilter kept {len(kept):,} and rejected {len(new) - len(kept):,} of the new tasks; on the sample "
        f"of {len(sample)}, brute force rejects {rejected} against the pool alone", "",
        "| method | seconds | pairs scored | sample tasks with NoveltyIndex's decision, best score and most similar |",
        "| --- | --- | --- | --- |",
        f"| dataflow NoveltyFilter (build node) | {seconds:.2f} s | {metrics['candidates_checked']:,} LCS | - |",
        *rows, "",
        "Brute-force times are one process's seconds per pair on the sample, times every pair the filter "
        "decides; the paper's code spreads them over 4 processes (at best 2x on 2 cores)."]
    body = "\n".join(lines)
    if args.no_record:
        print(body)
    else:
        write_section("novelty", "ROUGE-L novelty filter against brute-force rouge-score", body)


if __name__ == "__main__":
    main()
