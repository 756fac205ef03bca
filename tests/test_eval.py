"""`dataflow eval MODEL --on NAME`: pass@k with the verifiers, win rate with the pairwise judge, KL,
format correctness and distinct-2 on a built prompt set; the record beside the run; exit gates; errors.

The measures are checked against their definitions (pass@k against every k-subset, distinct-2 against
its bigrams, KL of a model against itself), with a scripted model where exact values are needed and
with the real default model end to end."""

from __future__ import annotations

import io
import itertools
import json
import random
import re
from collections import Counter
from math import comb
from pathlib import Path

import polars as pl
import pytest

import dataflow.llm.client as llm_client
from dataflow import Pipeline
from dataflow.build import build
from dataflow.cli import main
from dataflow.llm import register_backend, spec_problems
from dataflow.llm.client import unload_backends
from dataflow.llm.convert import ensure_default_model
from dataflow.llm.types import Completion, Response
from dataflow.operators import ToPrompt
from dataflow.progress import Progress
from dataflow.trainers.evaluation import kl as kl_module
from dataflow.trainers.evaluation.metrics import bootstrap_interval, pass_at_k

PROBLEMS = [("What is 2 + 2?", "4"), ("What is 1 + 4?", "5"), ("What is 3 + 4?", "7")]
POLICY_REPLIES = [("policy: The answer is 4.", "stop"), ("policy: The answer is 5.", "stop"),
                  ("policy: I do not know.", "stop"), ("policy: The answer is 4 because", "length")]


class ScriptedModel:
    """Sample j of a request from ``evalscript:policy`` answers POLICY_REPLIES[j % 4] whatever the
    question; ``evalscript:flaky`` too, but its server fails on 3 + 4; ``evalscript:base`` always says it
    is not sure. As a judge it prefers the response that mentions "policy", in whichever position it is
    shown."""

    calls: Counter = Counter()

    def __init__(self, spec):
        self.chunk_size, self.target = 64, spec.target

    def prepare(self, node, requests, labels):
        pass

    def generate(self, requests):
        ScriptedModel.calls[self.target] += len(requests)
        return [self._answer(r.messages[-1][1], r.sampling.n) for r in requests]

    def _answer(self, text: str, n: int) -> Response:
        if "[Response A]" in text:
            a = re.search(r"\[Response A\]\n(.*?)\n\n\[Response B\]", text, re.S).group(1)
            verdict = json.dumps({"winner": "A" if "policy" in a else "B", "rationale": "it answers"})
            return Response([Completion(verdict, "stop", 9)] * n, 30)
        if self.target == "flaky" and "3 + 4" in text:
            return Response(error="HTTP 503: overloaded")
        replies = [("base: I am not sure.", "stop")] if self.target == "base" else POLICY_REPLIES
        return Response([Completion(*replies[j % len(replies)], 6) for j in range(n)], 12)


register_backend("evalscript", ScriptedModel, lambda spec: f"evalscript:{spec.target}")


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATAFLOW_LLM_CACHE", str(tmp_path_factory.mktemp("llm") / "cache.sqlite"))
        unload_backends()
        yield
        unload_backends()


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """A build with a prompt set of arithmetic problems (math answers), one of a math problem and a prompt
    checked by exact match, and a set of SFT conversations."""
    folder = tmp_path_factory.mktemp("build") / "out"
    p = Pipeline("arithmetic")
    problems = p.from_rows([{"question": q, "answer": a} for q, a in PROBLEMS], name="problems_src")
    p.output("problems", problems.apply(ToPrompt(verifier="math"), name="problems_prompts"), schema="prompt")
    exact = p.from_rows([{"question": "Repeat after me.", "answer": POLICY_REPLIES[0][0]}], name="exact_src")
    p.output("mixed", p.concat(problems.limit(1).apply(ToPrompt(verifier="math"), name="mixed_math"),
                               exact.apply(ToPrompt(verifier="exact"), name="mixed_exact"), name="mixed"),
             schema="prompt")
    chats = [{"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]}]
    p.output("chats", p.from_rows(chats, name="chats_src"), schema="sft")
    build(p, folder, Progress(io.StringIO()))
    return folder


def dataflow_eval(capsys, out: Path, runs: Path, *argv: str) -> tuple[int, dict | None, str, str]:
    """``dataflow eval ...`` through the CLI: the exit status, the record it wrote, stdout and stderr."""
    code = main(["eval", *argv, "--out", str(out), "--runs", str(runs)])
    printed = capsys.readouterr()
    found = re.search(r"^record: (.+)$", printed.out, re.M)
    record = json.loads(Path(found.group(1)).read_text()) if found else None
    return code, record, printed.out, printed.err


def one_paragraph_error(err: str) -> str:
    """The one error line among the build's progress lines (no traceback)."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# -- the estimators against their definitions ------------------------------------------------------
def test_pass_at_k_equals_the_share_of_k_subsets_holding_a_correct_sample():
    rng = random.Random(7)
    for _ in range(60):
        n = rng.randint(1, 9)
        c, k = rng.randint(0, n), rng.randint(1, n)
        subsets = list(itertools.combinations([True] * c + [False] * (n - c), k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets), abs=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    rng = random.Random(1)
    values = [rng.random() for _ in range(50)]
    interval = bootstrap_interval(values)
    assert interval == bootstrap_interval(values)
    assert interval[0] < sum(values) / len(values) < interval[1]
    assert bootstrap_interval([0.5] * 8) == [0.5, 0.5]
    assert bootstrap_interval([]) is None


# -- a scripted model: exact values through the whole evaluation ----------------------------------
def test_scripted_model_gets_the_pass_at_k_win_rate_format_and_distinct_2_of_its_replies(capsys, out, tmp_path):
    code, record, shown, _ = dataflow_eval(capsys, out, tmp_path / "runs", "evalscript:policy", "--on", "problems",
                                           "--k", "2", "--samples", "4", "--baseline", "evalscript:base",
                                           "--judge", "evalscript:judge")
    assert code == 0
    m = record["metrics"]
    correct = {"4": 2, "5": 1, "7": 0}  # of the 4 replies: "4." and the truncated "4 because"; "5."; none
    expected = {at: sum(1 - comb(4 - c, at) / comb(4, at) for c in correct.values()) / 3 for at in (1, 2)}
    assert m["pass@1"]["value"] == pytest.approx(expected[1], abs=1e-4) == 0.25
    assert m["pass@2"]["value"] == pytest.approx(expected[2], abs=1e-4)
    assert m["pass@1"]["prompts"] == 3 and m["pass@1"]["samples"] == 4
    assert m["pass@1"]["ci95"][0] <= m["pass@1"]["value"] <= m["pass@1"]["ci95"][1]
    # finished: 3 of 4 replies; with an answer: 3 of 4 ("I do not know" has none); both: 2 of 4
    assert m["format"] == {"value": 0.5, "generations": 12, "finished": 0.75, "answer_found": 0.75}
    # the judge picks the policy's response in both orders: shown first once, second once
    assert m["win_rate"] == {"value": 1.0, "ci95": [1.0, 1.0], "pairs": 3, "wins": 3, "losses": 0, "ties": 0,
                             "p_win": None, "position_bias_first": 0.5, "consistent_share": 1.0}
    first_replies = [POLICY_REPLIES[0][0]] * 3  # sample 0 of each prompt
    bigrams = [b for text in first_replies for b in itertools.pairwise(text.lower().split())]
    assert m["distinct_2"] == {"value": round(len(set(bigrams)) / len(bigrams), 4), "responses": 3}
    assert record["gates"] == [{"gate": "distinct_2", "condition": "distinct-2 of the responses > 0.3",
                                "measure": "distinct-2 of the responses", "value": 0.3333, "bound": 0.3,
                                "above": True, "passed": True}]
    assert record["skipped"] == {"kl": "no reference model: give --reference MODEL"}
    assert Path(record["path"]).parent == tmp_path / "runs" / "evals"
    assert re.search(r"^pass@2 +0\.4444 +\[", shown, re.M) and re.search(r"^win rate +1 ", shown, re.M)


def test_each_prompt_is_checked_by_the_verifier_it_names(capsys, out, tmp_path):
    code, record, _, _ = dataflow_eval(capsys, out, tmp_path / "runs", "evalscript:policy", "--on", "mixed",
                                       "--metrics", "pass@k", "--k", "1", "--samples", "4")
    graded = pl.read_parquet(Path(record["build"]) / "samples" / "data.parquet")
    correct = dict(graded.group_by("verifier").agg(pl.col("correct").sum()).rows())
    assert correct == {"math": 2.0, "exact": 1.0}  # "4." and "4 because" for 2 + 2; the one exact reply
    assert code == 0 and record["metrics"]["pass@1"]["value"] == (2 / 4 + 1 / 4) / 2


def test_a_failed_gate_exits_1_with_one_paragraph_and_a_new_bound_generates_nothing(capsys, out, tmp_path):
    runs = tmp_path / "runs"
    args = ("evalscript:policy", "--on", "problems", "--metrics", "distinct_2")
    code, record, _, err = dataflow_eval(capsys, out, runs, *args, "--min-distinct-2", "0.5")
    assert code == 1 and record["passed"] is False
    assert one_paragraph_error(err).startswith(
        "error: evaluation of evalscript:policy on 'problems': 1 of 1 exit gate(s) failed: distinct-2 of the "
        "responses is 0.3333, not above 0.5. The record is ")
    calls = sum(ScriptedModel.calls.values())
    code, again, _, _ = dataflow_eval(capsys, out, runs, *args)
    assert code == 0 and again["passed"] and again["path"] == record["path"]
    assert sum(ScriptedModel.calls.values()) == calls


def test_rows_a_model_step_rejected_are_named_in_the_record(capsys, out, tmp_path):
    code, record, shown, _ = dataflow_eval(capsys, out, tmp_path / "runs", "evalscript:flaky", "--on", "problems",
                                           "--metrics", "pass@k", "--k", "1", "--gates", "none")
    assert code == 0 and record["metrics"]["pass@1"]["prompts"] == 2 and record["gates"] == []
    assert record["rejected"] == {"generated": {"llm_error": 1}}
    assert "rejected by generated: 1 llm_error (rows the metrics lack;" in shown


# -- bad input: one paragraph, no traceback, nothing generated ---------------------------------------
SCRIPTED = "evalscript:policy"


@pytest.mark.parametrize("argv, message", [
    (("no-such-model", "--on", "problems"), "MODEL: 'no-such-model' is neither a model spec"),
    ((SCRIPTED, "--on", "chats", "--metrics", "pass@k"), "pass@k needs `prompt` and `answer`"),
    ((SCRIPTED, "--on", "problems", "--reference", "openai:http://127.0.0.1:9/v1#m"),
     "KL needs the weights of both models, and the reference model has none here"),
    ((SCRIPTED, "--on", "problems", "--metrics", "kl"), "kl cannot be measured: no reference model"),
    ((SCRIPTED, "--on", "nothing"), "no output named 'nothing'"),
    ((SCRIPTED, "--on", "problems", "--judge", "nosuch"), "--judge: 'nosuch' is neither a model spec"),
    ((SCRIPTED, "--on", "problems", "--k", "3", "--samples", "2"), "samples (2) must be at least k (3)"),
])
def test_bad_input_is_one_paragraph_before_any_model_call(capsys, out, tmp_path, argv, message):
    code, record, _, err = dataflow_eval(capsys, out, tmp_path / "runs", *argv)
    assert code == 1 and record is None
    assert message in one_paragraph_error(err) and err.strip().count("\n") == 0  # nothing ran before it


def test_a_run_is_not_evaluated_on_its_training_data(capsys, out, tmp_path):
    from dataflow.trainers.inputs import find_output

    run_dir = tmp_path / "runs" / "sft-0123456789ab"
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "model" / "config.json").write_text("{}")
    (run_dir / "run.json").write_text(json.dumps({"trainer": "sft", "base_model": "local", "status": "finished",
                                                  "inputs": [find_output("problems", out).record()]}))
    code, _, _, err = dataflow_eval(capsys, out, tmp_path / "runs", "sft-01", "--on", "problems")
    assert code == 1
    assert "run sft-0123456789ab was trained on output 'problems'" in one_paragraph_error(err)


# -- the real default model ------------------------------------------------------------------------
real_model = pytest.mark.skipif(bool(spec_problems("local")), reason="default model unavailable")
SMALL = ("--on", "problems", "--max-tokens", "24", "--kl-prompts", "2")


@real_model
def test_default_model_end_to_end_and_a_rerun_makes_no_model_call(capsys, out, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    argv = ("local", *SMALL, "--k", "2", "--baseline", "local", "--reference", "local")
    code, record, shown, _ = dataflow_eval(capsys, out, runs, *argv)
    assert code == 0, shown
    m = record["metrics"]
    assert set(m) == {"pass@1", "pass@2", "format", "win_rate", "kl", "distinct_2"}
    assert 0 <= m["pass@1"]["value"] <= m["pass@2"]["value"] <= 1 and m["pass@1"]["samples"] == 2
    assert m["pass@1"]["ci95"][0] <= m["pass@1"]["value"] <= m["pass@1"]["ci95"][1]
    assert m["kl"]["per_token"] == 0 and m["kl"]["per_sequence"] == 0 and m["kl"]["samples"] == 2
    assert m["kl"]["tokens"] > 0
    # against itself both responses of a pair are the same text: no order-consistent winner, so all ties
    assert m["win_rate"]["value"] == 0.5 and m["win_rate"]["ties"] == 3
    samples = pl.read_parquet(Path(record["build"]) / "samples" / "data.parquet")
    assert samples.height == 6 and set(samples["correct"].drop_nulls()) <= {0.0, 1.0}
    finished = samples["response_finish_reason"] == "stop"
    answered = ~samples["correct_detail"].is_in(["no answer found in the response", "empty response"])
    assert m["format"]["finished"] == round(finished.mean(), 4)
    assert m["format"]["value"] == round((finished & answered).mean(), 4)
    assert record["data"]["output"] == "problems" and record["model"] == {
        "given": "local", "spec": "local", "run": None, "trainer": None, "base_model": None}
    assert [record["options"][name] for name in ("baseline", "reference", "judge", "k")] == ["local"] * 3 + [2]
    assert [g["gate"] for g in record["gates"]] == ["distinct_2"]

    monkeypatch.setattr(llm_client, "open_backend", _no_model_load)
    monkeypatch.setattr(kl_module, "sequence_kls", _no_model_load)
    unload_backends()
    code, again, _, err = dataflow_eval(capsys, out, runs, *argv)
    assert code == 0 and again == record
    assert "[build]" not in err  # every node of the evaluation's build was cached


@real_model
def test_a_dpo_run_is_compared_with_its_base_model_and_checked_by_the_dpo_gates(capsys, out, tmp_path):
    run_dir = tmp_path / "runs" / "dpo-feedbeef0001"
    run_dir.mkdir(parents=True)
    (run_dir / "model").symlink_to(ensure_default_model(), target_is_directory=True)  # trained to be its base
    (run_dir / "run.json").write_text(json.dumps({"trainer": "dpo", "base_model": "local", "status": "finished",
                                                  "inputs": []}))
    code, record, _, err = dataflow_eval(capsys, out, tmp_path / "runs", "dpo-feed", *SMALL,
                                         "--metrics", "win_rate,kl,distinct_2")
    assert Path(record["path"]).parent == run_dir / "eval"
    assert record["model"]["run"] == "dpo-feedbeef0001" and record["model"]["trainer"] == "dpo"
    assert (record["options"]["baseline"], record["options"]["reference"]) == ("local", "local")
    assert [g["gate"] for g in record["gates"]] == ["win_rate", "kl", "distinct_2"]
    assert record["metrics"]["kl"]["per_token"] == 0  # the same weights
    failed = [g["measure"] for g in record["gates"] if not g["passed"]]
    assert code == (1 if failed else 0)
    if failed:
        assert all(measure in one_paragraph_error(err) for measure in failed)


def _no_model_load(*args, **kwargs):
    raise AssertionError("a model was loaded")

