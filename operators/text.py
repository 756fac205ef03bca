"""The shared text kernel of the operator families: text views of columns, normalized texts,
tokens, n-gram hashes and connected components. Every function here is vectorized over a batch of
documents (NumPy/Polars); none knows about nodes or the engine.

Documents are held as one flat token array with a length per document; ``ngram_hashes`` is the one
place that turns it into n-grams, so no operator can let one document's n-grams run into the next.
"""

from __future__ import annotations

import numpy as np
import polars as pl

KEEP_RULES = ("lowest_id", "longest", "highest_score")
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def column_text(name: str, dtype: pl.DataType, roles: tuple[str, ...] = ()) -> pl.Expr:
    """A string view of a column: strings as they are, conversations as 'role: content' lines
    (with ``roles``, only the content of those turns, e.g. ``("assistant",)``), other nested
    values as JSON."""
    if dtype == pl.String():
        return pl.col(name)
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        if roles:
            chosen = pl.element().filter(pl.element().struct.field("role").is_in(list(roles)))
            return pl.col(name).list.eval(chosen.struct.field("content")).list.join("\n")
        turn = pl.concat_str(pl.element().struct.field("role"), pl.lit(": "),
                             pl.element().struct.field("content"))
        return pl.col(name).list.eval(turn).list.join("\n")
    if isinstance(dtype, (pl.Struct, pl.List, pl.Array)):
        return pl.struct(pl.col(name)).struct.json_encode()
    return pl.col(name).cast(pl.String)


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
    for k in range(n):
        windows = windows * GOLDEN + padded[k:k + len(tokens)] + np.uint64(k + 1)
    combined = windows[position] if len(tokens) else np.empty(0, dtype=np.uint64)
    short = np.flatnonzero((lengths > 0) & (lengths < n)) if short_as_whole else np.empty(0, dtype=np.int64)
    if len(short):  # the whole document as one window: the hash of a window of its length
        whole = np.zeros(len(short), dtype=np.uint64)
        for k in range(n - 1):
            grown = whole * GOLDEN + padded[starts[short] + k] + np.uint64(k + 1)
            whole = np.where(k < lengths[short], grown, whole)
        combined[first[short]] = whole
    return mix64(combined), counts, position


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
