"""Verifiers write a reward and, for zero rewards, the reason; bad input never fails a build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dataflow import Pipeline
from dataflow.operators.rewards.sandbox import Limits, run_python
from dataflow.operators import CodeVerify, FunctionReward, JsonSchemaVerify, MatchVerify, MathVerify

LIMITS = Limits(wall_seconds=5, cpu_seconds=3, memory_mb=256)


def rewards(builder, rows, op) -> list[tuple[float, str | None]]:
    p = Pipeline("rewards")
    p.output("o", p.from_rows(rows, name="src").apply(op, name="verified"))
    builder.build(p)
    return builder.output("o").select("reward", "reward_detail").rows()


def test_math_answers_verified_against_gold(builder):
    rows = [{"response": "She pays 3 * 4 = 12 dollars. The answer is 12.", "answer": "12"},
            {"response": "So the result is \\boxed{\\frac{7}{2}}", "answer": "3.5"},
            {"response": "The answer is 13.", "answer": "12"},
            {"response": "", "answer": "12"},
            {"response": "I do not know.", "answer": "12"},
            {"response": "The answer is 5", "answer": "not a number ]["}]
    got = rewards(builder, rows, MathVerify(timeout=20))
    assert [r for r, _ in got] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert got[3][1] == "empty response"
    assert got[4][1] == "no answer found in the response"
    assert "does not match gold" in got[2][1]


SOLUTION = "```python\ndef add(a, b):\n    return a + b\n```"
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"


@pytest.mark.parametrize("program, status", [
    ("while True:\n    pass", "timeout"),
    ("import time\ntime.sleep(60)", "timeout"),
    ("import os\nos.fork()", "blocked"),
    ("import subprocess\nsubprocess.run(['true'])", "blocked"),
    ("x = bytearray(50 * 1024 ** 3)", "memory"),
    ("import socket\nsocket.create_connection(('127.0.0.1', 9))", "blocked"),
    ("import os\nos.remove(VICTIM)", "blocked"),
    ("open(VICTIM, 'w').write('overwritten')", "blocked"),
    ("open(f'/proc/{__import__(\"os\").getppid()}/environ').read()", "blocked"),
    ("import ctypes\nctypes.CDLL(None)", "blocked"),
])
def test_sandbox_contains_hostile_code(tmp_path, program, status):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    outcome = run_python(program.replace("VICTIM", repr(str(victim))), LIMITS)
    assert outcome.status == status, outcome.detail
    assert victim.read_text() == "precious"


def test_sandbox_hides_environment_secrets(monkeypatch):
    monkeypatch.setenv("DATAFLOW_TEST_SECRET", "hunter2")
    assert run_python("import os\nassert 'DATAFLOW_TEST_SECRET' not in os.environ", LIMITS).passed
    assert run_python("open('scratch.txt', 'w').write('ok')", LIMITS).passed  # its own directory is writable


def test_sandbox_kills_the_whole_process_group():
    marker = Path(f"/tmp/dataflow-orphan-{os.getpid()}")
    program = f"import os, time\nos.setsid = None\nwhile True: time.sleep(1)\nopen({str(marker)!r}, 'w')"
    assert run_python(program, Limits(wall_seconds=1)).status == "timeout"
    assert not marker.exists()


def test_code_verification_rewards(builder):
    rows = [{"response": SOLUTION, "tests": TESTS},
            {"response": "def add(a, b):\n    return a - b", "tests": TESTS},
            {"response": "", "tests": TESTS},
            {"response": "def add(a, b):\n    while True: pass", "tests": TESTS}]
    got = rewards(builder, rows, CodeVerify(limits=LIMITS))
    assert [r for r, _ in got] == [1.0, 0.0, 0.0, 0.0]
    assert got[1][1].startswith("failed: AssertionError")
    assert got[2][1] == "empty program"
    assert got[3][1].startswith("timeout")


def test_match_json_and_function_rewards(builder):
    rows = [{"response": "Paris", "answer": "paris"}, {"response": "Lyon", "answer": "paris"}]
    assert [r for r, _ in rewards(builder, rows, MatchVerify())] == [1.0, 0.0]
    rows = [{"response": "The capital is Paris.", "answer": r"\bParis\b"}, {"response": "x", "answer": "("}]
    got = rewards(builder, rows, MatchVerify(mode="regex"))
    assert got[0][0] == 1.0 and got[1][1].startswith("invalid pattern")
    schema = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
    rows = [{"response": '```json\n{"name": "Ada"}\n```'}, {"response": '{"name": 3}'}, {"response": "{oops"}]
    got = rewards(builder, rows, JsonSchemaVerify(schema))
    assert [r for r, _ in got] == [1.0, 0.0, 0.0]
    assert got[1][1].startswith("schema:") and got[2][1].startswith("not JSON")

    def brevity(row):
        return 1.0 / len(row["response"])

    got = rewards(builder, [{"response": "abcd"}, {"response": ""}], FunctionReward(brevity, {"response": str}))
    assert got[0][0] == 0.25 and got[1] == (0.0, "error: ZeroDivisionError: float division by zero")
