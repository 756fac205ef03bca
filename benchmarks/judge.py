"""Judge reliability on a labelled set (issue 5). Run: python benchmarks/judge.py [--model local] [--limit 60]

pipelines/data/judge_pairs.jsonl holds 60 (prompt, good, bad) pairs, the bad answer a corrupted
copy of the good one. The pointwise judge ranks a pair right when it scores good above bad; the
pairwise judge when its verdict (both orders must agree) picks good. Half the pairs show the
good answer second, so position bias cannot pass for accuracy. Also reported: the share of
invalid judge replies (retried, then rejected) and the pairwise judge's position bias.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results import write_section  # noqa: E402

from dataflow import Pipeline  # noqa: E402
from dataflow.build import build  # noqa: E402
from dataflow.catalog import query  # noqa: E402
from dataflow.operators import JudgeScore, PairwiseJudge  # noqa: E402
from dataflow.progress import Progress  # noqa: E402

PAIRS = HERE.parent / "pipelines" / "data" / "judge_pairs.jsonl"


def metrics(out: Path, node: str) -> dict:
    return json.loads(query(out, f"select metrics from nodes where name = '{node}'")["metrics"][0])


def run(model: str, limit: int, out: Path) -> dict:
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines()][:limit]
    single = [{"id": f"{p['id']}/{side}", "pair": p["id"], "side": side, "prompt": p["prompt"], "response": p[side]}
              for p in pairs for side in ("good", "bad")]
    duels = [{"id": p["id"], "prompt": p["prompt"], "good_is_a": i % 2 == 0,
              "response_a": p["good"] if i % 2 == 0 else p["bad"], "response_b": p["bad"] if i % 2 == 0 else p["good"]}
             for i, p in enumerate(pairs)]
    p = Pipeline("judge_bench")
    p.output("scores", p.from_rows(single, name="single").apply(JudgeScore(models=(model,)), name="pointwise"))
    p.output("verdicts", p.from_rows(duels, name="duels").apply(PairwiseJudge(models=(model,)), name="pairwise"))
    started = time.perf_counter()
    build(p, out, Progress(io.StringIO()))
    seconds = time.perf_counter() - started

    kinds = {p["id"]: p["corruption"] for p in pairs}
    scores = pl.read_parquet(out / "scores" / "data.parquet").select("pair", "side", "score")
    wide = pl.DataFrame({"pair": list(kinds)}).join(
        scores.pivot(on="side", index="pair", values="score"), on="pair", how="left")
    for side in ("good", "bad"):
        if side not in wide.columns:
            wide = wide.with_columns(pl.lit(None, pl.Float64).alias(side))
    wide = wide.with_columns(kind=pl.col("pair").replace_strict(kinds),
                             right=(pl.col("good") > pl.col("bad")).fill_null(False),
                             tie=(pl.col("good") == pl.col("bad")).fill_null(False),
                             unscored=pl.col("good").is_null() | pl.col("bad").is_null())
    verdicts = pl.read_parquet(out / "verdicts" / "data.parquet")
    judged = pl.DataFrame({"id": list(kinds)}).join(verdicts.select("id", "verdict", "good_is_a"), on="id", how="left")
    judged = judged.with_columns(
        kind=pl.col("id").replace_strict(kinds),
        right=((pl.col("verdict") == "a") & pl.col("good_is_a") | (pl.col("verdict") == "b") & ~pl.col("good_is_a"))
        .fill_null(False), tie=(pl.col("verdict") == "tie").fill_null(False), unjudged=pl.col("verdict").is_null())
    point_m, pair_m = metrics(out, "pointwise"), metrics(out, "pairwise")
    by_kind = {kind: (wide.filter(pl.col("kind") == kind)["right"].mean(),
                      judged.filter(pl.col("kind") == kind)["right"].mean()) for kind in sorted(set(kinds.values()))}
    return {
        "pairs": len(pairs), "seconds": seconds,
        "point_right": wide["right"].mean(), "point_tie": wide["tie"].mean(), "point_unscored": wide["unscored"].mean(),
        "point_invalid": point_m.get("judge_invalid_replies", 0) / max(point_m.get("judge_replies", 1), 1),
        "pair_right": judged["right"].mean(), "pair_tie": judged["tie"].mean(), "pair_unjudged": judged["unjudged"].mean(),
        "pair_invalid": pair_m.get("judge_invalid_replies", 0) / max(pair_m.get("judge_replies", 1), 1),
        "position_bias_first": pair_m.get("position_bias_first"), "consistent": pair_m.get("consistent_share"),
        "by_kind": by_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="local")
    parser.add_argument("--limit", type=int, default=60)
    args = parser.parse_args()
    out = HERE / "data" / "judge_out"
    shutil.rmtree(out, ignore_errors=True)
    r = run(args.model, args.limit, out)
    pct = lambda x: "-" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; judge model `{args.model}`. Date: "
        f"{time.strftime('%Y-%m-%d')}. Command: `python benchmarks/judge.py --model {args.model} --limit {args.limit}`. "
        f"{r['pairs']} labelled pairs from pipelines/data/judge_pairs.jsonl; one build ({r['seconds']:.0f} s, cold "
        f"request cache). A pair counts as wrong when it is tied or could not be judged.", "",
        "| judge | ranked right | tie | no valid reply | invalid replies | position bias (first) | both orders agree |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| pointwise (1-10, greedy, 3 attempts) | {pct(r['point_right'])} | {pct(r['point_tie'])} | "
        f"{pct(r['point_unscored'])} | {pct(r['point_invalid'])} | | |",
        f"| pairwise (both orders) | {pct(r['pair_right'])} | {pct(r['pair_tie'])} | {pct(r['pair_unjudged'])} | "
        f"{pct(r['pair_invalid'])} | {pct(r['position_bias_first'])} | {pct(r['consistent'])} |", "",
        "| corruption | pointwise right | pairwise right |", "| --- | --- | --- |",
        *[f"| {kind} | {pct(a)} | {pct(b)} |" for kind, (a, b) in r["by_kind"].items()],
    ]
    body = "\n".join(lines)
    write_section(f"judge-{args.model.split(':')[0]}", f"Judge reliability, model `{args.model}` (issue 5)", body)


if __name__ == "__main__":
    main()
