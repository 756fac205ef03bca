"""The shared text kernel of the operator families: text views of columns, tokens, n-gram
hashes and connected components. Every function here is vectorized over a batch of documents
(NumPy/Polars); none knows about nodes or the engine.
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


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijective, well-spread mix of uint64 values."""
    x = x.copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def prepared_texts(texts: pl.Series, shingle: str) -> pl.Series:
    """Texts as they are shingled: NFKC and lower case; for characters, whitespace runs as one space.

    For words, ASCII whitespace becomes a space (empty tokens are dropped later); NFKC and the
    Unicode whitespace pattern run only on the rows that need them (non-ASCII), which is most of
    the cost saved on English text.
    """
    texts = texts.fill_null("").str.to_lowercase()
    unicode_rows = texts.str.contains(r"[^\x00-\x7F]").to_numpy()
    if unicode_rows.any():
        index = np.flatnonzero(unicode_rows)
        fixed = texts.gather(index).str.normalize("NFKC").str.replace_all(r"\s+", " ")
        texts = texts.scatter(index, fixed)
    if shingle == "char":
        return texts.str.replace_all(r"\s+", " ").str.strip_chars()
    return texts.str.replace_many(dict.fromkeys(["\t", "\n", "\r", "\x0b", "\x0c"], " "))


def token_hashes(texts: pl.Series, shingle: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint64 hashes of every token of every (prepared) text, and the token count of each."""
    tokens = texts.str.split(" ") if shingle == "word" else texts.str.split("")
    flat = tokens.explode(empty_as_null=False)
    kept = (flat.str.len_bytes() > 0).fill_null(False).to_numpy()
    doc = np.repeat(np.arange(len(texts), dtype=np.int64), tokens.list.len().to_numpy())[kept]
    return flat.hash(seed=seed).to_numpy()[kept], np.bincount(doc, minlength=len(texts)).astype(np.int64)


def shingle_hashes(tokens: np.ndarray, lengths: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the ``ngram``-token windows of each document, and the shingle count of each.

    A document shorter than ``ngram`` tokens gives one shingle of all its tokens.
    """
    counts = np.where(lengths >= ngram, lengths - ngram + 1, np.minimum(lengths, 1))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    first = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    position = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - first, counts)
    # every full window of the flat token array, from contiguous slices (no gathers)
    padded = np.concatenate((tokens, np.zeros(ngram, dtype=np.uint64)))
    windows = np.zeros(len(tokens), dtype=np.uint64)
    for k in range(ngram):
        windows = windows * GOLDEN + padded[k:k + len(tokens)] + np.uint64(k + 1)
    combined = windows[position] if len(tokens) else np.empty(0, dtype=np.uint64)
    short = np.flatnonzero((lengths > 0) & (lengths < ngram))
    if len(short):  # the whole document as one shingle: the same hash as a window of its length
        at = first[short]
        whole = np.zeros(len(short), dtype=np.uint64)
        for k in range(ngram - 1):
            grown = whole * GOLDEN + padded[starts[short] + k] + np.uint64(k + 1)
            whole = np.where(k < lengths[short], grown, whole)
        combined[at] = whole
    return mix64(combined), counts


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
