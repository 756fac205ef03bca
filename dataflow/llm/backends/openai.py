"""The OpenAI-compatible HTTP backend (vLLM/SGLang/llama.cpp servers, hosted APIs).

Requests run concurrently (``concurrency``, default 16) on one asyncio loop per chunk (a thread
of its own where the caller already runs a loop, as in Jupyter). 429, 5xx, timeouts (``timeout``
seconds for the whole request, default 120), connection errors and malformed bodies are retried
up to ``retries`` times (default 6) with exponential backoff and full jitter, waiting what
``Retry-After`` asks when the server says. Other statuses fail the request at once (the next build
retries it), a reply without text (a refusal, a tool call) too. What no request can get past fails
the node at once, naming the fix: the key refused (401, 403), no such endpoint or model (404), an
exhausted quota (429 ``insufficient_quota``), a server that has answered no request at all
when one request has timed out twice (once with ``retries=0``), and a server that stops answering:
no reply (timeouts, failed connections) to ``2 x concurrency`` attempts in a row over ``2 x timeout``
seconds. Replies are stored as they come, so a rebuild asks only the rest. A reply the server cut
(``finish_reason`` ``length`` or ``content_filter``) counts as cut off. ``n`` samples are asked
in one request; a server that returns fewer choices gets one request per sample from then on
(``n=0`` in the spec forces that). A JSON schema goes out as ``response_format`` (vLLM, SGLang
and llama.cpp servers constrain decoding with it): OpenAI's ``json_schema`` form, else the
``json_object`` form with a ``schema`` (llama-cpp-python, Together), else none; ``logprobs`` goes
out as ``top_logprobs``. A form the server refuses (a request that fails with it, not for a
retried status unless the error names the feature, and passes without it) is not sent again,
and ``notes`` names the fallback for the build summary. The API key is read from ``$OPENAI_API_KEY`` (or the variable
named by ``api_key_env``) and is scrubbed from every error message; it is never stored.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable
from urllib.parse import urlparse

from dataflow.errors import DataflowError
from dataflow.llm.backends.registry import register_backend, with_identity_options
from dataflow.llm.spec import ModelSpec, SpecError
from dataflow.llm.types import Completion, Request, Response, sample_seed

RETRIED_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_WAIT_S = 120.0
RESPONSE_FORMATS = ("json_schema", "json_object")  # the forms of a JSON schema, in the order tried
# The request features a server may refuse, with the note the summary shows when it does.
FALLBACKS = {"json_schema": "response_format json_schema refused by the server: using its json_object form",
             "json_object": "response_format refused by the server: replies are parsed and retried",
             "logprobs": "logprobs refused by the server: judge scores are not probability-weighted"}


class OpenAIBackend:
    def __init__(self, spec: ModelSpec):
        self.url, self.model = spec.target, spec.model
        self.concurrency = spec.option("concurrency", 16)
        self.timeout = spec.option("timeout", 120.0)
        self.retries = spec.option("retries", 6)
        self.use_n = spec.option("n", 1) != 0
        self.chunk_size = spec.option("chunk", 256)
        self.key_env = spec.option("api_key_env", "OPENAI_API_KEY")
        self.backoff_s, self.backoff_cap_s = spec.option("backoff", 0.5), 30.0
        self.where = f"the OpenAI-compatible server at {self.url}"
        self.answered = False  # whether any request got a reply: until then, repeated timeouts fail the node
        self.last_reply, self.unanswered = time.monotonic(), 0  # attempts without a reply since the last one
        self.unsupported: set[str] = set()  # FALLBACKS features this server refused
        self.notes: list[str] = []  # the fallbacks taken, for the build summary

    # -- secrets ---------------------------------------------------------------------------
    def _key(self) -> str | None:
        return os.environ.get(self.key_env) or None

    def _headers(self) -> dict[str, str]:
        key = self._key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _scrub(self, text: str) -> str:
        key = self._key()
        return text.replace(key, "***") if key else text

    # -- client interface ------------------------------------------------------------------
    def prepare(self, node: str, requests: list[Request], labels: list[str]) -> None:
        """Fail before the first request if the server is unreachable, rejects the key, or
        does not serve the model."""
        import httpx

        self.where = where = f"node '{node}': the OpenAI-compatible server at {self.url}"
        try:
            reply = httpx.get(f"{self.url}/models", headers=self._headers(), timeout=min(10.0, self.timeout))
        except httpx.HTTPError as exc:
            raise DataflowError(f"{where} cannot be reached ({type(exc).__name__}: {self._scrub(str(exc))}); "
                                f"start the server or fix the URL in the model spec") from None
        if reply.status_code in (401, 403):
            raise DataflowError(f"{where} refused the API key (HTTP {reply.status_code}); set ${self.key_env} "
                                f"to a valid key")
        if reply.status_code != 200:
            return  # a server without /models: requests will tell
        try:
            served = [m["id"] for m in reply.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        if served and self.model not in served:
            raise DataflowError(f"{where} serves {served}, not '{self.model}'; fix the #MODEL part of the spec")

    def generate(self, requests: list[Request],
                 finished: Callable[[int, Response], None] | None = None) -> list[Response]:
        """Responses in request order; ``finished(i, response)`` as soon as request i is done."""
        work = self._generate_all(requests, finished or (lambda i, response: None))
        if not _loop_running():
            return asyncio.run(work)
        with ThreadPoolExecutor(1) as thread:  # the caller's loop is running (Jupyter): run ours beside it
            return thread.submit(asyncio.run, work).result()

    async def _generate_all(self, requests: list[Request], finished: Callable[[int, Response], None]) -> list[Response]:
        import httpx

        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        gate = asyncio.Semaphore(self.concurrency)
        self.last_reply, self.unanswered = time.monotonic(), 0

        async def one(i: int, request: Request) -> Response:
            response = await self._one(http, gate, request)
            finished(i, response)
            return response

        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as http:
            return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))

    async def _one(self, http, gate, request: Request) -> Response:
        n = request.sampling.n
        if n == 1 or self.use_n:
            response = await self._call(http, gate, request, n, request.sampling.seed)
            if not response.ok or len(response.completions) == n:
                return response
            self.use_n = False  # the server ignores n: ask for each sample separately
        parts = await asyncio.gather(*(self._call(http, gate, request, 1, sample_seed(request.sampling.seed, k) % (1 << 31))
                                       for k in range(n)))
        failed = next((p for p in parts if not p.ok), None)
        if failed:
            return failed
        return Response([p.completions[0] for p in parts], parts[0].tokens_in,
                        usage_out=sum(p.usage_out or 0 for p in parts))

    def _body(self, request: Request, n: int, seed: int, without: set[str]) -> dict[str, Any]:
        s, refused = request.sampling, self.unsupported | without
        body: dict[str, Any] = {"model": self.model, "temperature": s.temperature, "top_p": s.top_p,
                                "max_tokens": s.max_tokens, "seed": seed}
        if request.prompt is None:
            body["messages"] = request.chat()
        else:
            body["prompt"] = request.prompt
        if n > 1:
            body["n"] = n
        if s.stop:
            body["stop"] = list(s.stop)
        form = next((f for f in RESPONSE_FORMATS if f not in refused), None)
        if s.json_schema and form == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "schema": json.loads(s.json_schema), "strict": True}}
        elif s.json_schema and form == "json_object":
            body["response_format"] = {"type": "json_object", "schema": json.loads(s.json_schema)}
        if s.logprobs and request.prompt is None and "logprobs" not in refused:
            body.update(logprobs=True, top_logprobs=s.logprobs)
        return body

    async def _call(self, http, gate, request: Request, n: int, seed: int) -> Response:
        """The response to one request; a feature the server refuses is dropped (see the module doc).
        A refusal whose error names the feature is remembered at once (so that requests waiting
        for a connection go without it); another once the request passes without the feature."""
        dropped: set[str] = set()
        while True:
            response, refused = await self._post(http, gate, lambda: self._body(request, n, seed, dropped))
            if response.ok or refused is None:
                break
            feature, named = refused
            dropped.add(feature)
            if named:
                self._refused(feature)
        for feature in dropped if response.ok else ():
            self._refused(feature)
        return response

    def _refused(self, feature: str) -> None:
        if feature not in self.unsupported:
            self.unsupported.add(feature)
            self.notes.append(FALLBACKS[feature])

    async def _post(self, http, gate, make_body: Callable[[], dict[str, Any]]
                    ) -> tuple[Response, tuple[str, bool] | None]:
        """The response to a body (made once a connection is free), retried as the module says, and
        the optional feature of the body to drop when the server refused the body itself, with
        whether its error named that feature (None when it did not refuse it)."""
        import httpx

        problem, timeouts = "", 0
        for attempt in range(self.retries + 1):
            wait = None
            async with gate:
                body = make_body()
                endpoint = "completions" if "prompt" in body else "chat/completions"
                try:
                    reply = await asyncio.wait_for(
                        http.post(f"{self.url}/{endpoint}", json=body, headers=self._headers()), self.timeout)
                except (httpx.TimeoutException, TimeoutError):
                    problem, timeouts = f"timeout after {self.timeout:g}s", timeouts + 1
                    if timeouts == min(2, self.retries + 1) and not self.answered:
                        raise DataflowError(f"{self.where} answered no request within {self.timeout:g} s "
                                            f"({timeouts} attempt(s)); "
                                            f"check that it is serving, or allow longer with ?timeout=SECONDS in "
                                            f"the model spec") from None
                    self._no_reply(problem)
                except httpx.HTTPError as exc:  # the connection failed, or the body could not be read
                    problem = f"connection error ({type(exc).__name__}: {exc})"
                    self._no_reply(problem)
                else:
                    self.answered, self.last_reply, self.unanswered = True, time.monotonic(), 0
                    status = reply.status_code
                    if status == 200:
                        try:
                            return _parse(reply.json()), None
                        except NoText as exc:
                            return Response(error=self._scrub(str(exc))), None
                        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                            problem = f"malformed response body ({type(exc).__name__}: {exc}): {reply.text[:200]!r}"
                    else:
                        problem = self._scrub(f"HTTP {status}: {reply.text[:300]}")
                        features = _optional_features(body)
                        named = next((f for f in features if _feature_key(f) in reply.text), None)
                        if named is not None:
                            return Response(error=problem), (named, True)
                        self._fail_on_permanent(status, reply.text, endpoint)
                        if status not in RETRIED_STATUS:
                            return Response(error=problem), (features[0], False) if features else None
                        wait = retry_after(reply.headers.get("retry-after"))
            if attempt == self.retries:
                break
            if wait is None:
                wait = random.uniform(0, min(self.backoff_cap_s, self.backoff_s * 2 ** attempt))
            else:
                wait += random.uniform(0, 0.1 * wait + 0.05)
            await asyncio.sleep(wait)
        return Response(error=self._scrub(f"{problem} (gave up after {self.retries + 1} attempts)")), None

    def _no_reply(self, problem: str) -> None:
        """Count an attempt that got no reply; fail the node once the server has stopped answering."""
        self.unanswered += 1
        quiet = time.monotonic() - self.last_reply
        if self.unanswered >= 2 * self.concurrency and quiet >= 2 * self.timeout:
            raise DataflowError(self._scrub(
                f"{self.where} has stopped answering: no reply for {quiet:.0f} s, none to the last "
                f"{self.unanswered} attempts (the last: {problem}); the replies so far are kept in the request "
                f"cache, so the next build asks only the rest: check the server and build again, or allow longer "
                f"with ?timeout=SECONDS in the model spec"))

    def _fail_on_permanent(self, status: int, text: str, endpoint: str) -> None:
        """Fail the node on a refusal that no request of this build can get past."""
        excerpt = self._scrub(text[:200])
        if status in (401, 403):
            raise DataflowError(f"{self.where} refused the API key (HTTP {status}: {excerpt}); set ${self.key_env} "
                                f"to a valid key")
        if status == 404:
            raise DataflowError(f"{self.where} has no {endpoint} for model '{self.model}' (HTTP 404: {excerpt}); "
                                f"check the URL (OpenAI-compatible servers answer under /v1, e.g. "
                                f"openai:http://127.0.0.1:8000/v1#MODEL) and the #MODEL part of the spec")
        if status == 429 and ("insufficient_quota" in text or "exceeded your current quota" in text):
            raise DataflowError(f"{self.where} says the account is out of quota (HTTP {status}: {excerpt}); "
                                f"add credit or use another key")


class NoText(ValueError):
    """A reply whose message has no text (a refusal, a tool call): failed, not retried."""


def _optional_features(body: dict[str, Any]) -> list[str]:
    """The features of ``body`` the server may refuse, in the order they are dropped."""
    return ([body["response_format"]["type"]] if "response_format" in body else []) + \
        (["logprobs"] if "logprobs" in body else [])


def _feature_key(feature: str) -> str:
    return "logprobs" if feature == "logprobs" else "response_format"


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(MAX_WAIT_S, max(0.0, seconds))


def _parse(data: dict) -> Response:
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    if not choices:
        raise ValueError("no choices")
    completions = []
    for choice in choices:
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice["text"]
        if text is None and isinstance(message, dict):
            said = message.get("refusal") or ("a tool call" if message.get("tool_calls") else "nothing")
            raise NoText(f"the model's reply has no text (finish_reason {choice.get('finish_reason')!r}): "
                         f"{str(said)[:200]}")
        if not isinstance(text, str):
            raise TypeError(f"message.content is {type(text).__name__}, not a string")
        tokens, top = _logprobs(choice.get("logprobs"))
        cut = choice.get("finish_reason") in ("length", "content_filter")
        completions.append(Completion(text, "length" if cut else "stop", tokens=tokens, top_logprobs=top))
    usage = data.get("usage") or {}
    if len(completions) == 1 and usage.get("completion_tokens") is not None:
        completions[0].tokens_out = usage["completion_tokens"]
    return Response(completions, usage.get("prompt_tokens"), usage_out=usage.get("completion_tokens"))


def _logprobs(found: dict | None) -> tuple[list[str] | None, list[dict[str, float]] | None]:
    """Token texts and top log-probabilities from a choice's ``logprobs.content``, when given."""
    content = (found or {}).get("content")
    if not content:
        return None, None
    tokens = [str(t["token"]) for t in content]
    top = [{str(a["token"]): float(a["logprob"]) for a in t.get("top_logprobs") or []} or
           {str(t["token"]): float(t["logprob"])} for t in content]
    return tokens, top


def _read_target(spec: ModelSpec) -> ModelSpec:
    parsed = urlparse(spec.target)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or not spec.model:
        raise SpecError(f"model spec {spec.text!r}: write openai:BASE_URL#MODEL, e.g. "
                        f"openai:http://127.0.0.1:8000/v1#my-model")
    return replace(spec, target=spec.target.rstrip("/"))


def _problems(spec: ModelSpec) -> list[str]:
    env = spec.options.get("api_key_env")
    if env and not os.environ.get(env):
        return [f"model spec {spec.text!r}: the API key variable ${env} is not set; export it"]
    if not os.environ.get(env or "OPENAI_API_KEY", "").isascii():
        return [f"model spec {spec.text!r}: the API key in ${env or 'OPENAI_API_KEY'} has characters that are not "
                f"ASCII (a quote pasted with it?); export the key alone"]
    return []


def _identity(spec: ModelSpec) -> str:
    return with_identity_options(f"openai:{spec.target}#{spec.model}", spec)


register_backend("openai", OpenAIBackend, _identity,
                 options=frozenset({"concurrency", "timeout", "retries", "backoff", "api_key_env", "n", "chunk"}),
                 read_target=_read_target, problems=_problems)
