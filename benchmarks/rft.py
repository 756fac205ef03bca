"""The measured result of issue 16: does data dataflow built make the packaged model better? The shipped
loop (pipelines/rft_math.py: rejection-sampling fine-tuning on multiplication facts) on SmolLM2-135M-Instruct
on CPU, with several seeds, against the control (SFT on as many unchecked samples of the same round).

    python benchmarks/rft.py [--seeds 0,1,2] [--rounds 2] [--work /tmp/rft-bench]

Per seed: `dataflow iterate pipelines/rft_math.py --rounds N --set seed=S` (round 1's data from the base
model, round 2's from the best model so far), then the control `--rounds 1 --train-on unfiltered` (the
same round-1 build, found in the caches). The first seed's loop is killed in round 2 while it samples and
run again: the record says how many model calls the resumed run repeated. pass@1 is the mean over the
held-out prompts of 4 samples each (temperature 0.8); its interval is the loop's 95% bootstrap interval
over prompts; across seeds the mean and the range are given. Nothing is tuned on the held-out set: the
pipeline's settings were fixed before this script first ran.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results import load, run_facts, settle, write_section  # noqa: E402

REPO = HERE.parent
DATAFLOW = [sys.executable, "-m", "dataflow.cli"]
TRIAL = ("--set", "problems=12", "--set", "k=2", "--train-set", "max_steps=2", "--eval-set", "prompts=6",
         "--eval-set", "samples=1")


def iterate(work: Path, seed: int, *args: str, kill_in_round: int | None = None, extra: tuple[str, ...] = ()
            ) -> tuple[dict, float]:
    """One `dataflow iterate` (killed once when ``kill_in_round`` starts sampling, then run again); its record."""
    command = [*DATAFLOW, "iterate", str(REPO / "pipelines" / "rft_math.py"), "--set", f"seed={seed}",
               "--out", str(work / "out"), "--runs", str(work / "runs"), *args, *extra]
    log = work / f"seed{seed}{'-'.join(args)}.log"
    started = time.perf_counter()
    if kill_in_round:
        with open(log, "w") as stream:
            proc = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, cwd=REPO)
            while proc.poll() is None and f"[round {kill_in_round}] building" not in log.read_text():
                time.sleep(2)
            time.sleep(60 if not extra else 5)  # into the round's sampling
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    with open(log, "a") as stream:
        subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, cwd=REPO, check=True)
    seconds = time.perf_counter() - started
    [path] = [p for p in (work / "out" / "rounds").glob("*/rounds.json")
              if json.loads(p.read_text())["settings"].get("seed") == str(seed)
              and json.loads(p.read_text())["train_on"] == ("unfiltered" if "unfiltered" in args else "verified")]
    return json.loads(path.read_text()), seconds


def sample_load(loads: list[float]) -> None:
    while True:
        loads.append(os.getloadavg()[0])
        time.sleep(30)


def interval(score: dict) -> str:
    low, high = score["ci95"]
    return f"{score['value']:.3f} [{low:.3f}, {high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rft-bench"), help="a scratch folder (emptied first)")
    parser.add_argument("--try", dest="trial", action="store_true", help="a few problems and steps, to check the "
                                                                        "script (its section is not a result)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = TRIAL if args.trial else ()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    from dataflow.llm.convert import models_dir

    os.environ["DATAFLOW_MODELS_DIR"] = str(models_dir())  # the converted model as it is, but
    os.environ["DATAFLOW_CACHE_DIR"] = str(args.work / "cache")  # a cold request cache: every call is made
    os.environ["DATAFLOW_TORCH_THREADS"] = "2"  # both cores, as on an idle machine, whatever the load at the start
    if not args.trial:
        settle()
    load_before, started, loads = load(), time.perf_counter(), []
    threading.Thread(target=sample_load, args=(loads,), daemon=True).start()
    loops, controls, seconds = {}, {}, {}
    for seed in seeds:
        loops[seed], seconds[seed] = iterate(args.work, seed, "--rounds", str(args.rounds), "--patience",
                                             str(args.rounds), kill_in_round=2 if seed == seeds[0] else None,
                                             extra=extra)
        controls[seed], control_seconds = iterate(args.work, seed, "--rounds", "1", "--train-on", "unfiltered",
                                                  extra=extra)
        seconds[seed] += control_seconds
    total = time.perf_counter() - started
    base = loops[seeds[0]]["base"]
    rows = ["| seed | base | " + " | ".join(f"round {r} (verified)" for r in range(1, args.rounds + 1))
            + " | control: round 1 on unfiltered | training rows (verified / control) | loop wall time |",
            "| --- | --- |" + " --- |" * args.rounds + " --- | --- | --- |"]
    for seed in seeds:
        rounds = loops[seed]["rounds"]
        cells = [f"{interval(e['pass@1'])}{'' if e['kept'] else ' (not kept)'}" for e in rounds]
        cells += ["-"] * (args.rounds - len(cells))
        control = controls[seed]["rounds"][0]
        rows.append(f"| {seed} | {interval(base)} | " + " | ".join(cells) + f" | {interval(control['pass@1'])} | "
                    f"{rounds[0]['trained_rows']} / {control['trained_rows']} | {seconds[seed] / 60:.1f} min |")
    best = [max([e["pass@1"]["value"] for e in loops[s]["rounds"] if e["kept"]] or [base["value"]]) for s in seeds]
    first = [loops[s]["rounds"][0]["pass@1"]["value"] for s in seeds]
    control = [controls[s]["rounds"][0]["pass@1"]["value"] for s in seeds]
    summary = [f"- base pass@1: {base['value']:.3f}; best kept round, mean over seeds: {statistics.mean(best):.3f} "
               f"({statistics.mean(best) - base['value']:+.3f}; range {min(best):.3f}-{max(best):.3f})",
               f"- round 1, verified vs unfiltered (same size, same samples), mean over seeds: "
               f"{statistics.mean(first):.3f} vs {statistics.mean(control):.3f} "
               f"({statistics.mean(first) - statistics.mean(control):+.3f}; verified ahead in "
               f"{sum(f > c for f, c in zip(first, control))} of {len(seeds)} seeds)"]
    split = ["| seed | round | generation s | verification s | training s | evaluation s | model calls |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for seed in seeds:
        for e in loops[seed]["rounds"]:
            s = e["seconds"]
            split.append(f"| {seed} | {e['round']} | {s['generation']:.0f} | {s['verification']:.0f} | "
                         f"{s['training'] or 0:.0f} | {s['evaluation']:.0f} | {e['model_calls']} |")
    resumed = loops[seeds[0]]["rounds"]
    kill = [f"- seed {seeds[0]}'s loop was killed (SIGKILL) 60 s into round 2's sampling and run again: "
            + "; ".join(f"round {e['round']} repeated {e['resumed']['model_calls']} model call(s) in "
                        f"{e['resumed']['seconds']:.0f} s" if "resumed" in e else
                        f"round {e['round']} was finished by the second run: {e['cache_hits']} request(s) answered "
                        f"before the kill came from the request cache, {e['model_calls']} were asked"
                        for e in resumed)]
    during = (f"- 1-minute load average during the run (every 30 s): median {statistics.median(loads):.2f}, "
              f"max {max(loads):.2f} (the loop itself keeps about 2 busy)") if loads else ""
    body = "\n".join([*run_facts(), f"- load average before: {load_before}; after: {load()}", during,
                      f"- total wall time: {total / 60:.1f} min for {len(seeds)} seeds (target: 60 min; "
                      f"{'met' if total <= 3600 else 'missed: training is most of each round'})", "", *rows, "",
                      *summary, "",
                      "Time per round (the first run of each round; evaluation includes the held-out generations):",
                      "", *split, "", *kill])
    write_section("rft", "Rejection-sampling fine-tuning rounds on the packaged model (issue 16)", body,
                  record=not args.trial)


if __name__ == "__main__":
    main()
