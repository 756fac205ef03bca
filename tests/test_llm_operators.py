"""Generation operators and the request cache, with a scripted fake backend (scheme ``fake:``)."""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from dataclasses import dataclass

import polars as pl
import pytest

from dataflow import Pipeline
from dataflow.errors import CompileError, DataflowError
from dataflow.llm.cache import RequestCache, sample_key
from dataflow.llm.client import LLMClient, unload_backends
from dataflow.llm import parse_spec, register_backend, spec_problems
from dataflow.llm.types import Completion, Request, Response, Sampling
from dataflow.operator import Rejection, identity_field
from dataflow.operators import (BestOfK, ConversationPrompt, Generate, LLMOperator, PassRate, PreferencePairs,
                                StructuredGenerate, ToPrompt)


class FakeBackend:
    """Answers ``echo <last user text> k=<sample> t=<temperature> seed=<seed>``; scripted replies
    per user text: a list of texts (one per call, the last repeats) or "FAIL" / "CRASH"."""

    loads = 0
    calls: Counter = Counter()
    script: dict[str, list[str]] = {}
    sizes: list[int] = []
    sent: list[tuple] = []  # the messages of every request

    def __init__(self, spec):
        FakeBackend.loads += 1
        self.chunk_size = int(spec.options.get("chunk", 100))
        self.context_length = 1000

    def prepare(self, node, requests, labels):
        for label, r in zip(labels, requests):
            if len(r.messages[-1][1]) > self.context_length:
                raise DataflowError(f"node '{node}': row id={label} is longer than the model context")

    def generate(self, requests):
        FakeBackend.sizes.append(len(requests))
        answers = []
        for r in requests:
            text = r.messages[-1][1]
            FakeBackend.calls[text] += 1
            FakeBackend.sent.append(r.messages)
            scripted = FakeBackend.script.get(text)
            if scripted:
                reply = scripted[min(FakeBackend.calls[text], len(scripted)) - 1]
                if reply == "CRASH":
                    raise RuntimeError("backend crashed")
                if reply == "FAIL":
                    answers.append(Response(error="HTTP 503: overloaded"))
                    continue
                finish = "length" if reply.endswith("...") else "stop"
                answers.append(Response([Completion(reply, finish, 3)] * r.sampling.n, 7))
                continue
            s = r.sampling
            answers.append(Response([Completion(f"echo {text} k={k} t={s.temperature} seed={s.seed}", "stop", 4)
                                     for k in range(s.n)], len(text.split())))
        return answers


register_backend("fake", FakeBackend, lambda spec: f"fake:{spec.target}")


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFLOW_LLM_CACHE", str(tmp_path / "llm_cache.sqlite"))
    FakeBackend.loads, FakeBackend.calls, FakeBackend.script, FakeBackend.sizes = 0, Counter(), {}, []
    FakeBackend.sent = []
    unload_backends()
    yield
    unload_backends()


def questions(n: int) -> list[dict]:
    return [{"q": f"question {i}", "topic": "math" if i % 2 else "art"} for i in range(n)]


def build_one(builder, op, rows, rebuild=()):
    unload_backends()  # as in a new process
    p = Pipeline("t")
    src = p.from_rows(rows, name="rows")
    p.output("out", src.apply(op, name="gen"))
    return builder.build(p, rebuild=rebuild)


def node_metrics(report, name="gen") -> dict:
    return next(s.metrics for s in report.stats if s.name == name)


def test_generate_fills_the_response_and_usage_columns(builder):
    op = Generate("About {topic}: {q}", model="fake:m", system="Be brief.", max_tokens=32)
    report = build_one(builder, op, questions(3))
    out = builder.output("out").sort("id")
    assert out.columns == ["id", "q", "topic", "response", "response_finish_reason", "response_tokens_in",
                           "response_tokens_out"]
    assert out["response"][0] == "echo About art: question 0 k=0 t=0.7 seed=0"
    assert out["response_finish_reason"].to_list() == ["stop"] * 3
    metrics = node_metrics(report)
    assert metrics.pop("model_load_s") >= 0
    assert metrics == {"model": "fake:m", "cache_hits": 0, "llm_calls": 3, "tokens_in": 12, "tokens_out": 12}


def test_jinja_templates_and_conversation_columns(builder):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "old"}],
             "name": "Ann"}]
    build_one(builder, Generate(conversation="messages", model="fake:m", system="sys"), rows)
    assert builder.output("out")["response"][0].startswith("echo hi ")
    build_one(builder, Generate("{% if name %}Dear {{ name | upper }}{% endif %}", model="fake:m"), rows)
    assert builder.output("out")["response"][0].startswith("echo Dear ANN ")


def test_a_rebuild_makes_zero_model_calls_and_does_not_load_the_model(builder):
    op = Generate("{q}", model="fake:m")
    build_one(builder, op, questions(5))
    assert sum(FakeBackend.calls.values()) == 5 and FakeBackend.loads == 1
    report = build_one(builder, op, questions(5), rebuild=("gen",))  # node rebuilt, requests cached
    assert node_metrics(report) == {"model": "fake:m", "cache_hits": 5}
    assert sum(FakeBackend.calls.values()) == 5 and FakeBackend.loads == 1
    report = build_one(builder, op, questions(6))  # one new row: one call
    assert node_metrics(report)["llm_calls"] == 1 and node_metrics(report)["cache_hits"] == 5


def test_model_identity_template_and_sampling_change_the_fingerprint_but_runtime_options_do_not(builder):
    def fingerprint(op):
        p = Pipeline("t")
        p.output("out", p.from_rows(questions(1), name="rows").apply(op, name="gen"))
        from dataflow.build import plan
        return plan(p, builder.out)[1]["gen"].fingerprint

    base = fingerprint(Generate("{q}", model="fake:m"))
    assert fingerprint(Generate("{q}", model="fake:m?chunk=7")) == base
    assert fingerprint(Generate("{q}", model="fake:other")) != base
    assert fingerprint(Generate("Q: {q}", model="fake:m")) != base
    assert fingerprint(Generate("{q}", model="fake:m", temperature=0.2)) != base
    assert fingerprint(Generate("{q}", model="fake:m", seed=1)) != base


SERVER = "openai:http://127.0.0.1:9/v1#m"  # a spec that is never asked: compiling checks it


def test_bad_specs_and_templates_fail_at_compile_time_without_loading_a_model(builder, tmp_path):
    cases = [
        (Generate("{question}", model="fake:m"), "column 'question' not found"),
        (Generate("{q}", model="gpt4"), "unknown model spec 'gpt4'"),
        (Generate("{q}", model=f"hf:{tmp_path}/nowhere"), "config.json missing"),
        (Generate("{q}", model="openai:localhost:8000"), "write openai:BASE_URL#MODEL"),
        (Generate("{q}", model="local?thread=2"), "unknown option(s) ['thread']"),
        (Generate("{q}", model="local?dtype=int8"), "option dtype='int8' must be one of auto, float32"),
        (Generate("{q}", model="local?threads=two"), "option threads='two' must be a whole number of at least 1"),
        (Generate("{q}", model="local?batch_size=0"), "option batch_size='0' must be a whole number of at least 1"),
        (Generate("{q}", model=f"{SERVER}?timeout=0"), "option timeout='0' must be a number above 0"),
        (Generate("{q}", model=f"{SERVER}?backoff=-1"), "option backoff='-1' must be a number of at least 0"),
        (Generate("{}", model="fake:m"), "named fields"),
        (Generate("{{ q ", model="fake:m"), "does not parse"),
        (Generate("{q}", model="fake:m", temperature=-1.0), "temperature must be between 0 and 5"),
        (Generate(model="fake:m"), "exactly one of prompt"),
        (Generate(conversation="q", model="fake:m"), "column 'q' is String but the operator needs List"),
        (StructuredGenerate("{q}", model="fake:m", json_schema={"type": "nonsense"}), "not a valid JSON schema"),
    ]
    for op, message in cases:
        p = Pipeline("t")
        p.output("out", p.from_rows(questions(1), name="rows").apply(op, name="gen"))
        with pytest.raises(CompileError) as caught:
            p.compile()
        assert "node 'gen'" in str(caught.value) and message in str(caught.value), str(caught.value)
    assert FakeBackend.loads == 0


def test_a_prompt_longer_than_the_context_fails_before_the_first_batch(builder):
    with pytest.raises(DataflowError, match="node 'gen': row id=rows-2 is longer than the model context"):
        build_one(builder, Generate("{q}", model="fake:m"), [{"q": "short"}, {"q": "x" * 2000}])
    assert sum(FakeBackend.calls.values()) == 0


def test_failed_requests_are_rejects_and_only_they_are_retried_next_build(builder):
    FakeBackend.script = {"question 1": ["FAIL", "fixed"]}
    op = Generate("{q}", model="fake:m")
    report = build_one(builder, op, questions(3))
    assert sorted(builder.output("out")["q"]) == ["question 0", "question 2"]
    rejects = builder.rejects("gen")
    assert rejects.select("id", "reason", "detail").rows() == [("rows-2", "llm_error", "HTTP 503: overloaded")]
    assert node_metrics(report)["llm_failures"] == 1
    report = build_one(builder, op, questions(3))
    assert builder.status(report)["gen"] == "built"
    assert "failures" in next(s.reason for s in report.stats if s.name == "gen")
    assert FakeBackend.calls == Counter({"question 0": 1, "question 1": 2, "question 2": 1})
    assert builder.output("out").sort("id")["response"].to_list()[1] == "fixed"
    assert builder.status(build_one(builder, op, questions(3)))["gen"] == "cached"


def test_a_crash_mid_build_keeps_finished_chunks(builder):
    FakeBackend.script = {"question 5": ["CRASH", "recovered"]}
    op = Generate("{q}", model="fake:m?chunk=2")
    with pytest.raises(RuntimeError, match="backend crashed"):
        build_one(builder, op, questions(8))
    done_before = sum(FakeBackend.calls.values())
    report = build_one(builder, op, questions(8))
    assert builder.output("out").height == 8
    assert node_metrics(report)["cache_hits"] == done_before - 2  # only the crashed chunk is asked again
    assert node_metrics(report)["llm_calls"] == 8 - (done_before - 2)


def test_best_of_k_long_format_with_a_temperature_schedule(builder):
    op = BestOfK(prompt="{q}", model="fake:m", k=5, temperatures=(0.3, 0.7, 1.0), seed=7)
    report = build_one(builder, op, questions(2))
    out = builder.output("out")
    assert out["id"].to_list() == [f"rows-{r}/{k}" for r in (1, 2) for k in range(5)]
    assert out["prompt_id"].to_list() == ["rows-1"] * 5 + ["rows-2"] * 5
    assert out["sample_idx"].to_list() == [0, 1, 2, 3, 4] * 2
    assert out["temperature"].to_list() == [0.3, 0.7, 1.0, 0.3, 0.7] * 2
    assert out["seed"].unique().to_list() == [7]
    assert out["response"][3] == "echo question 0 k=1 t=0.3 seed=7"  # sample 1 of the 0.3 request
    assert node_metrics(report)["llm_calls"] == 6  # one request with n per temperature and prompt


def test_best_of_k_flags_and_counts_candidates_cut_off_at_max_tokens(builder):
    FakeBackend.script = {"question 0": ["cut off..."]}
    report = build_one(builder, BestOfK(prompt="{q}", model="fake:m", k=2), questions(2))
    reasons = builder.output("out").select("prompt_id", "response_finish_reason").rows()
    assert reasons == [("rows-1", "length"), ("rows-1", "length"), ("rows-2", "stop"), ("rows-2", "stop")]
    assert node_metrics(report)["truncated"] == 2


def as_messages(turns: list[dict]) -> tuple:
    return tuple((t["role"], t["content"]) for t in turns)


def test_a_grpo_prompt_is_the_conversation_its_pass_rate_was_measured_on(builder):
    p = Pipeline("grpo")
    problems = p.from_rows([{"question": "What is 2+2?", "answer": "4"}, {"question": "What is 3+3?", "answer": "6"}],
                           name="problems")
    samples = problems.apply(ToPrompt(system="End with: The answer is <number>."), name="prompts").apply(
        BestOfK(conversation="prompt", model="fake:m", k=2), name="samples")
    rates = samples.map(reward=pl.col("sample_idx").cast(pl.Float64), name="scored").apply(PassRate(), name="rates")
    p.output("grpo", rates)
    builder.build(p)
    prompts = [as_messages(turns) for turns in builder.output("grpo")["prompt"].to_list()]
    assert prompts[0] == (("system", "End with: The answer is <number>."), ("user", "What is 2+2?"))
    assert sorted(prompts) == sorted(set(FakeBackend.sent))


def test_judged_candidates_hold_the_prompt_sent_and_the_reference_answer_by_its_name(builder):
    rows = [{"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]}]
    p = Pipeline("dpo")
    prompts = p.from_rows(rows, name="chats").apply(ConversationPrompt(system="Answer briefly."), name="prompts")
    candidates = prompts.apply(BestOfK(conversation="prompt", model="fake:m", k=2), name="candidates")
    p.output("candidates", candidates)
    p.output("pairs", candidates.map(score=pl.col("sample_idx"), name="scored").apply(PreferencePairs(), name="pairs"))
    builder.build(p)
    out = builder.output("candidates")
    assert "messages" not in out.columns and out["reference_answer"].to_list() == ["Blue."] * 2
    sent = (("system", "Answer briefly."), ("user", "Name a colour."))
    assert set(FakeBackend.sent) == {sent}
    assert [as_messages(turns) for turns in builder.output("pairs")["prompt"].to_list()] == [sent]


def test_a_conversation_without_a_user_turn_has_no_prompt_and_a_blank_system_fails_compile(builder):
    unanswered = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                  {"role": "user", "content": "Bye"}]
    rows = [{"messages": [{"role": "system", "content": "Be kind."}, {"role": "assistant", "content": "Hello."}]},
            {"messages": unanswered}]
    p = Pipeline("prompts")
    p.output("out", p.from_rows(rows, name="chats").apply(ConversationPrompt(), name="prompts"))
    builder.build(p)
    assert builder.output("out").select("prompt", "reference_answer").rows() == [(unanswered, None)]
    assert builder.rejects("prompts").select("id", "detail").rows() == [("chats-1", "messages: no user turn")]
    for op in (ConversationPrompt(system=" "), ToPrompt(system="")):
        p = Pipeline("blank")
        p.output("out", p.from_rows([{"question": "q", "answer": "a"}], name="src").apply(op, name="bad"))
        with pytest.raises(CompileError, match="system must be a non-empty string or None"):
            p.compile()


def test_best_of_k_rejects_a_prompt_whole_when_one_request_fails(builder):
    FakeBackend.script = {"question 0": ["FAIL"]}
    build_one(builder, BestOfK(prompt="{q}", model="fake:m", k=2), questions(2))
    assert builder.output("out")["prompt_id"].unique().to_list() == ["rows-2"]
    assert builder.rejects("gen")["id"].to_list() == ["rows-1"]


SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


def test_structured_generation_retries_invalid_output_then_rejects_with_the_reason(builder):
    hint = "\n\nAnswer with a JSON value only, matching this JSON schema:\n" + json.dumps(SCHEMA, separators=(",", ":"))
    FakeBackend.script = {"good" + hint: ['{"answer": 4}'],
                          "second try" + hint: ["not json", '```json\n{"answer": 5}\n```'],
                          "wrong type" + hint: ['{"answer": "four"}'],
                          "never json" + hint: ["sorry"], "cut short" + hint: ['{"answer": ...']}
    op = StructuredGenerate("{q}", model="fake:m", json_schema=SCHEMA, max_attempts=3)
    build_one(builder, op, [{"q": q} for q in ("good", "second try", "wrong type", "never json", "cut short")])
    out = builder.output("out").sort("id")
    assert out.select("q", "response", "response_attempts").rows() == [("good", '{"answer": 4}', 1),
                                                                        ("second try", '{"answer": 5}', 2)]
    rejects = builder.rejects("gen")
    assert rejects["reason"].to_list() == ["schema_mismatch", "invalid_json", "truncated_json"]
    assert "max_tokens (256) ran out" in json.loads(rejects["detail"][2])["error"]
    detail = json.loads(rejects["detail"][0])
    assert detail["attempts"] == 3 and "answer" in detail["error"] and detail["output"] == '{"answer": "four"}'
    report = build_one(builder, op, [{"q": q} for q in ("good", "second try", "wrong type", "never json", "cut short")])
    assert builder.status(report)["gen"] == "cached"  # invalid output is a model answer, not a failure


def test_warm_cache_rebuild_of_a_thousand_requests(builder):
    op = Generate("{q}", model="fake:m?chunk=250")
    build_one(builder, op, questions(1000))
    assert FakeBackend.sizes == [250] * 4
    report = build_one(builder, op, questions(1000), rebuild=("gen",))
    assert node_metrics(report) == {"model": "fake:m?chunk=250", "cache_hits": 1000} and sum(FakeBackend.calls.values()) == 1000


def _write_samples(path: str, worker: int) -> None:
    cache = RequestCache(path)
    for batch in range(20):
        samples = [(f"w{worker}-{batch}-{i}", Completion("x", "stop", 1), 1) for i in range(50)]
        cache.put_many("m", samples, [])


def test_the_cache_takes_concurrent_writers(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    RequestCache(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_samples, args=(path, w)) for w in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert RequestCache(path).db.execute("select count(*) from samples").fetchone()[0] == 3 * 20 * 50


def test_a_damaged_or_unwritable_cache_is_an_error_naming_the_file_and_the_fix(tmp_path):
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_text("not sqlite")
    with pytest.raises(DataflowError, match=r"cannot open the LLM request cache .*damaged.sqlite \(DatabaseError: "
                                            r"file is not a database\); it is damaged: move it away"):
        RequestCache(damaged)
    cache = RequestCache(tmp_path / "c.sqlite")
    cache.db.execute("drop table samples")  # as a write that fails would (a full disk)
    with pytest.raises(DataflowError, match=r"cannot write to the LLM request cache .*c.sqlite \(OperationalError: "
                                            r"no such table: samples\); free disk space"):
        cache.put_many("m", [("k", Completion("x", "stop", 1), 1)], [])


def test_cache_keys_cover_model_messages_sampling_and_sample_index():
    request = Request((("user", "hi"),), Sampling(seed=1))
    key = sample_key("m", request, 0)
    assert key != sample_key("m2", request, 0)
    assert key != sample_key("m", Request((("user", "hi!"),), Sampling(seed=1)), 0)
    assert key != sample_key("m", Request((("user", "hi"),), Sampling(seed=2)), 0)
    assert key != sample_key("m", Request((("user", "hi"),), Sampling(seed=1, temperature=0.1)), 0)
    assert key != sample_key("m", request, 1)
    assert key == sample_key("m", Request((("user", "hi"),), Sampling(seed=1, n=4)), 0)


def test_client_fills_missing_samples_when_n_grows(tmp_path):
    client = LLMClient("fake:m", cache=RequestCache(tmp_path / "c.sqlite"))
    two = client.generate([Request((("user", "a"),), Sampling(n=2))])[0]
    four = client.generate([Request((("user", "a"),), Sampling(n=4))])[0]
    assert [c.text for c in four.completions[:2]] == [c.text for c in two.completions]
    assert len(four.completions) == 4


def test_spec_parsing():
    assert parse_spec("local").scheme == "local"
    spec = parse_spec("openai:https://api.example.com/v1#gpt-x?concurrency=4")
    assert (spec.target, spec.model, spec.option("concurrency", 16)) == ("https://api.example.com/v1", "gpt-x", 4)
    assert parse_spec("hf:/models/x?threads=2").option("threads", 1) == 2
    assert spec_problems("vllm:/nowhere")[0].startswith("model spec 'vllm:/nowhere': no model at /nowhere")


@dataclass(frozen=True)
class Exclaim(LLMOperator):
    """A new LLM operator in two methods, as ARCHITECTURE.md says: what a row asks, what a reply means."""

    model: str = identity_field("fake:m")

    def model_specs(self):
        return (self.model,)

    def required_columns(self):
        return {"q": str}

    def generated_columns(self):
        return {"exclaimed": pl.String(), "attempt": pl.Int64()}

    def messages(self, row):
        return (("user", row["q"]),)

    def parse(self, reply, row):
        if not reply.text.endswith("!"):
            raise Rejection("not_excited", reply.text)
        return {"exclaimed": reply.text, "attempt": reply.attempt}


def test_a_new_llm_operator_gets_cache_retries_and_rejects_from_the_base(builder):
    FakeBackend.script = {"a": ["yes!"], "b": ["no", "fine!"], "c": ["never"], "d": ["FAIL"]}
    report = build_one(builder, Exclaim(max_attempts=2), [{"q": q} for q in "abcd"])
    out = builder.output("out").sort("id")
    assert out.select("q", "exclaimed", "attempt").rows() == [("a", "yes!", 0), ("b", "fine!", 1)]
    assert builder.rejects("gen").select("id", "reason", "detail").rows() == [
        ("rows-3", "not_excited", "never"), ("rows-4", "llm_error", "HTTP 503: overloaded")]
    assert node_metrics(report)["llm_calls"] == 4 + 2  # the first asks, then one retry each for b and c
    again = build_one(builder, Exclaim(max_attempts=2), [{"q": q} for q in "abcd"])
    assert builder.status(again)["gen"] == "built"  # the failed request is retried, the rest from the cache
    assert node_metrics(again)["llm_calls"] == 1 and node_metrics(again)["cache_hits"] == 5


def test_a_cache_written_before_logprobs_is_read_and_extended(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the table as builds before logprobs wrote it
        db.execute("create table samples (key text primary key, model text not null, text text not null, "
                   "finish_reason text not null, tokens_in integer, tokens_out integer, created real not null)")
        db.execute("insert into samples values ('old', 'm', 'hello', 'stop', 3, 1, 0)")
    cache = RequestCache(path)
    assert cache.get_many(["old"])["old"][0] == Completion("hello", "stop", 1)
    cache.put_many("m", [("new", Completion("hi", "stop", 1, ["hi"], [{"hi": -0.1, "yo": -2.3}]), 3)], [])
    assert cache.get_many(["new"])["new"][0].top_logprobs == [{"hi": -0.1, "yo": -2.3}]
