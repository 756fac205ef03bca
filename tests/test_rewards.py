"""Verifiers write a reward and, for zero rewards, the reason; bad input never fails a build."""

from __future__ import annotations

import pytest

from dataflow import Pipeline
from dataflow.errors import DataflowError
from dataflow.operators.rewards.sandbox import Limits
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


@pytest.mark.parametrize("gold, response, reward", [
    ("3", "The answer is 3 or 4.", 0.0), ("3", "The final answer is 3 (or possibly 4).", 0.0),
    ("3", "\\boxed{3 \\text{ (or 4)}}", 0.0), ("3", "\\boxed{4 = 3}", 0.0), ("3", "\\boxed{2+2 = 3}", 0.0),
    ("3", "\\boxed{4 \\implies 3}", 0.0), ("3", "\\boxed{x = 4 = 3}", 0.0),
    ("3", "The answer is 3, since 1 + 2 = 3.", 1.0), ("3", "\\boxed{x = 3}", 1.0), ("3", "So \\boxed{a_1 = 3}", 1.0),
    ("\\{2, 3\\}", "\\boxed{2 \\text{ or } 3}", 1.0),  # a gold of two values: "or" is no hedge
    ("3", "\\boxed{f(2) = 3}", 1.0), ("f(x) = 2x", "\\boxed{f(x) = 2x}", 1.0),  # a relation gold: relations answer
    (1e-05, "\\boxed{0.00001}", 1.0), (1e-05, "\\boxed{e-5}", 0.0), ("1e-5", "\\boxed{10^{-5}}", 1.0),
    (1e16, "\\boxed{10000000000000000}", 1.0),
    (1e-07, "\\boxed{0}", 0.0), ("1/3000000", "\\boxed{0.0}", 0.0), (1e-07, "\\boxed{0.0000001}", 1.0),  # tiny golds
    ("1/3", "\\boxed{0.333333}", 1.0), ("1/30000", "\\boxed{0.0000333333}", 1.0), ("1/30000", "\\boxed{0.00003}", 0.0)])
def test_a_final_answer_must_name_one_value_and_float_golds_are_numbers(gold, response, reward):
    from dataflow.operators.rewards.math_answers import verify_answer

    assert verify_answer(gold, response, 30)[0] == reward


SOLUTION = "```python\ndef add(a, b):\n    return a + b\n```"
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"


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
    counts = builder.output("o").select("reward_tests_passed", "reward_tests_total").rows()
    assert counts == [(2, 2), (0, 2), (0, 0), (0, 2)]


def test_without_bubblewrap_code_runs_only_when_weak_isolation_is_asked_for(builder, monkeypatch, capfd):
    from dataflow.operators.rewards import programs, sandbox

    for module in (programs, sandbox):
        monkeypatch.setattr(module, "bubblewrap", lambda: "bubblewrap is not installed")
    rows = [{"response": SOLUTION, "tests": TESTS},
            {"response": "import os\ndef add(a, b):\n    os.fork()", "tests": TESTS}]
    with pytest.raises(DataflowError, match="cannot isolate untrusted code: bubblewrap is not installed.*"
                                            "isolation='weak'"):
        rewards(builder, rows, CodeVerify(limits=LIMITS))
    with pytest.warns(RuntimeWarning, match="WITHOUT OS isolation"):
        got = rewards(builder, rows, CodeVerify(limits=LIMITS, isolation="weak"))
    assert got[0] == (1.0, "") and got[1][0] == 0.0 and "PermissionError" in got[1][1]
    assert "running untrusted code WITHOUT OS isolation" in capfd.readouterr().err
    assert "WEAK" in builder.sql("select metrics.isolation as i from nodes where name = 'verified'")["i"][0]


def test_json_that_python_reads_but_json_does_not_hold_or_that_is_too_deep_is_a_zero_not_a_crash(builder):
    schema = {"type": "object", "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1},
                                               "email": {"type": "string", "format": "email"}}}
    rows = [{"response": '{"score": 0.5, "x": ' + "1" * 5000 + "}"}, {"response": "[" * 1000 + "]" * 1000},
            {"response": '{"score": NaN}'}, {"response": '{"email": "not an email"}'}, {"response": '{"score": 0.5}'}]
    got = rewards(builder, rows, JsonSchemaVerify(schema))
    assert [r for r, _ in got] == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert "NaN is not a JSON value" in got[2][1] and "is not a 'email'" in got[3][1]


def test_contains_matches_whole_words_and_an_empty_answer_matches_nothing(builder):
    rows = [{"response": "The answer is 120", "answer": "12"}, {"response": "It is 12.", "answer": "12"},
            {"response": "anything", "answer": "  "}, {"response": "answer: (B)", "answer": "(B)"}]
    assert [r for r, _ in rewards(builder, rows, MatchVerify(mode="contains"))] == [0.0, 1.0, 0.0, 1.0]
    assert [r for r, _ in rewards(builder, [{"response": "x", "answer": ""}], MatchVerify(mode="regex"))] == [0.0]


def test_a_regex_gold_that_backtracks_without_end_scores_zero_instead_of_hanging(builder):
    rows = [{"response": "a" * 40 + "!", "answer": r"^(a|aa)+$"}, {"response": "aaaa", "answer": r"^(a|aa)+$"}]
    got = rewards(builder, rows, MatchVerify(mode="regex"))
    assert got[0] == (0.0, "the pattern ran past 1.0 s on this response (catastrophic backtracking)")
    assert got[1][0] == 1.0


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


def test_long_expressions_are_parsed_whole_not_as_their_first_number(builder):
    long_sum = "239" + "+1" * 1000
    rows = [{"response": f"The answer is ${long_sum}$", "answer": "1239"},
            {"response": f"The answer is ${long_sum}$", "answer": "239"}]
    assert [r for r, _ in rewards(builder, rows, MathVerify(timeout=30))] == [1.0, 0.0]


def test_the_time_bound_is_the_rows_own_and_a_slow_row_gets_no_reward(builder):
    rows = [{"response": "The answer is 12.", "answer": "12"},
            {"response": "The answer is $" + "239" + "+1" * 8000 + "$", "answer": "8239"}]
    got = rewards(builder, rows, MathVerify(timeout=1.0))
    assert got[0] == (1.0, "")  # a worker's start-up is not counted against a row
    assert got[1][0] is None and "ran past 1s twice" in got[1][1]
    assert builder.sql("select metrics from nodes where name = 'verified'")["metrics"][0]["unverified"] == 1


def test_a_pipeline_script_without_a_main_guard_verifies(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text("import io\nfrom dataflow import Pipeline\nfrom dataflow.build import build\n"
                      "from dataflow.operators import MathVerify\nfrom dataflow.progress import Progress\n"
                      "p = Pipeline('unguarded')\nrows = [{'response': 'So it is 4.', 'answer': '4'}]\n"
                      "p.output('o', p.from_rows(rows).apply(MathVerify()))\n"
                      f"build(p, {str(tmp_path / 'out')!r}, Progress(io.StringIO()))\n"
                      "import polars as pl\n"
                      f"print(pl.read_parquet({str(tmp_path / 'out' / 'o' / 'data.parquet')!r})['reward'].to_list())\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("[1.0]")


def test_a_worker_that_dies_fails_the_node_with_the_cause(builder, monkeypatch):
    from dataflow.errors import DataflowError
    from dataflow.operators.rewards import math_answers

    monkeypatch.setattr(math_answers, "WORKER", "import os, sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"
                                                "sys.stderr.write('Segmentation fault\\n')\nos._exit(139)")
    monkeypatch.setattr(math_answers, "_idle", math_answers.queue.SimpleQueue())
    with pytest.raises(DataflowError, match=r"node 'verified': the math-verify worker died twice on one answer "
                                            r"\(Segmentation fault\)"):
        rewards(builder, [{"response": "The answer is 12.", "answer": "12"}], MathVerify())
