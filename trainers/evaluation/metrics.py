"""The measures of an evaluation, computed from the rows its build stored (plain numbers in, plain
numbers out): pass@k, format correctness, pairwise win rate, KL and distinct-2, with percentile
bootstrap intervals where a value is a mean over independent units (prompts, pairs, samples)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import polars as pl

from dataflow.operators.text import distinct_n
from dataflow.trainers.rewards import NO_ANSWER

CONFIDENCE = 0.95
RESAMPLES = 2000
_CHUNK = 250  # resamples drawn at once: memory is _CHUNK x units
VERDICT_SCORES = {"a": 1.0, "tie": 0.5, "b": 0.0}  # the evaluated model is response a


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from ``n`` samples of which ``c`` are correct (Chen et al.
    2021): 1 - C(n-c, k) / C(n, k), the chance that k of the n samples drawn without replacement hold
    a correct one; a product of ratios, so a large n does not overflow."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 < k <= n and 0 <= c <= n, not n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def bootstrap_interval(values: Sequence[float], weights: Sequence[float] | None = None,
                       seed: int = 0) -> list[float] | None:
    """The 95% percentile bootstrap interval of ``sum(values) / sum(weights)`` (the mean without
    weights): the units are resampled with replacement ``RESAMPLES`` times with a seeded generator,
    so the same values give the same interval. None without units. With few units the interval is
    too narrow (a mean of all zeros gives [0, 0]): read it with the unit count beside it."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, RESAMPLES, _CHUNK):
        picks = rng.integers(0, x.size, size=(min(_CHUNK, RESAMPLES - start), x.size))
        stats.append(x[picks].sum(1) / w[picks].sum(1))
    low, high = np.quantile(np.concatenate(stats), [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return [_round(low), _round(high)]


def pass_metrics(graded: pl.DataFrame, k: int) -> dict[str, dict[str, Any]]:
    """pass@1 (the mean over prompts of each prompt's share of correct samples) and pass@k (the
    unbiased estimator per prompt, averaged), each with a bootstrap interval over prompts. A sample
    whose check could not finish (a null reward) counts as not correct and is counted ``unverified``."""
    per_prompt = graded.group_by("prompt_id").agg(
        n=pl.len(), c=(pl.col("correct") > 0).sum(), unverified=pl.col("correct").is_null().sum()).sort("prompt_id")
    n, c = per_prompt["n"].to_list(), per_prompt["c"].to_list()
    prompts, samples = per_prompt.height, min(n, default=0)
    found: dict[str, dict[str, Any]] = {}
    for at in sorted({1, k}):
        scores = [pass_at_k(ni, ci, at) for ni, ci in zip(n, c)]
        found[f"pass@{at}"] = {"value": _mean(scores), "ci95": bootstrap_interval(scores), "prompts": prompts,
                               "samples": samples}
    found["pass@1"]["unverified"] = int(per_prompt["unverified"].sum())
    return found


def format_metric(samples: pl.DataFrame) -> dict[str, Any]:
    """Format correctness: the share of generations that finished (ended by the model, not cut by
    ``max_tokens``) and, where a verifier checked them, in which it found an answer (its detail is
    none of ``NO_ANSWER``); an empty response has no answer."""
    finished = samples["response_finish_reason"] == "stop"
    answered = samples["response"].fill_null("").str.strip_chars() != ""
    found = {"generations": samples.height, "finished": _mean(finished.to_list())}
    if "correct_detail" in samples.columns:
        answered = answered & ~samples["correct_detail"].is_in(sorted(NO_ANSWER)).fill_null(False)
        found["answer_found"] = _mean(answered.to_list())
    return {"value": _mean((finished & answered).to_list()), **found}


def win_rate_metric(verdicts: pl.DataFrame, judge_metrics: dict[str, Any]) -> dict[str, Any]:
    """The evaluated model's win rate over the pairs: 1 for a win, 0 for a loss, 1/2 for a tie (a tie
    is also two orders that disagree), with a bootstrap interval over pairs; ``p_win`` is the mean of
    the judge's own probability that the model's response is better (both orders averaged), where
    the backend gave token probabilities."""
    verdict = verdicts["verdict"].to_list()
    probabilities = verdicts["verdict_p_a"].drop_nulls().to_list()
    scores = [VERDICT_SCORES[v] for v in verdict]
    return {"value": _mean(scores), "ci95": bootstrap_interval(scores), "pairs": len(verdict),
            "wins": verdict.count("a"), "losses": verdict.count("b"), "ties": verdict.count("tie"),
            "p_win": _mean(probabilities), "position_bias_first": judge_metrics.get("position_bias_first"),
            "consistent_share": judge_metrics.get("consistent_share")}


def kl_metric(kl: pl.DataFrame) -> dict[str, Any]:
    """KL(model || reference) in nats: per token (all samples' KL over all their tokens) with a
    bootstrap interval over samples, and per sequence (the mean of each sample's KL)."""
    values, tokens = kl["kl"].to_list(), kl["kl_tokens"].to_list()
    per_token = sum(values) / sum(tokens) if sum(tokens) else None
    return {"per_token": None if per_token is None else _round(per_token),
            "ci95": bootstrap_interval(values, tokens) if sum(tokens) else None,
            "per_sequence": _mean(values), "samples": len(values), "tokens": int(sum(tokens))}


def distinct_metric(responses: pl.DataFrame) -> dict[str, Any]:
    """Distinct-2 of the model's responses, one per prompt: distinct word bigrams over all word
    bigrams (``dataflow.operators.text.distinct_n``)."""
    value = distinct_n(responses["response"], 2)
    return {"value": None if value is None else _round(value), "responses": responses.height}


def _mean(values: Sequence[float | bool]) -> float | None:
    return _round(sum(values) / len(values)) if len(values) else None


def _round(value: float) -> float:
    return round(float(value), 4)
