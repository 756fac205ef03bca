"""LLM judges with a scripted judge backend: scores, retries, errors as rejects, aggregation,
pairwise position bias, the reply schema they send, and probability-weighted verdicts."""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import pytest

from dataflow import Pipeline
from dataflow.llm.client import unload_backends
from dataflow.llm import register_backend
from dataflow.llm.types import Completion, Response
from dataflow.operators import JudgeScore, PairwiseJudge
from dataflow.operators.judging.score import parse_score


class ScriptedJudge:
    """Pointwise: replies SCRIPT[response text][call], one per sample. Pairwise: prefers the
    response containing "good"; with "biased" in the prompt it always picks the first shown."""

    script: dict[str, list[str | Completion]] = {}
    calls: Counter = Counter()
    samplings: list = []

    def __init__(self, spec):
        self.chunk_size, self.name = 64, spec.target

    def prepare(self, node, requests, labels):
        pass

    def generate(self, requests):
        ScriptedJudge.samplings += [r.sampling for r in requests]
        return [self._answer(next(text for role, text in r.messages if role == "user"), r.sampling.n)
                for r in requests]

    def _answer(self, prompt: str, n: int) -> Response:
        if "[Response A]" in prompt:
            a = re.search(r"\[Response A\]\n(.*?)\n\n\[Response B\]", prompt, re.S).group(1)
            winner = "A" if "biased" in prompt or "good" in a else "B"
            return Response([Completion(json.dumps({"rationale": "compared", "winner": winner}), "stop", 5)], 10)
        response = re.search(r"\[Response\]\n(.*?)\n\nReply with", prompt, re.S).group(1)
        replies = []
        for _ in range(n):
            ScriptedJudge.calls[response] += 1
            script = ScriptedJudge.script.get(response, [json.dumps({"rationale": "ok", "score": 5})])
            reply = script[min(ScriptedJudge.calls[response], len(script)) - 1]
            if reply == "FAIL":
                return Response(error="HTTP 503: overloaded")
            if isinstance(reply, Completion):
                replies.append(reply)
                continue
            replies.append(Completion(reply.replace("{model}", self.name), "length" if reply.endswith("...") else "stop", 5))
        return Response(replies, 10)


register_backend("judge", ScriptedJudge, lambda spec: f"judge:{spec.target}")


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFLOW_LLM_CACHE", str(tmp_path / "llm_cache.sqlite"))
    ScriptedJudge.script, ScriptedJudge.calls, ScriptedJudge.samplings = {}, Counter(), []
    unload_backends()
    yield
    unload_backends()


def judged(builder, op, responses, prompt="What is 2+2?"):
    p = Pipeline("judge")
    rows = [{"prompt": prompt, "response": r} for r in responses]
    p.output("o", p.from_rows(rows, name="src").apply(op, name="judged"))
    builder.build(p)
    return builder.output("o")


def test_scores_rationale_and_model(builder):
    ScriptedJudge.script = {"4": ['{"rationale": "correct", "score": 9}'],
                            "5": ['Sure! {"rationale": "wrong sum", "score": 2} Hope this helps']}
    out = judged(builder, JudgeScore(models=("judge:a",)), ["4", "5"])
    assert out.select("response", "score", "score_rationale", "score_n", "judge_model").rows() == [
        ("4", 9.0, "correct", 1, "judge:a"), ("5", 2.0, "wrong sum", 1, "judge:a")]


def test_invalid_replies_are_retried_then_rejected_never_zero(builder):
    ScriptedJudge.script = {
        "empty": [""], "prose": ["I think it is quite good."], "range": ['{"score": 11}'],
        "cut": ['{"rationale": "the answer is...'], "late": ["no idea", '{"rationale": "fine", "score": 7}'],
    }
    out = judged(builder, JudgeScore(models=("judge:a",), max_attempts=2), list(ScriptedJudge.script))
    assert out.select("response", "score").rows() == [("late", 7.0)]
    details = dict(builder.rejects("judged").select("id", "detail").rows())
    assert details["src-1"].startswith("empty reply")
    assert details["src-2"].startswith("no JSON score in the reply")
    assert details["src-3"].startswith("score 11 is not an integer from 1 to 10")
    assert details["src-4"].startswith("truncated reply")
    assert set(builder.rejects("judged")["reason"]) == {"judge_invalid"}
    assert ScriptedJudge.calls["empty"] == 2  # asked again with a new seed


def test_samples_and_judges_aggregate_with_agreement(builder):
    ScriptedJudge.script = {"4": ['{"score": 8}', '{"score": 8}', '{"score": 2}']}
    out = judged(builder, JudgeScore(models=("judge:a",), samples=3, temperature=0.7, aggregate="median"), ["4"])
    assert out.select("score", "score_agreement", "score_n").row(0) == (8.0, 2 / 3, 3)
    ScriptedJudge.calls.clear()
    out = judged(builder, JudgeScore(models=("judge:a", "judge:b"), aggregate="mean", samples=1), ["4"])
    assert out.select("score", "score_n", "judge_model").row(0) == (8.0, 2, "judge:a,judge:b")


def test_failed_requests_are_rejected_and_retried_next_build(builder):
    ScriptedJudge.script = {"4": ["FAIL", '{"score": 6}']}
    out = judged(builder, JudgeScore(models=("judge:a",)), ["4", "5"])
    assert out["response"].to_list() == ["5"]
    assert builder.rejects("judged")["reason"].to_list() == ["llm_error"]
    out = judged(builder, JudgeScore(models=("judge:a",)), ["4", "5"])
    assert out.select("response", "score").rows() == [("4", 6.0), ("5", 5.0)]


def test_pairwise_verdicts_need_both_orders_and_record_position_bias(builder):
    p = Pipeline("pairs")
    rows = [{"prompt": "Q1", "response_a": "good answer", "response_b": "poor answer"},
            {"prompt": "Q2", "response_a": "poor answer", "response_b": "good answer"},
            {"prompt": "biased Q3", "response_a": "one", "response_b": "two"}]
    p.output("o", p.from_rows(rows, name="src").apply(PairwiseJudge(models=("judge:a",)), name="compared"))
    builder.build(p)
    assert builder.output("o")["verdict"].to_list() == ["a", "b", "tie"]
    metrics = builder.sql("select metrics from nodes where name = 'compared'")["metrics"][0]
    assert metrics["consistent_share"] == pytest.approx(2 / 3, abs=1e-3)
    assert metrics["position_bias_first"] == pytest.approx(4 / 6, abs=1e-3)


def weighed(before: list[str], value: dict[str, float], after: list[str], following: dict[str, float] | None = None
            ) -> Completion:
    """A reply whose tokens are ``before``, the most likely of ``value``, then ``after``; the
    alternatives at the value position are ``value`` (probabilities), and ``following`` the
    alternatives at the position after it."""
    chosen = max(value, key=value.get)
    tokens = [*before, chosen, *after]
    top = [{t: 0.0} for t in tokens]
    top[len(before)] = {t: math.log(p) for t, p in value.items()}
    if following:
        top[len(before) + 1] = {t: math.log(p) for t, p in following.items()}
    return Completion("".join(tokens), "stop", len(tokens), tokens, top)


def test_judges_send_their_reply_schema_and_ask_for_logprobs(builder):
    judged(builder, JudgeScore(models=("judge:a",), low=1, high=5), ["4"])
    sent = ScriptedJudge.samplings[0]
    schema = json.loads(sent.json_schema)
    assert list(schema["properties"]) == ["score", "rationale"]  # the verdict is written first
    assert schema["properties"]["score"] == {"type": "integer", "enum": [1, 2, 3, 4, 5]}
    assert sent.logprobs == 20
    ScriptedJudge.samplings = []
    judged(builder, JudgeScore(models=("judge:a",), weighted=False), ["4"])
    assert ScriptedJudge.samplings[0].logprobs == 0


def test_weighted_scores_are_the_expected_score_with_argmax_and_entropy(builder):
    head = ['{"', 'score', '":', ' ']
    ScriptedJudge.script = {
        "4": [weighed(head, {"7": 0.6, "8": 0.3, "6": 0.1, '"': 0.5}, [', "rationale": "r"}'])],
        # digits split: "1" then "0" is 10; "1" then "," is 1
        "5": [weighed(head, {"1": 0.5, "9": 0.5}, ['0', ', "rationale": "r"}'], {"0": 0.8, ",": 0.2})],
    }
    out = judged(builder, JudgeScore(models=("judge:a",)), ["4", "5"])
    first, second = out.select("score", "score_argmax", "score_entropy").rows()
    assert first[0] == pytest.approx(7 * 0.6 + 8 * 0.3 + 6 * 0.1) and first[1] == 7
    assert first[2] == pytest.approx(-sum(p * math.log2(p) for p in (0.6, 0.3, 0.1)))
    assert second[0] == pytest.approx(10 * 0.4 + 1 * 0.1 + 9 * 0.5) and second[1] == 9


def test_without_logprobs_scores_are_the_written_integers_and_the_summary_says_so(builder):
    ScriptedJudge.script = {"4": ['{"score": 6, "rationale": "r"}']}
    out = judged(builder, JudgeScore(models=("judge:a",)), ["4"])
    assert out.select("score", "score_argmax", "score_entropy").row(0) == (6.0, 6, None)
    metrics = builder.sql("select metrics from nodes where name = 'judged'")["metrics"][0]
    assert "no score probabilities" in metrics["weighting"]


def test_pairwise_probabilities_from_both_orders(builder):
    ScriptedJudge.script = {}
    head = ['{"', 'winner', '":', ' "']
    shown_first = weighed(head, {"A": 0.8, "B": 0.2, "tie": 0.1}, ['", "rationale": "r"}'])
    original = ScriptedJudge._answer
    ScriptedJudge._answer = lambda self, prompt, n: Response([shown_first], 10)  # always A, at 0.8
    try:
        p = Pipeline("pairs")
        rows = [{"prompt": "Q", "response_a": "x", "response_b": "y"}]
        p.output("o", p.from_rows(rows, name="src").apply(PairwiseJudge(models=("judge:a",)), name="compared"))
        builder.build(p)
    finally:
        ScriptedJudge._answer = original
    out = builder.output("o")
    assert out.select("verdict", "verdict_p_a_first", "verdict_p_a_second", "verdict_p_a").row(0) == pytest.approx(
        ("tie", 0.8, 0.2, 0.5))


def test_parse_score_accepts_json_and_labelled_scores():
    assert parse_score('{"score": "7", "rationale": "r"}', "stop", 1, 10) == (7, "r")
    assert parse_score("Score: 4\nIt is fine.", "stop", 1, 10)[0] == 4
    assert parse_score('{"score": 3.5}', "stop", 1, 10).startswith("score 3.5 is not an integer")
