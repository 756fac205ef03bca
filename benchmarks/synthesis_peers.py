"""Self-Instruct and Evol-Instruct: dataflow's operators against distilabel's tasks, on the same model,
the same seeds and the same number of model calls.

    # prepare (once): distilabel 1.5.3 only adds packages to the main venv (nest-asyncio, pathlib-abc,
    # portalocker, tblib, universal-pathlib), it changes none, so it goes there (extra `bench-synth`)
    .venv/bin/pip install 'distilabel>=1.5,<1.6'     # the extra: .venv/bin/pip install -e '.[bench-synth]'
    # run (defaults --calls 16 --repeats 1: about 10 minutes on 2 cores at load 3, less when idle)
    .venv/bin/python benchmarks/synthesis_peers.py
    .venv/bin/python benchmarks/synthesis_peers.py --calls 6 --settle 0 --no-record   # smoke run, prints only

Model: the default SmolLM2-135M-Instruct directory (``ensure_default_model``), float32 on CPU, both
sides in this one process, with the same torch threads (--threads, default what the transformers
backend would take now), loaded once before timing; nothing is downloaded. Repeats alternate which
side runs first; with --repeats > 1 the table shows medians.

Self-Instruct, --calls model calls each. dataflow: ``SelfInstruct(instances=False)`` in its default
style (``list``: the model continues a numbered list) and in ``style="json"``, each in a Pipeline
built into a temp dir with a fresh request cache ($DATAFLOW_LLM_CACHE), ``prompts_per_round`` x
``max_rounds`` = calls (8 prompts a round where calls allow), its default ``per_prompt``, ``target`` and
``min_new`` out of the way so every round runs, ``max_attempts=--attempts`` (default 1, so no retry
spends calls beyond the budget; the operator's default is 3); its calls are the node's ``llm_calls``
metric in the build records. distilabel: ``distilabel.steps.tasks.SelfInstruct`` (default template
and criteria, ``num_instructions`` = dataflow's ``per_prompt``) on ``distilabel.models.TransformersLLM``,
used standalone as its
docstring shows (``load()``, ``next(process(inputs))``); call k's ``input`` is the seed tasks
that dataflow's prompt k showed (the same seeded sample), one per line. Its calls are counted in a
subclass of TransformersLLM (inputs x num_generations per ``generate``).

Evol-Instruct, --calls model calls each, --generations G. dataflow's ``EvolInstruct`` makes up to 3
calls per lineage and generation (rewrite, information-gain check, response; a rejected rewrite
skips the other two, a rewrite judged equal to its parent the response), so it gets calls // (3 G)
seeds; distilabel's ``EvolInstruct``
(``num_evolutions=G``, ``store_evolutions=True``, ``generate_answers=True``, default mutation
templates) makes 2 (rewrite, answer) and gets calls // (2 G) seeds. Both take the first seeds of
pipelines/data/seed_tasks.jsonl, so distilabel's are a superset of ours.

Sampling: dataflow's operator defaults (``SI_SAMPLING``, ``EVOL_SAMPLING``; Evol-Instruct's responses
get ``response_tokens``, its check temperature 0 and 16 tokens) and the same temperature, top_p and token budget for distilabel, whose single
``generation_kwargs`` serve rewrites and answers alike (so its answers get 384), with
``repetition_penalty=1.0`` and ``top_k=0`` (dataflow's sampler has neither; distilabel's default
penalty is 1.1). dataflow's json style and Evol-Instruct decode under a JSON schema (constrained
decoding); dataflow batches 32 sequences;
distilabel's TransformersLLM has no structured output by default and its HF pipeline generates one
prompt at a time.

Metrics per contender: kept = the instructions the contender outputs (distilabel: every non-empty
line of a reply, as its ``format_output`` splits them; dataflow: its kept rows); distinct = after
exact dedup on normalized text (NFKC, lower case, word characters only); distinct per 100 counted
model calls; exact-duplicate share = 1 - distinct / kept; near-duplicate share = the share of the
distinct instructions that dataflow's ``MinHashDedup`` (word 3-grams, 128 permutations, Jaccard 0.8,
exact verification of LSH candidates) would drop; pairs >= 0.8 = pairs of distinct instructions whose
exact Jaccard of word 3-gram shingle sets is at least 0.8, over all pairs (so no LSH miss hides one);
wall time of the generation only (a build for dataflow, ``process`` for distilabel). Two post-hoc
checks, run on both sides alike: Self-Instruct's filters as dataflow's operator runs them (4 to 150
words, no blacklisted word, no leading punctuation or non-ASCII, ROUGE-L <= 0.7 against the seeds and
every instruction kept before it) and, for Evol-Instruct, evolved instructions that copy the
rewriting prompt's words or equal their parent. --dump FILE writes every contender's instructions.
Results go to benchmarks/RESULTS.md between the ``synthesis-peers`` markers unless --no-record.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import re
import statistics
import sys
import tempfile
import time
import unicodedata
import warnings
from itertools import combinations, pairwise
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results import load, run_facts, settle, write_section  # noqa: E402

from dataflow.operators.generation.evol import EvolInstruct as DataflowEvolInstruct  # noqa: E402
from dataflow.operators.generation.self_instruct import SelfInstruct as DataflowSelfInstruct  # noqa: E402

SEEDS = HERE.parent / "pipelines" / "data" / "seed_tasks.jsonl"
THRESHOLD, NGRAM, NUM_PERM = 0.8, 3, 128
# tasks shown and asked per prompt: dataflow's SelfInstruct defaults, both sides
SEED_EXAMPLES, PER_PROMPT = DataflowSelfInstruct().seed_examples, DataflowSelfInstruct().per_prompt
SHOWN = SEED_EXAMPLES + DataflowSelfInstruct().generated_examples  # round 1 fills the generated tasks' slots with seeds
CONTENDERS = {"self_instruct": ("dataflow", "dataflow (paper's header)", "dataflow (json)", "distilabel"),
              "evol_instruct": ("dataflow", "distilabel")}
PAPER_HEADER = "Come up with a series of tasks:"
SI_SAMPLING = {"temperature": DataflowSelfInstruct().temperature, "top_p": DataflowSelfInstruct().top_p,
               "max_new_tokens": DataflowSelfInstruct().max_tokens}  # dataflow's defaults, given to both sides
EVOL_SAMPLING = {"temperature": DataflowEvolInstruct().temperature, "top_p": DataflowEvolInstruct().top_p,
                 "max_new_tokens": DataflowEvolInstruct().max_tokens}


def seed_tasks() -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in SEEDS.read_text().splitlines() if line.strip()]
    return [(row["id"], row["instruction"].strip()) for row in rows if row["instruction"].strip()]


def si_shape(calls: int) -> tuple[int, int]:
    """(prompts per round, rounds) with their product = calls, at most 8 prompts a round."""
    per_round = max(d for d in range(1, min(8, calls) + 1) if calls % d == 0)
    return per_round, calls // per_round


def shown_seeds(seeds: list[tuple[str, str]], seed: int, round_: int, prompt: int) -> list[str]:
    """The seed tasks dataflow's SelfInstruct shows in prompt ``prompt`` of round ``round_`` (its
    seeded sample, drawn before any generated task: all SHOWN in round 1, SEED_EXAMPLES once two
    tasks are kept)."""
    chooser = random.Random(f"{seed}/{round_}/{prompt}")
    return [text for _, text in chooser.sample(seeds, min(SHOWN if round_ == 1 else SEED_EXAMPLES, len(seeds)))]


# -- dataflow -------------------------------------------------------------------------------------------

def node_metrics(out: Path, node: str) -> dict:
    from dataflow.catalog import query

    return query(out, f"select metrics from nodes where name = '{node}'")["metrics"][0]


def run_dataflow(task: str, args, repeat: int, spec: str, side: str) -> dict:
    from dataflow.operators import EvolInstruct, SelfInstruct

    from dataflow import Pipeline
    from dataflow.build import build
    from dataflow.progress import Progress

    seeds = seed_tasks()
    with tempfile.TemporaryDirectory(prefix="synthesis_peers_") as tmp:
        os.environ["DATAFLOW_LLM_CACHE"] = str(Path(tmp) / "llm_cache.sqlite")  # cold: every call is real
        out = Path(tmp) / "out"
        p = Pipeline(f"synthesis_peers_{task}")
        if task == "self_instruct":
            per_round, rounds = si_shape(args.calls)
            variant = {"dataflow (json)": {"style": "json"}, "dataflow (paper's header)": {"header": PAPER_HEADER}}
            options = variant.get(side, {})
            op = SelfInstruct(model=spec, **options, instances=False, target=10**6, min_new=0,
                              per_prompt=PER_PROMPT, prompts_per_round=per_round, max_rounds=rounds, seed_examples=SEED_EXAMPLES,
                              max_attempts=args.attempts, seed=repeat)
            source = p.from_rows([{"id": i, "instruction": t} for i, t in seeds], name="seeds")
            units = f"{per_round} prompts x {rounds} rounds"
        else:
            count = args.calls // (3 * args.generations)
            op = EvolInstruct(model=spec, generations=args.generations, max_attempts=args.attempts, seed=repeat)
            source = p.from_rows([{"id": i, "instruction": t} for i, t in seeds[:count]], name="seeds")
            units = f"{count} seeds"
        parents: dict[str, str] = {}
        p.output("generated", source.apply(op, name="gen"))
        started = time.perf_counter()
        build(p, out, Progress(io.StringIO()))
        seconds = time.perf_counter() - started
        metrics = node_metrics(out, "gen")
        frame = pl.read_parquet(out / "generated" / "data.parquet")
        if task == "evol_instruct":
            known = dict(seeds) | dict(zip(frame["id"], frame["instruction"]))
            parents = {text: known.get(parent, "") for text, parent in zip(frame["instruction"], frame["parent_id"])}
        texts = [t.strip() for t in frame["instruction"].to_list() if t and t.strip()]
    return {"texts": texts, "calls": int(metrics.get("llm_calls", 0)), "tokens_out": int(metrics.get("tokens_out", 0)),
            "seconds": seconds, "parents": parents, "units": units}


# -- distilabel -----------------------------------------------------------------------------------------

_DISTILABEL: dict = {}


def distilabel_llm(model_dir: Path):
    """One TransformersLLM subclass that counts what it is asked (inputs x generations, tokens)."""
    if "class" not in _DISTILABEL:
        from distilabel.models import TransformersLLM
        from pydantic import PrivateAttr

        class CountingTransformersLLM(TransformersLLM):
            _calls: int = PrivateAttr(default=0)
            _tokens_out: int = PrivateAttr(default=0)

            def generate(self, inputs, num_generations: int = 1, **kwargs):  # type: ignore[override]
                self._calls += len(inputs) * num_generations
                result = super().generate(inputs=inputs, num_generations=num_generations, **kwargs)
                self._tokens_out += sum(sum(r["statistics"]["output_tokens"]) for r in result)
                return result

        _DISTILABEL["class"] = CountingTransformersLLM
    return _DISTILABEL["class"](model=str(model_dir), device="cpu", torch_dtype="float32")


def run_distilabel(task: str, args, repeat: int, model_dir: Path) -> dict:
    import torch
    from distilabel.steps.tasks import EvolInstruct, SelfInstruct

    seeds = seed_tasks()
    llm = distilabel_llm(model_dir)
    sampling = {**(SI_SAMPLING if task == "self_instruct" else EVOL_SAMPLING), "repetition_penalty": 1.0, "top_k": 0}
    llm.generation_kwargs = sampling
    parents: dict[str, str] = {}
    if task == "self_instruct":
        per_round, rounds = si_shape(args.calls)
        step = SelfInstruct(llm=llm, num_instructions=PER_PROMPT)
        inputs = [{"input": "\n".join(shown_seeds(seeds, repeat, r, i))}
                  for r in range(1, rounds + 1) for i in range(per_round)]
        units = f"{len(inputs)} prompts"
    else:
        count = args.calls // (2 * args.generations)
        step = EvolInstruct(llm=llm, num_evolutions=args.generations, store_evolutions=True, generate_answers=True)
        inputs = [{"instruction": text} for _, text in seeds[:count]]
        units = f"{count} seeds"
    step.load()  # the model (again), untimed
    llm._calls = llm._tokens_out = 0
    torch.manual_seed(repeat)
    np.random.seed(repeat)  # EvolInstruct draws its mutations from numpy's global generator
    started = time.perf_counter()
    rows = next(step.process(inputs))
    seconds = time.perf_counter() - started
    if task == "self_instruct":
        texts = [line.strip() for row in rows for line in row["instructions"] if line.strip()]
    else:
        texts = []
        for row in rows:
            lineage = [row["instruction"], *row["evolved_instructions"]]
            for parent, child in pairwise(lineage):
                if child and child.strip():
                    texts.append(child.strip())
                    parents[child.strip()] = parent
    return {"texts": texts, "calls": llm._calls, "tokens_out": llm._tokens_out, "seconds": seconds,
            "parents": parents, "units": units}


# -- metrics ----------------------------------------------------------------------------------------------

def normalized(text: str) -> str:
    return " ".join(re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower()))


def shingles(text: str) -> frozenset[str]:
    """Word 3-grams of the NFKC, lower-cased text split at whitespace (shorter texts as a whole),
    the shingles MinHashDedup(ngram=3) hashes."""
    words = unicodedata.normalize("NFKC", text).lower().split()
    if len(words) < NGRAM:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1))


def near_duplicates(texts: list[str]) -> int:
    """How many of ``texts`` MinHashDedup (word 3-grams, Jaccard 0.8, verified) would drop."""
    from dataflow.operators import MinHashDedup
    from dataflow.operators.text import prepared_texts

    if len(texts) < 2:
        return 0
    op = MinHashDedup(column="text", threshold=THRESHOLD, num_perm=NUM_PERM, ngram=NGRAM)
    clusters = op.find(prepared_texts(pl.Series(texts), "word"), np.zeros(len(texts), dtype=np.int64))
    return int((clusters.survivor != np.arange(len(texts))).sum())


def close_pairs(texts: list[str]) -> tuple[int, float]:
    """Pairs with exact Jaccard >= THRESHOLD over all pairs, and the largest Jaccard seen."""
    sets = [shingles(t) for t in texts]
    count, best = 0, 0.0
    for a, b in combinations(sets, 2):
        if not a or not b:
            continue
        score = len(a & b) / len(a | b)
        best = max(best, score)
        count += score >= THRESHOLD
    return count, best


def self_instruct_survivors(texts: list[str]) -> list[str]:
    """``texts`` (in order) that pass Self-Instruct's filters as dataflow's operator runs them: 4 to
    150 words, no blacklisted word, no leading punctuation or non-ASCII, and ROUGE-L <= 0.7 against
    every seed task and every text kept before it."""
    from dataflow.operators.text import NoveltyIndex
    from dataflow.operators.generation.self_instruct import BLACKLIST, task_problem

    pool = NoveltyIndex(0.7)
    for _, seed in seed_tasks():
        pool.add(seed)
    kept = []
    for text in texts:
        if task_problem(text, 4, 150, BLACKLIST) is None and pool.too_similar(text) is None:
            pool.add(text)
            kept.append(text)
    return kept


def english_share(texts: list[str]) -> float:
    """The share of ``texts`` that dataflow's LanguageId (the packaged py3langid model) labels English."""
    from dataflow.operators.curation.language import identify

    labels, _ = identify(texts)
    return labels.count("en") / len(texts) if texts else 0.0


def measure(task: str, result: dict) -> dict:
    from dataflow.operators.generation.evol import copies_template

    texts = result["texts"]
    distinct: dict[str, str] = {}
    for text in texts:
        distinct.setdefault(normalized(text), text)
    distinct.pop("", None)
    unique = list(distinct.values())
    pairs, best = close_pairs(unique)
    calls = result["calls"]
    row = {"units": result["units"], "calls": calls, "kept": len(texts), "distinct": len(unique),
           "per_100": 100 * len(unique) / calls if calls else 0.0,
           "exact_share": 1 - len(unique) / len(texts) if texts else 0.0,
           "near_share": near_duplicates(unique) / len(unique) if unique else 0.0,
           "pairs": pairs, "max_jaccard": best, "seconds": result["seconds"], "tokens_out": result["tokens_out"],
           "english": english_share(unique)}
    if task == "self_instruct":
        row["checked"] = len(self_instruct_survivors(unique))
    else:
        row["checked"] = sum(bool(copies_template(t)) or normalized(t) == normalized(result["parents"].get(t, ""))
                             for t in unique)
    row["examples"] = unique[:3]
    return row


# -- harness ----------------------------------------------------------------------------------------------

def median_row(rows: list[dict]) -> dict:
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in rows)
    out["runs_s"] = [r["seconds"] for r in rows]
    return out


def table(task: str, rows: dict[str, dict]) -> list[str]:
    check = "pass SI filters + novelty (/100 calls)" if task == "self_instruct" else "copy prompt / same as parent"
    lines = [(f"| contender | work | model calls | kept | distinct | distinct / 100 calls | exact-dup share | "
             f"near-dup share (MinHash 0.8) | pairs >= 0.8 (max J) | {check} | English (langid) | tokens out | "
             f"wall s (runs) |"), "| --- | --- " + "| ---: " * 11 + "|"]
    for name, r in rows.items():
        runs = ", ".join(f"{s:.0f}" for s in r["runs_s"])
        lines.append(f"| {name} | {r['units']} | {r['calls']:.0f} | {r['kept']:.0f} | {r['distinct']:.0f} | "
                     f"{r['per_100']:.1f} | {100 * r['exact_share']:.1f}% | {100 * r['near_share']:.1f}% | "
                     f"{r['pairs']:.0f} ({r['max_jaccard']:.2f}) | {checked(task, r)} | {100 * r['english']:.0f}% | "
                     f"{r['tokens_out']:.0f} | "
                     f"{r['seconds']:.0f} ({runs}) |")
    return lines


def checked(task: str, r: dict) -> str:
    if task == "self_instruct":
        return f"{r['checked']:.0f} ({100 * r['checked'] / r['calls'] if r['calls'] else 0:.1f})"
    return f"{r['checked']:.0f}"


def verdicts(task: str, ours: dict, peer: dict) -> list[str]:
    """Issue 13's target on what each side outputs, then on what passes the same checks on both sides
    (Self-Instruct's filters and novelty; for Evol-Instruct, neither copying the prompt nor equal to the parent)."""
    def per_100(row: dict, count: float) -> float:
        return 100 * count / row["calls"] if row["calls"] else 0.0

    passing = {"self_instruct": lambda r: r["checked"], "evol_instruct": lambda r: r["distinct"] - r["checked"]}[task]
    ours_checked, peer_checked = per_100(ours, passing(ours)), per_100(peer, passing(peer))
    return [f"- target (issue 13: more distinct instructions per call, no pair >= 0.8): distinct / 100 calls of what "
            f"each side outputs {ours['per_100']:.1f} vs {peer['per_100']:.1f}, "
            f"{'met' if ours['per_100'] > peer['per_100'] else 'MISSED'}; of those passing the same checks on both "
            f"sides {ours_checked:.1f} vs {peer_checked:.1f}, {'met' if ours_checked > peer_checked else 'MISSED'}; "
            f"pairs >= 0.8 {ours['pairs']} vs {peer['pairs']}, {'met' if ours['pairs'] == 0 else 'MISSED'}"]


def quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("distilabel").setLevel(logging.ERROR)
    for name in ("distilabel.step", "distilabel.llm", "distilabel"):
        logging.getLogger(name).disabled = True
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=16, help="model calls per contender and task")
    parser.add_argument("--generations", type=int, default=1, help="Evol-Instruct generations, both sides")
    parser.add_argument("--repeats", type=int, default=1, help="runs per contender (medians shown)")
    parser.add_argument("--attempts", type=int, default=1, help="dataflow's max_attempts (retries spend calls)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads, both sides (0: the backend's default)")
    parser.add_argument("--tasks", default="self_instruct,evol_instruct")
    parser.add_argument("--settle", type=float, default=240.0, help="seconds to wait for a quiet machine first")
    parser.add_argument("--no-record", action="store_true", help="print the table, do not write RESULTS.md")
    parser.add_argument("--dump", type=Path, help="write every contender's instructions to this JSON file")
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    if args.calls // (3 * args.generations) < 1:
        parser.error(f"--calls {args.calls} leaves no seed for Evol-Instruct at 3 calls x {args.generations} generations")
    quiet()
    if args.settle > 0:
        settle(patience=args.settle)

    import torch

    from dataflow.llm import LLMClient
    from dataflow.llm.backends.decoding import default_threads
    from dataflow.llm.convert import ensure_default_model

    threads = args.threads or default_threads()
    os.environ["DATAFLOW_TORCH_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    model_dir = ensure_default_model(lambda text: print(text, file=sys.stderr))
    spec = f"local?threads={threads}"
    _ = LLMClient(spec, log=lambda text: None).backend  # load dataflow's model once, untimed
    import distilabel

    before = load()
    results: dict[str, dict[str, list[dict]]] = {t: {side: [] for side in CONTENDERS[t]} for t in tasks}
    dumped: dict[str, dict[str, list[list[str]]]] = {}
    for repeat in range(args.repeats):
        for task in tasks:
            for side in CONTENDERS[task][::1 if repeat % 2 == 0 else -1]:
                torch.set_num_threads(threads)
                started = time.perf_counter()
                raw = (run_distilabel(task, args, repeat, model_dir) if side == "distilabel"
                       else run_dataflow(task, args, repeat, spec, side))
                results[task][side].append(measure(task, raw))
                dumped.setdefault(task, {}).setdefault(side, []).append(raw["texts"])
                print(f"[synthesis_peers] {task} {side} repeat {repeat}: {raw['calls']} calls, "
                      f"{len(raw['texts'])} kept, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    after = load()
    if args.dump:
        args.dump.write_text(json.dumps(dumped, indent=1, ensure_ascii=False))

    si_round, si_rounds = si_shape(args.calls)
    lines = [*run_facts(),
             (f"- model: SmolLM2-135M-Instruct ({model_dir}), float32, CPU, {threads} torch thread(s) on both sides, "
             f"one process; distilabel {distilabel.__version__}, TransformersLLM; budget {args.calls} model calls per "
             f"contender and task; {args.repeats} repeat(s), order alternating (medians shown)"),
             f"- load average before: {before}, after: {after}", ""]
    titles = {"self_instruct": "Self-Instruct", "evol_instruct": "Evol-Instruct"}
    notes = {
        "self_instruct": (
            f"dataflow: `SelfInstruct(instances=False)`, {si_round} prompts x {si_rounds} rounds, up to {PER_PROMPT} "
            f"tasks asked per prompt ({SHOWN} seed tasks shown in round 1; {SEED_EXAMPLES} seed tasks and 2 kept "
            f"tasks from round 2 on); `dataflow` is the default style (the paper's: the model continues the numbered "
            f"list as raw text, up to a blank line, under dataflow's header asking for diverse subjects), "
            f"`dataflow (paper's header)` the same under the paper's `{PAPER_HEADER}`, `dataflow (json)` the chat "
            f"style (a JSON list of exactly "
            f"{PER_PROMPT} tasks under the schema); all with the paper's "
            f"filters and ROUGE-L <= 0.7 novelty against seeds and kept tasks, max_attempts={args.attempts}. "
            f"distilabel: `SelfInstruct(num_instructions={PER_PROMPT})` with its default template; each call's context "
            f"is the seed tasks dataflow's matching prompt showed; its output is every non-empty "
            f"line of the reply, "
            f"unfiltered. Both: temperature {SI_SAMPLING['temperature']}, top_p {SI_SAMPLING['top_p']}, "
            f"{SI_SAMPLING['max_new_tokens']} new tokens. `pass SI filters + novelty` runs dataflow's "
            f"filters after the fact on both sides' distinct instructions, in output order: 4 to 150 words, no "
            f"blacklisted word, no leading punctuation, ROUGE-L <= 0.7 against the seeds and every one kept before "
            f"(dataflow's own output passes by construction)."),
        "evol_instruct": (
            f"dataflow: `EvolInstruct(generations={args.generations})`, up to 3 calls per lineage and generation "
            f"(rewrite, information-gain check, response; the response only for a rewrite the check passes), so "
            f"{args.calls // (3 * args.generations)} seeds for "
            f"{args.calls} calls; kept = evolutions that pass WizardLM's elimination rules and whose "
            f"response ended within its token limit (a response cut off is rejected: no SFT target ends "
            f"mid-sentence). distilabel: "
            f"`EvolInstruct(num_evolutions={args.generations}, store_evolutions=True, generate_answers=True)`, "
            f"2 calls per lineage and generation (rewrite, answer), so {args.calls // (2 * args.generations)} seeds; "
            f"kept = every non-empty evolution, unfiltered. Both: the first seeds of seed_tasks.jsonl, temperature "
            f"{EVOL_SAMPLING['temperature']}; rewrites up to 384 new tokens, answers 256 (dataflow) or 384 (distilabel: one setting for both). "
            f"`copy prompt / same as parent` counts distinct evolutions that copy the rewriting prompt's words or "
            f"equal their parent (WizardLM's rules 4 and 1, the text test only), on both sides."),
    }
    for task in tasks:
        rows = {side: median_row(results[task][side]) for side in CONTENDERS[task]}
        lines += [f"**{titles[task]}**", "", *table(task, rows), "", notes[task], ""]
        for side, row in rows.items():
            lines.append(f"- {side} examples (first repeat): " + " / ".join(f"`{t[:90]}`" for t in row["examples"]))
        lines += [*verdicts(task, rows["dataflow"], rows["distilabel"]), ""]
    lines += [
        ("Metrics: distinct = after exact dedup of normalized text (NFKC, lower case, word characters); exact-dup "
        "share = 1 - distinct / kept; near-dup share = share of the distinct instructions that dataflow's "
        "`MinHashDedup` (word 3-grams, 128 permutations, Jaccard 0.8, LSH candidates verified exactly) drops; pairs "
        ">= 0.8 = pairs of distinct instructions whose exact word-3-gram Jaccard is at least 0.8, all pairs checked. "
        "Wall seconds cover generation only (models loaded before timing): dataflow batches 32 sequences in its own "
        "decode loop, distilabel's HF text-generation pipeline decodes one prompt at a time, so wall time compares "
        "the two runtimes, not the methods. Tokens out: dataflow's `tokens_out` metric, distilabel's statistics. "
        "English (langid): the share of distinct instructions that dataflow's `LanguageId` (py3langid) labels `en` "
        "(the seed tasks are English).")]
    body = "\n".join(lines)
    write_section("synthesis-peers", "Self-Instruct and Evol-Instruct: dataflow vs distilabel, same model and "
                  "call budget", body, record=not args.no_record)


if __name__ == "__main__":
    main()
