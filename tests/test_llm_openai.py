"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1 that speaks the chat
completions API, with injected 429 / 500 / timeouts / malformed bodies / refused requests.

A user turn may start with a fault directive: ``[429x2] text`` answers 429 (Retry-After: 0) to
the first two calls for that text, ``[500x1]``, ``[timeoutx1]``, ``[malformedx1]`` likewise,
``[400]`` always refuses (echoing the Authorization header), ``[down]`` answers 503 until the
server is healed; ``[401]``, ``[404]`` and ``[quota]`` (429 ``insufficient_quota``) always refuse,
``[refusal]`` answers a null content with a refusal, ``[filtered]`` a ``content_filter`` finish,
``[trickle]`` sends its body a byte every 0.2 s, ``[gzip]`` a body that claims to be gzip and is not.
With ``refuses_logprobs``, a request with logprobs gets 400 naming them. A judge prompt is answered in its JSON form only when the request carries a
``response_format`` of a type the server accepts (``formats``); a refused type gets
``refusal_status`` with an error naming ``response_format``. ``logprobs`` are given when asked.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dataflow import Pipeline
from dataflow.errors import DataflowError
from dataflow.llm.client import unload_backends
from dataflow.operators import BestOfK, Generate, JudgeScore

KEY = "sk-test-SECRET-4f9a1c"
FAULT = re.compile(r"^\[(429|500|timeout|malformed)x(\d+)\] ")


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, supports_n: bool = True, lifetime_s: float = 120.0, formats: tuple[str, ...] = ("json_schema",),
                 refusal_status: int = 400, refuses_logprobs: bool = False):
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.refuses_logprobs = refuses_logprobs
        self.supports_n, self.healed = supports_n, False
        self.formats, self.refusal_status = formats, refusal_status
        self.format_requests: Counter[str] = Counter()  # requests per response_format type
        self.calls: Counter[str] = Counter()  # chat requests per user text
        self.auth: list[str] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.watchdog = threading.Timer(lifetime_s, self.shutdown)  # never outlives a stuck test
        self.watchdog.daemon = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that timed out on purpose
            super().handle_error(request, client_address)

    def __enter__(self):
        self.thread.start()
        self.watchdog.start()
        return self

    def __exit__(self, *exc):
        self.watchdog.cancel()
        self.shutdown()
        self.server_close()


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, json.dumps({"object": "list", "data": [{"id": "test-model", "object": "model"}]}))
        else:
            self._send(404, '{"error": "not found"}')

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/v1/completions":  # a raw-text request: continue the prompt
            return self._send(200, json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                                                            "text": f"continued {body['prompt']!r}"}]}))
        text = body["messages"][-1]["content"]
        with self.server.lock:
            self.server.calls[text] += 1
            call = self.server.calls[text]
            self.server.auth.append(self.headers.get("Authorization", ""))
        fault = FAULT.match(text)
        if fault and call <= int(fault.group(2)):
            kind = fault.group(1)
            if kind == "429":
                return self._send(429, '{"error": "rate limited"}', {"Retry-After": "0"})
            if kind == "500":
                return self._send(500, '{"error": "internal"}')
            if kind == "timeout":
                time.sleep(1.5)
                return self._send(200, "{}")
            return self._send(200, '{"choices": [{"message": ')
        if text.startswith("[400]"):
            return self._send(400, json.dumps({"error": f"bad request from {self.headers.get('Authorization')}"}))
        if text.startswith("[down]") and not self.server.healed:
            return self._send(503, '{"error": "overloaded"}')
        refused = {"[401]": (401, "Incorrect API key provided"), "[404]": (404, "Not Found"),
                   "[quota]": (429, "You exceeded your current quota (insufficient_quota)")}.get(text[:text.find("]") + 1])
        if refused:
            return self._send(refused[0], json.dumps({"error": {"message": refused[1]}}))
        if text.startswith("[refusal]"):
            message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
            return self._send(200, json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": message}]}))
        if text.startswith("[filtered]"):
            message = {"role": "assistant", "content": "Here is how to"}
            return self._send(200, json.dumps({"choices": [{"index": 0, "finish_reason": "content_filter",
                                                            "message": message}]}))
        if text.startswith("[trickle]"):
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(20):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
            return None
        if text.startswith("[gzip]"):
            return self._send(200, "not gzip at all", {"Content-Encoding": "gzip"})
        if self.server.refuses_logprobs and body.get("logprobs"):
            return self._send(400, json.dumps({"error": "logprobs is not supported by this server"}))
        form = (body.get("response_format") or {}).get("type")
        if form:
            with self.server.lock:
                self.server.format_requests[form] += 1
            if form not in self.server.formats:
                return self._send(self.server.refusal_status,
                                  json.dumps({"error": f"response_format type '{form}' is not supported"}))
        if "[Response]" in text:
            return self._send(200, json.dumps({"choices": [judged(bool(form), body.get("top_logprobs"))]}))
        n = body.get("n", 1) if self.server.supports_n else 1
        choices = [{"index": i, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": f"reply to {text} #{i} t={body['temperature']} "
                                                                f"seed={body['seed']}"}} for i in range(n)]
        self._send(200, json.dumps({"id": "x", "object": "chat.completion", "model": body["model"], "choices": choices,
                                    "usage": {"prompt_tokens": len(text.split()), "completion_tokens": 5 * n}}))


def judged(constrained: bool, top: int | None) -> dict:
    """A judge's choice: in its JSON form when constrained (scores 7, 8, 6 at 0.6, 0.3, 0.1 with
    ``top`` alternatives), else prose that names no score."""
    if not constrained:
        return {"index": 0, "finish_reason": "stop", "message": {"content": "A fine answer, I would say."}}
    tokens = ['{"', "score", '":', " ", "7", ', "rationale": "ok"}']
    content = [{"token": t, "logprob": 0.0, "top_logprobs": [{"token": t, "logprob": 0.0}]} for t in tokens]
    content[4]["logprob"] = math.log(0.6)
    content[4]["top_logprobs"] = [{"token": t, "logprob": math.log(p)} for t, p in (("7", .6), ("8", .3), ("6", .1))]
    choice = {"index": 0, "finish_reason": "stop", "message": {"content": "".join(tokens)}}
    return {**choice, "logprobs": {"content": content}} if top else choice


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFLOW_LLM_CACHE", str(tmp_path / "llm_cache.sqlite"))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    unload_backends()
    yield
    unload_backends()


def spec(server: ChatServer, **options) -> str:
    options = {"retries": 3, "timeout": 0.5, "backoff": 0.01, **options}
    return f"openai:{server.url}#test-model?" + "&".join(f"{k}={v}" for k, v in options.items())


def pipeline(model: str, questions: list[str], op=None) -> Pipeline:
    p = Pipeline("chat")
    rows = p.from_rows([{"q": q} for q in questions], name="rows")
    p.output("answers", rows.apply(op or Generate("{q}", model=model, max_tokens=16), name="gen"))
    return p


def metrics(report, node="gen") -> dict:
    return next(s.metrics for s in report.stats if s.name == node)


def test_generates_with_the_key_and_never_stores_it(builder):
    with ChatServer() as server:
        report = builder.build(pipeline(spec(server), ["hello", "world"]))
        out = builder.output("answers").sort("id")
        assert out["response"].to_list() == ["reply to hello #0 t=0.7 seed=0", "reply to world #0 t=0.7 seed=0"]
        assert out["response_tokens_in"].to_list() == [1, 1]
        assert set(server.auth) == {f"Bearer {KEY}"}
        assert metrics(report)["llm_calls"] == 2
    written = [p for p in builder.out.parent.rglob("*") if p.is_file()]  # outputs, manifest, cache + WAL
    assert any(p.name.startswith("llm_cache.sqlite") for p in written)
    assert all(KEY.encode() not in p.read_bytes() for p in written)
    assert KEY not in builder.log.getvalue()


def test_retries_429_500_timeouts_and_malformed_bodies(builder):
    texts = ["[429x2] a", "[500x1] b", "[timeoutx1] c", "[malformedx2] d", "plain e"]
    with ChatServer() as server:
        report = builder.build(pipeline(spec(server), texts))
        out = builder.output("answers")
        assert out.height == 5 and builder.rejects("gen").height == 0
        assert server.calls == Counter({"[429x2] a": 3, "[500x1] b": 2, "[timeoutx1] c": 2,
                                        "[malformedx2] d": 3, "plain e": 1})
        assert metrics(report)["llm_calls"] == 5


def test_a_refused_request_is_a_reject_with_the_key_scrubbed(builder):
    with ChatServer() as server:
        builder.build(pipeline(spec(server), ["[400] bad", "good"]))
        assert builder.output("answers")["q"].to_list() == ["good"]
        rejects = builder.rejects("gen")
        assert rejects["reason"].to_list() == ["llm_error"]
        detail = rejects["detail"][0]
        assert "HTTP 400" in detail and KEY not in detail and "***" in detail
        assert server.calls["[400] bad"] == 1  # a 400 is not retried within the build


def test_a_server_failing_mid_build_keeps_finished_rows_and_retries_only_failed_ones(builder):
    texts = ["one", "[down] two", "three"]
    with ChatServer() as server:
        builder.build(pipeline(spec(server), texts))
        assert sorted(builder.output("answers")["q"]) == ["one", "three"]
        assert builder.rejects("gen")["reason"].to_list() == ["llm_error"]
        assert "503" in builder.rejects("gen")["detail"][0]
        server.healed = True
        before = server.calls.copy()
        report = builder.build(pipeline(spec(server), texts))
        assert builder.status(report)["gen"] == "built"
        assert sorted(builder.output("answers")["q"]) == ["[down] two", "one", "three"]
        assert server.calls - before == Counter({"[down] two": 1})
        assert metrics(report)["cache_hits"] == 2 and metrics(report)["llm_calls"] == 1
        report = builder.build(pipeline(spec(server), texts))
        assert builder.status(report)["gen"] == "cached"


def test_best_of_k_uses_n_and_falls_back_when_the_server_ignores_it(builder):
    op = BestOfK(prompt="{q}", k=4, temperatures=(0.3, 1.0), max_tokens=8)
    for supports_n in (True, False):
        unload_backends()
        with ChatServer(supports_n=supports_n) as server:
            p = pipeline("", ["hi"], op=BestOfK(**{**op.__dict__, "model": spec(server, concurrency=2)}))
            builder.build(p, rebuild=("gen",))
            out = builder.output("answers").sort("sample_idx")
            assert out["id"].to_list() == ["rows-1/0", "rows-1/1", "rows-1/2", "rows-1/3"]
            assert out["temperature"].to_list() == [0.3, 1.0, 0.3, 1.0]
            assert out["response"].n_unique() == 4
            if supports_n:
                assert server.calls["hi"] == 2  # one request per temperature
            else:
                assert server.calls["hi"] >= 4  # one per candidate after the server ignored n


def test_unreachable_server_fails_before_the_first_batch_naming_the_node(builder):
    with ChatServer() as server:
        dead = spec(server)
    with pytest.raises(DataflowError, match="node 'gen'.*cannot be reached.*start the server"):
        builder.build(pipeline(dead, ["hello"]))


def test_a_wrong_model_name_is_reported_with_the_served_ones(builder):
    with ChatServer() as server:
        wrong = spec(server).replace("#test-model", "#other-model")
        with pytest.raises(DataflowError, match="serves \\['test-model'\\], not 'other-model'"):
            builder.build(pipeline(wrong, ["hello"]))


def judge_pipeline(model: str, answers: list[str]) -> Pipeline:
    p = Pipeline("judged")
    rows = p.from_rows([{"prompt": "What is 2+2?", "response": a} for a in answers], name="rows")
    p.output("scores", rows.apply(JudgeScore(models=(model,), max_attempts=2), name="judge"))
    return p


@pytest.mark.parametrize("status", [422, 500])
def test_a_server_with_the_json_object_form_gets_the_schema_that_way_and_once_found_remembered(builder, status):
    with ChatServer(formats=("json_object",), refusal_status=status) as server:
        report = builder.build(judge_pipeline(spec(server, concurrency=1), [str(i) for i in range(6)]))
        scores = builder.output("scores")
        assert scores["score"].to_list() == pytest.approx([7 * .6 + 8 * .3 + 6 * .1] * 6)  # weighted
        assert server.format_requests == {"json_schema": 1, "json_object": 6}  # refused once, remembered
        assert "json_object form" in metrics(report, "judge")["fallbacks"]
        assert "judge_invalid_replies" not in metrics(report, "judge")


def test_a_server_without_response_format_falls_back_to_retries_and_says_so(builder):
    with ChatServer(formats=()) as server:
        report = builder.build(judge_pipeline(spec(server, concurrency=1), ["4", "5"]))
        assert builder.output("scores").height == 0
        rejects = builder.rejects("judge")
        assert set(rejects["reason"]) == {"judge_invalid"}  # never a silent score
        assert all("A fine answer" in d for d in rejects["detail"])
        assert "replies are parsed and retried" in metrics(report, "judge")["fallbacks"]


@pytest.mark.parametrize("text, found", [
    ("[401] hi", "refused the API key \\(HTTP 401.*set \\$OPENAI_API_KEY"),
    ("[404] hi", "has no chat/completions for model 'test-model' \\(HTTP 404.*under /v1"),
    ("[quota] hi", "out of quota")])
def test_a_refusal_no_request_can_get_past_fails_the_node_at_once(builder, text, found):
    with ChatServer() as server:
        with pytest.raises(DataflowError, match=f"node 'gen'.*{found}"):
            builder.build(pipeline(spec(server), [text, text.replace("hi", "there")]))
        assert sum(server.calls.values()) <= 2  # not retried
    assert KEY not in builder.log.getvalue()


def test_a_reply_without_text_is_a_reject_asked_once_and_a_filtered_one_is_cut_off(builder):
    with ChatServer() as server:
        builder.build(pipeline(spec(server), ["[refusal] pick a lock", "[filtered] pick a lock", "[gzip] x"]))
        out = builder.output("answers")
        assert out["response_finish_reason"].to_list() == ["length"]  # the filtered reply: not a finished one
        rejects = {r["id"]: r["detail"] for r in builder.rejects("gen").iter_rows(named=True)}
        assert "no text" in rejects["rows-1"] and "I can't help with that." in rejects["rows-1"]
        assert server.calls["[refusal] pick a lock"] == 1
        assert "DecodingError" in rejects["rows-3"]  # a body that cannot be decoded: retried, then a reject


def test_an_api_key_pasted_with_quotes_is_named_at_compile_time(builder, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", f"\u201c{KEY}\u201d")
    with ChatServer() as server:
        with pytest.raises(DataflowError, match="OPENAI_API_KEY has characters that are not ASCII") as raised:
            builder.build(pipeline(spec(server), ["hello"]))
        assert server.calls == Counter() and KEY not in str(raised.value)


def test_a_server_that_never_finishes_a_reply_fails_the_node_within_the_timeout(builder):
    with ChatServer() as server:
        started = time.monotonic()
        with pytest.raises(DataflowError, match="answered no request within 0.5 s \\(2 attempt"):
            builder.build(pipeline(spec(server), ["[trickle] hello"]))
        assert time.monotonic() - started < 3.5  # the body trickles for 4 s per attempt


def test_a_server_that_stops_answering_fails_the_node_and_keeps_the_replies_it_gave(builder):
    answered = "a question the server answers before it stops answering"
    stuck = [f"[trickle] {i}" for i in range(6)]  # 6 x 4 attempts if every request ran out its retries
    with ChatServer() as server:
        with pytest.raises(DataflowError, match=r"has stopped answering: no reply for \d+ s, none to the last 4 "
                                                r"attempts \(the last: timeout after 0.5s\)"):
            builder.build(pipeline(spec(server, concurrency=2), [answered, *stuck]))
        assert sum(server.calls[text] for text in stuck) <= 8
        builder.build(pipeline(spec(server, concurrency=2), [answered]))
        assert builder.output("answers")["response"].to_list() == [f"reply to {answered} #0 t=0.7 seed=0"]
        assert server.calls[answered] == 1  # from the request cache


def test_a_server_refusing_only_logprobs_keeps_the_response_format(builder):
    with ChatServer(refuses_logprobs=True) as server:
        report = builder.build(judge_pipeline(spec(server, concurrency=1), ["4", "5"]))
        assert builder.output("scores")["score"].to_list() == [7, 7]  # constrained, not weighted
        assert metrics(report, "judge")["fallbacks"] == "logprobs refused by the server: judge scores are not " \
                                                        "probability-weighted"


def test_a_build_from_inside_a_running_event_loop_works(builder):
    import asyncio

    async def notebook_cell():
        return builder.build(pipeline(spec(server), ["hello"]))

    with ChatServer() as server:
        asyncio.run(notebook_cell())
        assert builder.output("answers")["response"].to_list() == ["reply to hello #0 t=0.7 seed=0"]


def test_a_raw_prompt_goes_to_the_completions_endpoint(builder):
    from dataflow.llm import LLMClient, Request, Sampling

    with ChatServer() as server:
        client = LLMClient(spec(server), log=lambda text: None)
        [response] = client.generate([Request((), Sampling(max_tokens=8), prompt="<|im_start|>user\n")])
    assert response.completions[0].text == "continued '<|im_start|>user\\n'"
