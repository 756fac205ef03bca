"""Judge reliability on a labelled set (issues 5 and 19), before and after, on the local model and
through a real OpenAI-compatible server, in one table.

    python benchmarks/judge.py --path local            # the transformers backend, in process
    python benchmarks/judge.py --path server           # llama.cpp's server (llama-cpp-python[server])
                                                       # on the packaged GGUF, started on 127.0.0.1
    python benchmarks/judge.py --path server --label before   # with an older dataflow first on the path
    python benchmarks/judge.py --redraw                # the section again, from the kept runs

pipelines/data/judge_pairs.jsonl holds 60 (prompt, good, bad) pairs, the bad answer a corrupted
copy of the good one. The pointwise judge ranks a pair right when it scores good above bad; the
pairwise judge when its verdict (both orders must agree) picks good, or, weighted, when its
probability of the good answer (mean of both orders) is above one half. Half the pairs show the
good answer second, so position bias cannot pass for accuracy. Also reported: the share of
invalid judge replies (retried, then rejected), ties and the pairwise judge's position bias.
Each run's figures are kept in benchmarks/judge_runs/<label>-<path>.json (the dataflow code that
ran is the label's; committed, so one run can be redone alone), and the section shows every kept run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results import load, machine, settle, threads, write_section  # noqa: E402

import dataflow  # noqa: E402
from dataflow import Pipeline  # noqa: E402
from dataflow.build import build  # noqa: E402
from dataflow.catalog import query  # noqa: E402
from dataflow.operators import JudgeScore, PairwiseJudge  # noqa: E402
from dataflow.progress import Progress  # noqa: E402

PAIRS = HERE.parent / "pipelines" / "data" / "judge_pairs.jsonl"
RUNS = HERE / "judge_runs"


def metrics(out: Path, node: str) -> dict:
    value = query(out, f"select metrics from nodes where name = '{node}'")["metrics"][0]
    return json.loads(value) if isinstance(value, str) else value  # older code's catalog gives JSON text


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
    if "verdict_p_a" not in verdicts.columns:  # code from before the weighted verdicts
        verdicts = verdicts.with_columns(verdict_p_a=pl.lit(None, pl.Float64))
    judged = pl.DataFrame({"id": list(kinds)}).join(
        verdicts.select("id", "verdict", "verdict_p_a", "good_is_a"), on="id", how="left")
    p_good = pl.when(pl.col("good_is_a")).then(pl.col("verdict_p_a")).otherwise(1 - pl.col("verdict_p_a"))
    judged = judged.with_columns(
        kind=pl.col("id").replace_strict(kinds),
        right=((pl.col("verdict") == "a") & pl.col("good_is_a") | (pl.col("verdict") == "b") & ~pl.col("good_is_a"))
        .fill_null(False), tie=(pl.col("verdict") == "tie").fill_null(False), unjudged=pl.col("verdict").is_null(),
        weighted_right=(p_good > 0.5).fill_null(False), weighted_tie=(p_good == 0.5).fill_null(False))
    point_m, pair_m = metrics(out, "pointwise"), metrics(out, "pairwise")
    weighted = verdicts["verdict_p_a"].null_count() < verdicts.height
    return {
        "model": model, "pairs": len(pairs), "seconds": round(seconds, 1),
        "point_right": wide["right"].mean(), "point_tie": wide["tie"].mean(), "point_unscored": wide["unscored"].mean(),
        "point_invalid": point_m.get("judge_invalid_replies", 0) / max(point_m.get("judge_replies", 1), 1),
        "pair_right": judged["right"].mean(), "pair_tie": judged["tie"].mean(), "pair_unjudged": judged["unjudged"].mean(),
        "pair_weighted_right": judged["weighted_right"].mean() if weighted else None,
        "pair_weighted_tie": judged["weighted_tie"].mean() if weighted else None,
        "pair_invalid": pair_m.get("judge_invalid_replies", 0) / max(pair_m.get("judge_replies", 1), 1),
        "position_bias_first": pair_m.get("position_bias_first"), "consistent": pair_m.get("consistent_share"),
        "fallbacks": point_m.get("fallbacks"),
        "by_kind": {kind: (wide.filter(pl.col("kind") == kind)["right"].mean(),
                           judged.filter(pl.col("kind") == kind)["right"].mean()) for kind in sorted(set(kinds.values()))},
    }


@contextmanager
def llama_server(threads: int):
    """llama.cpp's OpenAI-compatible server (llama-cpp-python) on the packaged GGUF, on a free port."""
    from dataflow.llm.convert import default_gguf

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_gguf()), "--model_alias", "smollm",
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads),
               "--chat_format", "chatml"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("llama.cpp's server did not start: pip install 'llama-cpp-python[server]'")
            time.sleep(0.5)
        yield f"openai:{url}#smollm"
    finally:
        server.terminate()
        server.wait()


def percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def table(runs: list[dict]) -> list[str]:
    lines = ["| run | judge | ranked right | ranked right, weighted | tie | no valid reply | invalid replies | "
             "position bias (first) | both orders agree | build s |", "| --- " * 10 + "|"]
    for r in runs:
        name = f"{r['label']}, {r['path']}"
        lines.append(f"| {name} | pointwise 1-10 | {percent(r['point_right'])} | | {percent(r['point_tie'])} | "
                     f"{percent(r['point_unscored'])} | {percent(r['point_invalid'])} | | | {r['seconds']:.0f} |")
        lines.append(f"| {name} | pairwise, both orders | {percent(r['pair_right'])} | {percent(r['pair_weighted_right'])} | "
                     f"{percent(r['pair_tie'])} | {percent(r['pair_unjudged'])} | {percent(r['pair_invalid'])} | "
                     f"{percent(r['position_bias_first'])} | {percent(r['consistent'])} | |")
    return lines


def code_version() -> str:
    """The commit of the dataflow code this process imports, marked when its files differ from it."""
    root = Path(dataflow.__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True).stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no", "--", "dataflow", "operators", "schemas")
    return f"{git('rev-parse', '--short', 'HEAD')}{' with uncommitted changes' if changed else ''} ({root})"


def record(args: argparse.Namespace) -> None:
    """Run the judges once and keep the run's figures in RUNS."""
    out = HERE / "data" / "judge_out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.environ["DATAFLOW_LLM_CACHE"] = str(out / "llm_cache.sqlite")  # a cold request cache
    os.environ["DATAFLOW_TORCH_THREADS"] = str(args.threads)  # not the cores minus the load at the start
    settle()
    load_before = load()
    if args.path == "server":
        with llama_server(args.threads) as model:
            result = run(model, args.limit, out)
    else:
        result = run("local", args.limit, out)
    engine = "torch" if args.path == "local" else "llama.cpp server"
    result.update(label=args.label, path=args.path, load=f"{load_before} before, {load()} after",
                  threads=f"{args.threads} ({engine}); {threads()}", command=f"python {' '.join(sys.argv)}",
                  code=code_version(), machine=machine(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"{args.label}-{args.path}.json").write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", choices=("local", "server"), default="local")
    parser.add_argument("--label", default="after", help="names the dataflow code that runs (e.g. before, after)")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2, help="threads of the model: torch's (local) or the server's")
    parser.add_argument("--redraw", action="store_true", help="only rewrite the section from the kept runs")
    args = parser.parse_args()
    if not args.redraw:
        record(args)
    runs = sorted((json.loads(f.read_text()) for f in RUNS.glob("*.json")),
                  key=lambda r: (r["path"], r["label"] != "before"))
    lines = [f"- {runs[0]['pairs']} labelled pairs from pipelines/data/judge_pairs.jsonl, cold request cache; `local` is "
             f"the transformers backend, `server` llama.cpp's server (llama-cpp-python) on the packaged GGUF. "
             f"A pair counts as wrong when it is tied or could not be judged. Build seconds are wall time and depend "
             f"on the load (quality figures do not).",
             *[f"- {r['label']}, {r['path']}: {r['date']}, `{r['command']}`, dataflow {r['code']}, "
               f"model `{r['model']}`; machine: {r['machine']}; threads: {r['threads']}; load {r['load']}"
               + (f"; fallback: {r['fallbacks']}" if r.get("fallbacks") else "") for r in runs], "", *table(runs), "",
             "| corruption | " + " | ".join(f"{r['label']}, {r['path']}: pointwise / pairwise" for r in runs) + " |",
             "| --- " * (len(runs) + 1) + "|"]
    for kind in runs[0]["by_kind"]:
        lines.append(f"| {kind} | " + " | ".join(f"{percent(r['by_kind'][kind][0])} / {percent(r['by_kind'][kind][1])}"
                                                for r in runs) + " |")
    write_section("judge", "Judge reliability before and after structured output (issues 5, 19)", "\n".join(lines))


if __name__ == "__main__":
    main()
