"""The in-process backends on the real packaged default model (SmolLM2-135M-Instruct): transformers
(``local``) and llama.cpp (``llamacpp``, the same GGUF as shipped), each through the same tests.

The first run converts the packaged GGUF once into the user cache (~30 s); later runs load the
converted directory. Prompts are few and short, and max_tokens small, to keep this fast.
"""

from __future__ import annotations

import re

import pytest

from dataflow import Pipeline
from dataflow.errors import DataflowError
from dataflow.llm import open_backend, spec_problems
from dataflow.llm.cache import RequestCache
from dataflow.llm.client import LLMClient, unload_backends
from dataflow.llm.types import Request, Sampling
from dataflow.operators import BestOfK, Generate

pytest.importorskip("transformers")
if spec_problems("local"):
    pytest.skip(f"default model unavailable: {spec_problems('local')}", allow_module_level=True)

QUESTIONS = ["What is the capital of France?", "Name three colors.", "Write a haiku about rain.",
             "What is 2 + 2?", "Say hello in Spanish."]


def ask(text: str, **sampling) -> Request:
    return Request((("user", text),), Sampling(**{"max_tokens": 8, **sampling}))


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATAFLOW_LLM_CACHE", str(tmp_path_factory.mktemp("llm") / "cache.sqlite"))
        yield


@pytest.fixture(scope="module", params=["local?batch_size=2", "llamacpp?batch_size=2"])
def backend(request):
    return open_backend(request.param)


def texts(responses) -> list[list[str]]:
    return [[c.text for c in r.completions] for r in responses]


def test_batched_greedy_output_equals_one_prompt_at_a_time(backend):
    batched = backend.generate([ask(q, temperature=0.0) for q in QUESTIONS])  # 5 prompts through 2 slots
    alone = [backend.generate([ask(q, temperature=0.0)])[0] for q in QUESTIONS[:2]]
    assert texts(batched)[:2] == texts(alone)
    assert "Red" in batched[1].completions[0].text
    assert all(r.tokens_in > 20 and 0 < r.completions[0].tokens_out <= 8 for r in batched)
    assert {r.completions[0].finish_reason for r in batched} <= {"stop", "length"}


def test_seeded_sampling_is_reproducible_and_samples_differ(backend):
    request = ask("Write a haiku about rain.", temperature=1.0, n=3, seed=11)
    first, again = backend.generate([request])[0], backend.generate([ask("Hi", temperature=1.0), request])[1]
    assert texts([first]) == texts([again])  # sample k depends on (seed, k), not on the batch
    assert len(set(texts([first])[0])) == 3
    other = backend.generate([ask("Write a haiku about rain.", temperature=1.0, n=3, seed=12)])[0]
    assert texts([other]) != texts([first])


def test_stop_strings_cut_the_output(backend):
    response = backend.generate([ask("Count from 1 to 9, separated by commas.", temperature=0.0, max_tokens=24,
                                     stop=("4",))])[0]
    assert "4" not in response.completions[0].text and response.completions[0].finish_reason == "stop"


def test_a_prompt_longer_than_the_context_fails_before_generating(backend):
    with pytest.raises(DataflowError, match="node 'gen'.*longer than the model context"):
        backend.prepare("gen", [ask("word " * 9000)], ["row-1"])


def test_generate_node_on_the_default_model_and_a_rebuild_without_calls(builder, tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFLOW_LLM_CACHE", str(tmp_path / "cache.sqlite"))

    def run():
        unload_backends()
        p = Pipeline("t")
        rows = p.from_rows([{"q": q} for q in QUESTIONS[:3]], name="rows")
        p.output("out", rows.apply(Generate("{q}", model="local?batch_size=4", max_tokens=8, temperature=0.0),
                                   name="gen"))
        return builder.build(p, rebuild=("gen",))

    first = next(s.metrics for s in run().stats if s.name == "gen")
    assert first["llm_calls"] == 3 and first["tokens_out"] > 0
    assert "Paris" in builder.output("out").sort("id")["response"][0]
    again = next(s.metrics for s in run().stats if s.name == "gen")
    # no call, no model load; the responses cut off at max_tokens=8 are the same ones
    assert again == {"model": "local?batch_size=4", "cache_hits": 3, "truncated": first["truncated"]}


def test_client_with_the_default_model_caches_samples(tmp_path):
    client = LLMClient("local?batch_size=4", cache=RequestCache(tmp_path / "c.sqlite"))
    first = client.generate([ask("Name a fruit.", temperature=0.8, n=2)])
    second = client.generate([ask("Name a fruit.", temperature=0.8, n=2)])
    assert texts(first) == texts(second)


def test_a_killed_generation_repeats_no_finished_request(tmp_path):
    import json
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    env = {**os.environ, "DATAFLOW_LLM_CACHE": str(tmp_path / "cache.sqlite")}
    prompts = [{"q": f"Write one sentence about the number {i}."} for i in range(24)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompts))
    (tmp_path / "p.py").write_text(
        "from dataflow import Pipeline\nfrom dataflow.operators import Generate\np = Pipeline('kill')\n"
        "p.output('o', p.read_jsonl('rows.jsonl', name='rows').apply(Generate('{q}', model='local?batch_size=4', "
        "max_tokens=24), name='gen'))\n")
    command = [sys.executable, "-m", "dataflow.cli", "build", "p.py", "--out", "out"]
    build = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stored, deadline = 0, time.monotonic() + 240
    while stored < 6 and build.poll() is None and time.monotonic() < deadline:  # all 24 are one chunk
        time.sleep(0.2)
        try:
            with sqlite3.connect(tmp_path / "cache.sqlite") as db:
                stored = db.execute("select count(*) from samples").fetchone()[0]
        except sqlite3.Error:
            continue
    build.send_signal(signal.SIGKILL)
    build.wait()
    assert 6 <= stored < 24, stored
    done = subprocess.run([*command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "manifest.json").read_text())["nodes"]["gen"]["metrics"]
    assert metrics["cache_hits"] >= stored and metrics["llm_calls"] == 24 - metrics["cache_hits"]


PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 24},
    "role": {"enum": ["chef", "pilot", "poet"]},
    "age": {"type": "integer", "minimum": 18, "maximum": 90},
    "skills": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
    "home": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"],
             "additionalProperties": False}},
    "required": ["name", "role", "age", "skills", "home"], "additionalProperties": False}


def test_constrained_decoding_never_gives_output_outside_the_schema(backend):
    import json

    import jsonschema

    schema = json.dumps(PERSON)
    requests = [Request((("user", f"Invent a person from story {i}."),),
                        Sampling(max_tokens=160, temperature=1.0, seed=i, n=2, json_schema=schema)) for i in range(6)]
    completions = [c for r in backend.generate(requests) for c in r.completions]
    for c in completions:  # bounded strings and arrays: every output completes within the budget
        assert c.finish_reason == "stop", c.text
        jsonschema.validate(json.loads(c.text), PERSON)
        assert list(json.loads(c.text)) == list(PERSON["properties"])  # written in the schema's order
    assert len({c.text for c in completions}) > 6  # sampling still samples


def test_a_schema_that_cannot_compile_fails_before_generating(backend):
    bad = Request((("user", "hi"),), Sampling(json_schema='{"type": "object", "properties": {"a": {"$ref": "#/x"}}}'))
    with pytest.raises(DataflowError, match=r"node 'n': the JSON schema cannot be compiled .*'/x' does not exist"):
        backend.prepare("n", [bad], ["row-1"])


def test_logprobs_are_the_generated_tokens_and_their_most_likely_alternatives(backend):
    response = backend.generate([ask("What is the capital of France?", temperature=0.0, logprobs=3)])[0]
    c = response.completions[0]
    assert "".join(c.tokens) == c.text and len(c.top_logprobs) == len(c.tokens) == c.tokens_out
    for token, top in zip(c.tokens, c.top_logprobs):
        assert len(top) == 3 and max(top, key=top.get) == token  # greedy: the chosen token is the likeliest
        assert all(v <= 0 for v in top.values())


def test_judges_on_the_default_model_give_valid_weighted_scores_and_probabilities(builder, tmp_path, monkeypatch):
    from dataflow.operators import JudgeScore, PairwiseJudge

    monkeypatch.setenv("DATAFLOW_LLM_CACHE", str(tmp_path / "cache.sqlite"))
    rows = [{"prompt": "What is 2 + 2?", "response": r, "response_a": "4", "response_b": "5"} for r in ("4", "22")]
    p = Pipeline("judged")
    source = p.from_rows(rows, name="rows")
    p.output("scores", source.apply(JudgeScore(models=("local?batch_size=4",), max_tokens=48), name="point"))
    p.output("verdicts", source.apply(PairwiseJudge(models=("local?batch_size=4",), max_tokens=48), name="pair"))
    report = builder.build(p)
    scores, verdicts = builder.output("scores"), builder.output("verdicts")
    assert scores.height == 2 and verdicts.height == 2  # no invalid reply to reject
    assert all(1 <= s <= 10 for s in scores["score"]) and scores["score_entropy"].null_count() == 0
    assert scores["score"].n_unique() == 2  # probability-weighted: no tie
    assert all(0 <= v <= 1 for v in verdicts["verdict_p_a"])
    for node in ("point", "pair"):
        assert "judge_invalid_replies" not in next(s.metrics for s in report.stats if s.name == node)


def test_llamacpp_generates_in_a_pipeline_and_is_another_model_than_local(builder, tmp_path, monkeypatch):
    from dataflow.llm import model_identity

    monkeypatch.setenv("DATAFLOW_LLM_CACHE", str(tmp_path / "cache.sqlite"))

    def run():
        unload_backends()
        p = Pipeline("t")
        rows = p.from_rows([{"q": q} for q in QUESTIONS], name="rows")
        p.output("out", rows.apply(BestOfK("{q}", model="llamacpp?batch_size=4", max_tokens=8, k=2, seed=3),
                                   name="gen"))
        return next(s.metrics for s in builder.build(p, rebuild=("gen",)).stats if s.name == "gen")

    first = run()
    assert first["llm_calls"] == 5 and first["tokens_out"] > 0
    out = builder.output("out")
    assert out.height == 10 and out["response"].str.len_chars().min() > 0  # k candidates a row
    assert run()["cache_hits"] == 5  # a rebuild asks nothing
    assert model_identity("llamacpp") != model_identity("local")  # its cached answers are its own
    assert model_identity("llamacpp").startswith("llama.cpp-")


def test_llamacpp_refuses_a_request_longer_than_a_sequence_context_before_generating():
    backend = open_backend("llamacpp?batch_size=2&context=256")
    with pytest.raises(DataflowError, match=r"node 'gen': row id=row-7 needs \d+ tokens .*llamacpp\?context=512"):
        backend.prepare("gen", [ask("word " * 150, max_tokens=128)], ["row-7"])
    with pytest.raises(DataflowError, match="node 'gen': 300 samples of one prompt, more than the 256 sequences"):
        backend.prepare("gen", [ask("Name a fruit.", n=300)], ["row-1"])


@pytest.mark.parametrize("spec, message", [
    ("llamacpp:/tmp/model.bin", "give a GGUF file"),
    ("llamacpp:/nowhere/model.gguf", "no GGUF file at /nowhere/model.gguf"),
    ("llamacpp?threads=2&beams=4", r"unknown option\(s\) \['beams'\]"),
    ("llamacpp?batch_size=300", "batch_size is at most 256 on llama.cpp"),
])
def test_llamacpp_spec_errors_say_what_to_write(spec, message):
    assert any(re.search(message, problem) for problem in spec_problems(spec)), spec_problems(spec)

