"""Math answers checked against gold answers with math-verify, in worker processes with a time bound.

Workers are plain ``python -c`` processes (started once per process and kept): they import nothing
of the pipeline, so a pipeline script without an ``if __name__ == "__main__"`` guard works, and the
time bound counts only a row's own verification, never a worker's start. A worker verifies in a
thread with a 512 MB stack and a recursion limit of 200,000, so deep expressions (a sum of
thousands of terms) are parsed as what they are; math-verify would otherwise fall back to the first
number it sees. A row past the time bound is retried once in a fresh worker, then gets no reward
(null, with the reason); a worker that dies twice on one answer fails the node with its error.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import selectors
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dataflow.errors import DataflowError
from dataflow.operator import runtime_field
from dataflow.operators.rewards.base import Verifier

WORKER = r'''
import decimal, json, logging, math, re, sys, threading
logging.disable(logging.CRITICAL)
sys.setrecursionlimit(200_000)
threading.stack_size(512 << 20)
from math_verify import parse, verify

FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")  # 1e-05: math-verify would read e as Euler's number
FINAL = re.compile(r"answer(?:\s+is|\s*:)\s*([^\n]*?)(?:\.(?:\s|$)|\n|$)", re.I)
HEDGE = re.compile(r"\b(or|maybe|possibly|perhaps|either)\b", re.I)
BOXED = re.compile(r"\\boxed\s*\{")
RELATION = re.compile(r"=|\\to\b|\\implies\b|\\Rightarrow\b|\\rightarrow\b|\\equiv\b|\\approx\b|\\iff\b")
NAME = re.compile(r"^\s*[A-Za-z](_\{?\w+\}?)?(\([^()]*\))?\s*$")  # x, a_1, f(2): the left side of "x = 3"


def last_box(text):
    """The content of the last \\boxed{...}, braces balanced; None without one."""
    starts = [m.end() for m in BOXED.finditer(text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return None


def hedge(response, relations):
    """Why the final answer names no one value ("3 or 4", "\\boxed{4 = 3}" unless ``relations`` are
    answers), or None."""
    box = last_box(response)
    if box is not None:
        if HEDGE.search(" ".join(re.findall(r"\\text\s*\{([^}]*)\}", box))):
            return f"the boxed answer hedges: {box[:60]!r}"
        sides = RELATION.split(box)
        if not relations and (len(sides) > 2 or (len(sides) == 2 and not NAME.match(sides[0]))):
            return f"the boxed answer is a relation, not a value: {box[:60]!r}"
        return None
    final = FINAL.findall(response)
    if final and HEDGE.search(final[-1]):
        return f"the final answer hedges: {final[-1][:60]!r}"
    return None


def gold_text(gold):
    """The gold answer as math-verify reads it: a float in positional notation (1e-05 is 0.00001)."""
    text = str(gold)
    if isinstance(gold, float) or FLOAT.match(text.strip()):
        text = format(decimal.Decimal(text.strip()), "f")
    return text if "$" in text else f"${text}$"


def rounding(gold_parsed):
    """Decimals math-verify rounds floats to: its 6, or six significant digits for a gold below 1 in
    magnitude (at 6 decimals, an answer of 0 matches every gold under 5e-7)."""
    try:
        value = abs(float(gold_parsed[0]))
    except (TypeError, ValueError, OverflowError):
        return 6
    return 6 if value == 0 or value >= 1 or math.isnan(value) else 5 - math.floor(math.log10(value))


def check(gold, response):
    if not isinstance(response, str) or not response.strip():
        return 0.0, "empty response"
    written = gold_text(gold)
    gold_parsed = parse(written, parsing_timeout=None)
    if not gold_parsed:
        return 0.0, f"gold answer {str(gold)[:40]!r} does not parse"
    several = type(gold_parsed[0]).__name__ in ("FiniteSet", "Interval", "Union", "Tuple", "list", "tuple")
    hedged = None if several else hedge(response, RELATION.search(written) is not None)
    if hedged:
        return 0.0, hedged
    predicted = parse(response, parsing_timeout=None)
    if not predicted:
        return 0.0, "no answer found in the response"
    if verify(gold_parsed, predicted, float_rounding=rounding(gold_parsed), timeout_seconds=None):
        return 1.0, ""
    return 0.0, f"answer {str(predicted[-1])[:40]} does not match gold {str(gold_parsed[-1])[:40]}"


def serve():
    print("ready", flush=True)
    for line in sys.stdin:
        gold, response = json.loads(line)
        try:
            result = check(gold, response)
        except Exception as exc:
            result = (0.0, f"math-verify failed: {type(exc).__name__}: {str(exc)[:200]}")
        print(json.dumps(result), flush=True)


thread = threading.Thread(target=serve)
thread.start()
thread.join()
'''


class MathWorker:
    """One worker process: a row in, its (reward, detail) out, within a time bound."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        if self._line(120.0) != "ready":
            raise DataflowError(f"the math-verify worker did not start: {self.error()}; install it with "
                                f"pip install 'dataflow[rewards]'")

    def check(self, gold: Any, response: Any, seconds: float) -> tuple[float, str] | str:
        """The verdict, "timeout" past ``seconds``, or "died" when the worker exited."""
        try:
            self.proc.stdin.write(json.dumps([gold if isinstance(gold, (int, float)) else str(gold), response]) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return "died"
        line = self._line(seconds)
        if line is None:
            return "timeout"
        if not line:
            return "died"
        reward, detail = json.loads(line)
        return float(reward), detail

    def _line(self, seconds: float) -> str | None:
        """The worker's next line; "" when it closed its output (it exited: its exit status may not be there
        yet), None past ``seconds``."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=seconds):
                return None
        return self.proc.stdout.readline().strip()

    def error(self) -> str:
        self.stop()
        return (self.proc.stderr.read().strip().splitlines() or ["no error output"])[-1][-300:]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


_idle: queue.SimpleQueue[MathWorker] = queue.SimpleQueue()  # workers kept for the next rows
_started: list[MathWorker] = []
_lock = threading.Lock()


def _worker() -> MathWorker:
    try:
        return _idle.get_nowait()
    except queue.Empty:
        worker = MathWorker()
        with _lock:
            _started.append(worker)
        return worker


@atexit.register
def _stop_workers() -> None:
    for worker in _started:
        if worker.proc.poll() is None:
            worker.stop()


def verify_answer(gold: Any, response: Any, seconds: float) -> tuple[float | None, str]:
    """(reward, detail) of one answer; a second timeout gives no reward."""
    for attempt in (1, 2):
        worker = _worker()
        started = time.monotonic()
        outcome = worker.check(gold, response, seconds)
        if isinstance(outcome, tuple):
            _idle.put(worker)
            return outcome
        cause = worker.error()  # the worker is stopped: a fresh one takes the retry
        if outcome == "died" and attempt == 2:
            raise DataflowError(f"the math-verify worker died twice on one answer ({cause}); the answer starts "
                                f"{str(response)[:80]!r}")
    return None, f"verification ran past {seconds:g}s twice ({time.monotonic() - started:.1f}s)"


@dataclass(frozen=True)
class MathVerify(Verifier):
    """Checks the final answer in ``response`` against the gold ``answer`` with math-verify
    (LaTeX, fractions, equivalent expressions); ``timeout`` bounds each check (see the module doc).
    A row whose check ran past it twice has a null reward (unscored) and the metric ``unverified``.
    Against a gold of one value, a final answer that hedges ("the answer is 3 or 4", a boxed
    ``\\text{(or 4)}``) or a boxed relation that is not ``name = value`` (``\\boxed{4 = 3}``,
    ``\\boxed{4 \\implies 3}``: math-verify reads its right side) gets 0 with the reason. A float gold
    is read in positional notation (``1e-05`` is 0.00001, not e - 5)."""

    response: str = "response"
    answer: str = "answer"
    output: str = "reward"
    timeout: float = 10.0
    workers: int = runtime_field(max(1, min(4, os.cpu_count() or 1)))

    def label(self) -> str:
        return "math_verify"

    def required_columns(self) -> dict[str, Any]:
        return {self.response: str, self.answer: None}

    def check_rows(self, rows: list[dict]) -> list[tuple[float | None, str]]:
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(lambda row: verify_answer(row[self.answer], row[self.response], self.timeout), rows))
