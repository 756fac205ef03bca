"""The shared text kernel of the operator families: normalized texts, tokens, n-gram hashes,
distinct-n, connected components, and an exact ROUGE-L novelty index (text views of columns are in
``columns``, which needs no NumPy). Every function here is vectorized over a batch of documents
(NumPy/Polars), and the index compares in compiled code; none knows about nodes or the engine.

Documents are held as one flat token array with a length per document; ``ngram_hashes`` is the one
place that turns it into n-grams, so no operator can let one document's n-grams run into the next.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import polars as pl
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

KEEP_RULES = ("lowest_id", "longest", "highest_score")
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def starts_of(counts: np.ndarray) -> np.ndarray:
    """Where each run starts in a flat array of runs of ``counts`` items (an exclusive cumulative sum)."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.cumsum(counts) - counts


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijective, well-spread mix of uint64 values."""
    x = x.copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def prepared_texts(texts: pl.Series, shingle: str, punctuation: bool = True) -> pl.Series:
    """Texts as they are compared: NFKC, then lower case; without ``punctuation``, punctuation and
    symbols (Unicode categories P and S) become spaces. For characters, whitespace runs become one
    space; for words, tokens are the runs between Unicode whitespace (see ``token_hashes``).

    NFKC and the Unicode whitespace pattern run only on the rows that need them (non-ASCII), which
    is most of the cost saved on English text; ASCII text is NFKC already.
    """
    texts = texts.fill_null("")
    unicode_rows = texts.str.contains(r"[^\x00-\x7F]").to_numpy()
    if unicode_rows.any():
        index = np.flatnonzero(unicode_rows)
        texts = texts.scatter(index, texts.gather(index).str.normalize("NFKC"))
    texts = texts.str.to_lowercase()
    if not punctuation:
        texts = texts.str.replace_all(r"[\p{P}\p{S}]", " ")
    if shingle == "char":
        return texts.str.replace_all(r"\s+", " ").str.strip_chars()
    if unicode_rows.any():
        texts = texts.scatter(index, texts.gather(index).str.replace_all(r"\s+", " "))
    return texts.str.replace_many(dict.fromkeys(["\t", "\n", "\r", "\x0b", "\x0c"], " "))


def token_hashes(texts: pl.Series, shingle: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint64 hashes of every token of every (prepared) text, and the token count of each."""
    tokens = texts.str.split(" ") if shingle == "word" else texts.str.split("")
    flat = tokens.explode(empty_as_null=False)
    kept = (flat.str.len_bytes() > 0).fill_null(False).to_numpy()
    doc = np.repeat(np.arange(len(texts), dtype=np.int64), tokens.list.len().to_numpy())[kept]
    return flat.hash(seed=seed).to_numpy()[kept], np.bincount(doc, minlength=len(texts)).astype(np.int64)


def ngram_hashes(tokens: np.ndarray, lengths: np.ndarray, n: int, short_as_whole: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n``-token windows of each document of a flat token array (``lengths`` tokens each, in
    order): their hashes, how many each document has, and where each starts in ``tokens``.

    A document shorter than ``n`` tokens has no window, or with ``short_as_whole`` one window of all
    its tokens, hashed as a window of its own length would be. Windows never cross documents.
    """
    lengths = lengths.astype(np.int64)
    counts = np.where(lengths >= n, lengths - n + 1, np.minimum(lengths, 1) if short_as_whole else 0)
    starts = starts_of(lengths)
    first = starts_of(counts)
    position = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - first, counts)
    # every full window of the flat token array, from contiguous slices (no gathers)
    padded = np.concatenate((tokens, np.zeros(n, dtype=np.uint64)))
    windows = np.zeros(len(tokens), dtype=np.uint64)
    for k in range(n):  # in place: no temporary arrays
        windows *= GOLDEN
        windows += padded[k:k + len(tokens)]
        windows += np.uint64(k + 1)
    combined = windows[position] if len(tokens) else np.empty(0, dtype=np.uint64)
    short = np.flatnonzero((lengths > 0) & (lengths < n)) if short_as_whole else np.empty(0, dtype=np.int64)
    if len(short):  # the whole document as one window: the hash of a window of its length
        whole = np.zeros(len(short), dtype=np.uint64)
        for k in range(n - 1):
            grown = whole * GOLDEN + padded[starts[short] + k] + np.uint64(k + 1)
            whole = np.where(k < lengths[short], grown, whole)
        combined[first[short]] = whole
    return mix64(combined), counts, position


def distinct_n(texts: Sequence[str | None] | pl.Series, n: int) -> float | None:
    """Distinct-n (Li et al. 2016): distinct word n-grams over all word n-grams of the texts; None
    when they have none. Words are those of ``prepared_texts(texts, "word")`` (NFKC, lower case, split
    at whitespace, punctuation kept in its word); n-grams never cross texts; nulls have none."""
    series = texts if isinstance(texts, pl.Series) else pl.Series(texts, dtype=pl.String)
    tokens, lengths = token_hashes(prepared_texts(series, "word"), "word", seed=3)
    grams = ngram_hashes(tokens, lengths, n)[0]
    return len(np.unique(grams)) / len(grams) if len(grams) else None


def distinct_metrics(texts: Sequence[str | None] | pl.Series) -> dict[str, float | None]:
    """``distinct_1`` and ``distinct_2`` of the texts, rounded to 4 places: node metrics for
    ``ctx.record``."""
    values = {f"distinct_{n}": distinct_n(texts, n) for n in (1, 2)}
    return {name: None if value is None else round(value, 4) for name, value in values.items()}


def components(pairs: np.ndarray, count: int) -> np.ndarray:
    """Connected components by vectorized union-find: every document gets the smallest index of
    its component (edges hook the larger root under the smaller; pointer jumping compresses)."""
    parent = np.arange(count, dtype=np.int64)
    left, right = pairs[:, 0].copy(), pairs[:, 1].copy()
    while len(left):
        a, b = parent[left], parent[right]
        low, high = np.minimum(a, b), np.maximum(a, b)
        linked = low != high
        if not linked.any():
            break
        np.minimum.at(parent, high[linked], low[linked])
        while True:  # pointer jumping until every document points at a root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        left, right = left[linked], right[linked]
    return parent


def choose_survivors(cluster: np.ndarray, keep: str, lengths: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
    """Index of the kept document of each document's cluster, by the ``keep`` rule (one of
    ``KEEP_RULES``); ties go to the lowest index, i.e. the lowest id."""
    count = len(cluster)
    if keep == "lowest_id":
        return cluster.copy()
    primary = lengths if keep == "longest" else scores
    order = np.lexsort((np.arange(count), -primary.astype(np.float64), cluster))  # best first per cluster
    first_of_cluster = np.ones(count, dtype=bool)
    first_of_cluster[1:] = cluster[order][1:] != cluster[order][:-1]
    best = np.empty(count, dtype=np.int64)
    best[cluster[order][first_of_cluster]] = order[first_of_cluster]
    return best[cluster]


def survivors_within(pairs: np.ndarray, similarity: np.ndarray, count: int, keep: str, lengths: np.ndarray,
                     scores: np.ndarray | None) -> np.ndarray:
    """Index of the kept document each document is merged into, such that every merged document is
    similar (a pair) to its survivor: documents are taken best first by the ``keep`` rule, and
    each joins its most similar survivor so far, or becomes a survivor. Unlike connected
    components, this never chains A ~ B ~ C into one cluster when A and C are not similar."""
    survivor = np.arange(count)
    if not len(pairs):
        return survivor
    index = np.arange(count)
    primary = np.zeros(count) if keep == "lowest_id" else (lengths if keep == "longest" else scores)
    rank = np.empty(count, dtype=np.int64)
    rank[np.lexsort((index, -primary.astype(np.float64)))] = index  # 0 = the best document
    both = np.concatenate((pairs, pairs[:, ::-1]))
    weights = np.concatenate((similarity, similarity))
    order = np.lexsort((-weights, rank[both[:, 0]]))  # each document's neighbours, most similar first
    both, weights = both[order], weights[order]
    is_survivor = np.zeros(count, dtype=bool)
    start = 0
    while start < len(both):
        doc = both[start, 0]
        end = start
        while end < len(both) and both[end, 0] == doc:
            end += 1
        neighbours = both[start:end, 1]
        merged = neighbours[is_survivor[neighbours]]  # the better documents that survived, most similar first
        if len(merged):
            survivor[doc] = merged[0]
        else:
            is_survivor[doc] = True
        start = end
    return survivor


# -- ROUGE-L novelty, exactly as the rouge-score package scores it ----------------------------------
# (RougeScorer(["rougeL"], use_stemmer=False), score(a, b)["rougeL"].fmeasure: Self-Instruct's filter)

ROUGE_TOKEN = re.compile(r"[a-z0-9]+")
SLACK = 1e-9  # the bounds use threshold - SLACK, so float rounding never prunes a match
_OCCURRENCE = 21  # an element is (occurrence << 21) | code: codes are below 2**21


def rouge_tokens(text: str) -> list[str]:
    """The tokens rouge-score's default tokenizer (no stemmer) makes of ``text``: Python's
    ``str.lower()``, then the runs of ASCII ``[a-z0-9]``; every other character separates tokens
    (``café`` gives ``caf``, ``²`` and ``١٢`` nothing, the Kelvin sign ``k``, Chinese no token)."""
    return ROUGE_TOKEN.findall(text.lower())


def f_measure(lcs: np.ndarray, m: int, n: np.ndarray) -> np.ndarray:
    """rouge-score's ROUGE-L F of LCS lengths between a sequence of length m and sequences of
    lengths n, in its floating-point operations (precision L/n, recall L/m, 2*p*r/(p+r); 0 for no
    common token), which decide at the boundary: L=7 of m=n=10 gives 0.7, L=7 of 9 and 11 gives
    0.7000000000000001."""
    precision, recall = lcs / n, lcs / m
    total = precision + recall
    return np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)


def length_bounds(m: int, threshold: float) -> tuple[int, int]:
    """The lengths n a text may have to reach ROUGE-L F >= ``threshold`` with one of length m."""
    t = threshold - SLACK
    return math.ceil(t * m / (2 - t)), math.floor(m * (2 - t) / t)


def prefix_length(m: int, threshold: float) -> int:
    """How many of its rarest elements a text of length m indexes (or probes), so that it shares
    one with every text it can reach ``threshold`` with: m - O + 1 for the smallest overlap O that
    any such pair needs."""
    t = threshold - SLACK
    overlap = max(1, math.ceil(t * (m + length_bounds(m, threshold)[0]) / 2))
    return m - overlap + 1


class Match(NamedTuple):
    """The most similar pool text: its ROUGE-L F, its position in the pool, and the text."""

    score: float
    index: int
    text: str


class NoveltyIndex:
    """An incremental pool of texts that answers, exactly, which pool text is most similar to a
    query by ROUGE-L F (rouge-score's, see ``rouge_tokens`` and ``f_measure``), whenever one
    reaches a threshold: Self-Instruct's novelty test without comparing every pair.

    ``threshold`` is the lowest threshold queries may use. ``corpus`` (optional) is text whose
    token frequencies rank tokens by rarity, e.g. everything that will be added.

    How it stays exact: L is at most O, the size of the multiset intersection of the two token
    sequences (a token counts with its occurrence: a text's second "the" is an element of its own),
    so F >= t needs O >= t*(m+n)/2 and n within [t*m/(2-t), m*(2-t)/t]. Under one fixed order of
    elements, rarest first, two texts with that overlap share an element among their first m-O+1
    and n-O+1 elements (the prefix filter: Chaudhuri et al. 2006, Bayardo et al. 2007). The index
    keeps an inverted list of each text's prefix only; a query probes its own prefix, and of the
    texts found keeps those whose length fits and whose overlap can still reach t (at most the
    prefix elements they share plus the larger of the two texts' remainders after their prefixes).
    Only those get their L computed, in rapidfuzz (``LCSseq``: compiled, bit-parallel; each token is
    encoded as one character, so an index holds at most 1,114,112 distinct tokens). Every bound
    uses the threshold lowered by ``SLACK``, so that no floating-point rounding prunes a text whose
    score reaches it. The order ranks tokens by their frequency in ``corpus``, and tokens seen later
    as rarer still, in the order they come: it changes speed, never a result.
    """

    def __init__(self, threshold: float, corpus: Iterable[str] = ()):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], not {threshold}")
        self.threshold = threshold
        self.texts: list[str] = []
        self.candidates_checked = 0  # LCS computations so far
        self._sequences = np.empty(1024, dtype=object)  # each text's tokens, one character (its code) each
        self._lengths = np.zeros(1024, dtype=np.int64)  # tokens of each text
        self._prefixes = np.zeros(1024, dtype=np.int64)  # how many of its rarest elements each text indexes
        self._postings: dict[int, array] = {}  # element -> positions of the texts that index it
        self._codes: dict[str, int] = {}
        self._rarity: list[int] = []  # by code: smaller is rarer
        frequency = Counter(token for text in corpus for token in set(rouge_tokens(text)))
        for rank, token in enumerate(sorted(frequency, key=lambda t: (frequency[t], t))):
            self._codes[token] = rank
            self._rarity.append(rank)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str) -> int:
        """Add a text to the pool; returns its position."""
        position = len(self.texts)
        if position == len(self._lengths):
            self._sequences, self._lengths, self._prefixes = (
                np.concatenate((a, np.zeros_like(a))) for a in (self._sequences, self._lengths, self._prefixes))
        elements, sequence = self._encode(text)
        prefix = prefix_length(len(sequence), self.threshold)
        for element in elements[:prefix]:
            self._postings.setdefault(element, array("q")).append(position)
        self._sequences[position], self._lengths[position], self._prefixes[position] = sequence, len(sequence), prefix
        self.texts.append(text)
        return position

    def most_similar(self, text: str, threshold: float | None = None) -> Match | None:
        """The pool text with the highest ROUGE-L F to ``text`` (the first added among equals),
        when that F is at least ``threshold`` (default: the index's); otherwise None."""
        threshold = self.threshold if threshold is None else threshold
        if threshold < self.threshold:
            raise ValueError(f"this index answers thresholds of at least {self.threshold}, not {threshold}")
        elements, query = self._encode(text)
        m, probe = len(query), prefix_length(len(query), threshold)
        lists = [self._postings[e] for e in elements[:probe] if e in self._postings]
        if not lists:
            return None
        candidates, shared = np.unique(np.concatenate([np.frombuffer(found, dtype=np.int64) for found in lists]),
                                       return_counts=True)
        lengths = self._lengths[candidates]
        shortest, longest = length_bounds(m, threshold)
        overlap_bound = shared + np.maximum(m - probe, lengths - self._prefixes[candidates])
        possible = (lengths >= shortest) & (lengths <= longest) & (
            overlap_bound >= np.ceil((threshold - SLACK) * (m + lengths) / 2))
        candidates, lengths = candidates[possible], lengths[possible]
        if not len(candidates):
            return None
        self.candidates_checked += len(candidates)
        lcs = process.cdist([query], self._sequences[candidates], scorer=LCSseq.similarity, dtype=np.int64)[0]
        scores = f_measure(lcs, m, lengths)
        best = int(np.argmax(scores))
        if scores[best] < threshold:
            return None
        position = int(candidates[best])
        return Match(float(scores[best]), position, self.texts[position])

    def too_similar(self, text: str) -> Match | None:
        """The most similar pool text when its F is above the index's threshold, the case in which
        Self-Instruct drops a new task (``if max(rouge_scores) > 0.7``); otherwise None."""
        match = self.most_similar(text)
        return match if match is not None and match.score > self.threshold else None

    def _encode(self, text: str) -> tuple[list[int], str]:
        """The text's elements (token, occurrence), rarest first, and its tokens as characters."""
        codes = [self._code(token) for token in rouge_tokens(text)]
        seen: dict[int, int] = {}
        keyed = []
        for code in codes:
            occurrence = seen.get(code, 0)
            seen[code] = occurrence + 1
            keyed.append((self._rarity[code], occurrence, (occurrence << _OCCURRENCE) | code))
        keyed.sort()
        return [element for _, _, element in keyed], "".join(map(chr, codes))

    def _code(self, token: str) -> int:
        """The token's code, given on first sight."""
        code = self._codes.get(token)
        if code is None:
            code = len(self._codes)
            if code > 0x10FFFF:
                raise ValueError("NoveltyIndex holds at most 1,114,112 distinct tokens (one Unicode code point each)")
            self._codes[token] = code
            self._rarity.append(-code)  # rarer than every corpus token; later tokens rarer still
        return code
