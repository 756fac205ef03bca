"""Preference pairs from K scored candidates per prompt, in TRL's conversational DPO format."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflow.dtypes import NUMERIC
from dataflow.operator import Context, Kind, Operator, Result, rejects_frame
from dataflow.operators.selection.scores import CUT, CutOffCandidates
from dataflow.schemas import MESSAGES, prompt_turns

STRATEGIES = ("best_vs_worst", "best_vs_random_lower", "all_above_margin")
CUT_OFF = "cut off at max_tokens: never chosen"


@dataclass(frozen=True)
class PreferencePairs(CutOffCandidates, Operator):
    """Pairs candidates of the same ``group`` by ``score``: ``best_vs_worst``,
    ``best_vs_random_lower`` (seeded) or ``all_above_margin``.

    A pair needs ``chosen - rejected > min_margin``, so ties never pair; an unscored candidate
    (null or NaN score) or one without a response never pairs (metric ``unscored``). A candidate
    cut off at ``max_tokens`` is never chosen, only rejected (metric ``truncated``; its finish
    reason is read from ``<response>_finish_reason`` where the input has it, see
    ``CutOffCandidates``). With ``max_length_ratio`` a pair whose chosen response is more than that
    many times longer than the rejected one is dropped (length bias). Candidates left out of every
    pair go to rejects with the reason. Output: ``prompt``, ``chosen``, ``rejected`` (turn lists,
    loadable by TRL's DPOTrainer), ``chosen_score``, ``rejected_score``, ``margin``, ``prompt_id``,
    ``chosen_id``, ``rejected_id``; the pair's id is ``<chosen id>><rejected id>``.
    """

    score: str = "score"
    response: str = "response"
    prompt: str = "prompt"
    group: str = "prompt_id"
    strategy: str = "best_vs_worst"
    min_margin: float = 0.0
    max_length_ratio: float | None = None
    seed: int = 0
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "pairs"

    def check(self) -> list[str]:
        problems = [] if self.strategy in STRATEGIES else [f"strategy must be one of {STRATEGIES}"]
        if self.min_margin < 0:
            problems.append(f"min_margin must be >= 0, not {self.min_margin}")
        if self.max_length_ratio is not None and self.max_length_ratio < 1:
            problems.append(f"max_length_ratio must be >= 1, not {self.max_length_ratio}")
        return problems

    def default_finish_reason(self) -> str:
        return f"{self.response}_finish_reason"

    def required_columns(self) -> dict[str, Any]:
        return {self.score: NUMERIC, self.response: str, self.prompt: None, self.group: None,
                **self.finish_reason_columns()}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({"id": pl.String(), "prompt_id": pl.String(), "prompt": MESSAGES, "chosen": MESSAGES,
                          "rejected": MESSAGES, "chosen_score": pl.Float64(), "rejected_score": pl.Float64(),
                          "margin": pl.Float64(), "chosen_id": pl.String(), "rejected_id": pl.String()})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        score = pl.col(self.score).cast(pl.Float64).fill_nan(None)
        schema = frame.collect_schema()
        table = frame.select("id", self.group, self.prompt, self.response, score,
                             self.cut_off(schema).alias(CUT)).collect()
        ctx.record("unscored", table.get_column(self.score).null_count())
        if self.finish_reason_column(schema):
            ctx.record("truncated", table.get_column(CUT).sum())
        pairs, rejects = [], []
        for _, group in table.group_by(self.group, maintain_order=True):
            rows = sorted(group.to_dicts(), key=lambda r: (-(r[self.score] if r[self.score] is not None else
                                                             float("-inf")), r["id"]))
            made, why = self._pairs(rows, ctx)
            used = {p["chosen_id"] for p in made} | {p["rejected_id"] for p in made}
            pairs += made
            rejects += [{"id": r["id"], "reason": self._left_out(r, why), "score": r[self.score]}
                        for r in rows if r["id"] not in used]
        ctx.count("pairs", len(pairs))
        out = pl.DataFrame(pairs, schema=self.output_schema(table.schema))
        return Result(out, rejects_frame(rejects))

    def _left_out(self, row: dict, group_reason: str) -> str:
        """Why a candidate is in no pair: its own problem first, else why its group made none, else the strategy."""
        if row[self.score] is None:
            return "no score"
        if not row[self.response]:
            return "empty response"
        if row[CUT]:
            return CUT_OFF
        return group_reason or f"not paired by {self.strategy}"

    def _pairs(self, rows: list[dict], ctx: Context) -> tuple[list[dict], str]:
        """Pairs of one group, and why there are none when there are none."""
        scored = [r for r in rows if r[self.score] is not None and r[self.response]]
        if len(scored) < 2:
            return [], "fewer than two scored candidates"
        best = next((r for r in scored if not r[CUT]), None)
        if best is None:
            return [], "every scored candidate was cut off at max_tokens"
        if best[self.score] - scored[-1][self.score] <= self.min_margin:
            return [], ("tie: no two candidates differ by more than the margin" if best is scored[0] else
                        "tie: no candidate that was not cut off at max_tokens beats another by more than the margin")
        if self.strategy == "all_above_margin":
            candidates = [(a, b) for i, a in enumerate(scored) if not a[CUT] for b in scored[i + 1:]]
        elif self.strategy == "best_vs_worst":
            candidates = [(best, scored[-1])]
        else:
            lower = [r for r in scored if best[self.score] - r[self.score] > self.min_margin]
            rng = random.Random(f"{self.seed}:{best['id']}")
            candidates = [(best, rng.choice(lower))]
        pairs = []
        for chosen, rejected in candidates:
            margin = chosen[self.score] - rejected[self.score]
            if margin <= self.min_margin:
                continue
            chosen_length, rejected_length = len(chosen[self.response]), len(rejected[self.response])
            if self.max_length_ratio and chosen_length > self.max_length_ratio * rejected_length:
                ctx.count("dropped_for_length_bias")
                continue
            pairs.append(self._record(chosen, rejected, margin))
        return pairs, "dropped for length bias" if not pairs else ""

    def _record(self, chosen: dict, rejected: dict, margin: float) -> dict:
        return {"id": f"{chosen['id']}>{rejected['id']}", "prompt_id": str(chosen[self.group]),
                "prompt": prompt_turns(chosen[self.prompt]),
                "chosen": [{"role": "assistant", "content": chosen[self.response]}],
                "rejected": [{"role": "assistant", "content": rejected[self.response]}],
                "chosen_score": float(chosen[self.score]), "rejected_score": float(rejected[self.score]),
                "margin": float(margin), "chosen_id": chosen["id"], "rejected_id": rejected["id"]}


@dataclass(frozen=True)
class VerdictPairs(Operator):
    """Preference records from pairwise-judge verdicts (``a``, ``b`` or ``tie``): the winner is
    chosen, the other rejected; ties and missing verdicts go to rejects. Ids of the compared
    candidates, when given in ``a_id``/``b_id`` columns, are kept as ``chosen_id``/``rejected_id``."""

    prompt: str = "prompt"
    a: str = "response_a"
    b: str = "response_b"
    verdict: str = "verdict"
    a_id: str | None = None
    b_id: str | None = None
    kind = Kind.ROW

    def label(self) -> str:
        return "verdict_pairs"

    def required_columns(self) -> dict[str, Any]:
        ids = {c: None for c in (self.a_id, self.b_id) if c}
        return {self.prompt: None, self.a: str, self.b: str, self.verdict: str, **ids}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        scored = PreferencePairs().output_schema(schema)
        return pl.Schema({k: v for k, v in scored.items() if k not in ("chosen_score", "rejected_score", "margin")})

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        pairs, rejects = [], []
        for row in table.iter_rows(named=True):
            if row[self.verdict] not in ("a", "b"):
                rejects.append({"id": row["id"], "reason": "tie" if row[self.verdict] == "tie" else "no verdict"})
                continue
            win, lose = (self.a, self.b) if row[self.verdict] == "a" else (self.b, self.a)
            win_id, lose_id = (self.a_id, self.b_id) if row[self.verdict] == "a" else (self.b_id, self.a_id)
            chosen_id = str(row[win_id]) if win_id else f"{row['id']}/{row[self.verdict]}"
            rejected_id = str(row[lose_id]) if lose_id else f"{row['id']}/{'b' if row[self.verdict] == 'a' else 'a'}"
            pairs.append({"id": f"{chosen_id}>{rejected_id}", "prompt_id": row["id"],
                          "prompt": prompt_turns(row[self.prompt]),
                          "chosen": [{"role": "assistant", "content": row[win]}],
                          "rejected": [{"role": "assistant", "content": row[lose]}],
                          "chosen_id": chosen_id, "rejected_id": rejected_id})
        ctx.count("pairs", len(pairs))
        return Result(pl.DataFrame(pairs, schema=self.output_schema(table.schema)), rejects_frame(rejects))
