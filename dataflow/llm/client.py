"""The client: one interface over every backend, with the persistent request cache in front.

``LLMClient(model).generate(requests)`` answers each request from the cache when all its
samples are there, and sends the rest to the backend in chunks (sorted by prompt length, so
batches hold prompts of similar length). A backend that reports requests as they finish (a
``finished`` argument: transformers, llama.cpp, OpenAI-compatible servers) has each one stored
at once, so a killed build repeats no finished request; the others have each chunk stored as it
returns. The model loads only when a request misses the cache, so a warm rebuild never loads it.
A fallback a backend took (its ``notes``: e.g. a server without ``response_format``) is recorded as the node's
``fallbacks`` metric, so the summary names it.
"""

from __future__ import annotations

import functools
import inspect
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from dataflow.errors import DataflowError
from dataflow.llm.backends import Backend, model_identity, open_backend
from dataflow.llm.backends.registry import as_spec
from dataflow.llm.cache import RequestCache, sample_key, shared_cache
from dataflow.llm.spec import ModelSpec
from dataflow.llm.types import Request, Response

_loaded: dict[str, Backend] = {}  # backends loaded in this process, by spec: a model loads once per build


class LLMClient:
    def __init__(self, model: str | ModelSpec, node: str = "llm", cache: RequestCache | None = None,
                 count: Callable[[str, int], None] | None = None, log: Callable[[str], None] = print,
                 record: Callable[[str, Any], None] | None = None):
        self.spec = as_spec(model)
        self.model, self.node, self.log = self.spec.text, node, log
        self.identity = model_identity(self.spec)
        self.cache = cache or shared_cache()
        self.count = count or (lambda metric, amount: None)
        self.record = record or (lambda metric, value: None)
        self._backend: Backend | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None and self.model in _loaded:
            self._backend = _loaded[self.model]
        if self._backend is None:
            started = time.perf_counter()
            try:
                self._backend = open_backend(self.spec)
            except DataflowError as exc:
                raise DataflowError(f"node '{self.node}': {exc}") from exc
            except (OSError, ValueError, ImportError) as exc:
                raise DataflowError(f"node '{self.node}': cannot load model {self.model!r}: "
                                    f"{type(exc).__name__}: {exc}. Check the model path and its files, "
                                    f"or choose another model spec.") from exc
            _loaded[self.model] = self._backend
            seconds = time.perf_counter() - started
            threads = getattr(self._backend, "threads", None)
            self.log(f"[llm] {self.node}: loaded {self.model} in {seconds:.1f}s"
                     + (f" ({threads} torch thread(s); set ?threads=N in the spec or $DATAFLOW_TORCH_THREADS)"
                        if threads else ""))
            self.count("model_load_s", round(seconds, 2))
        return self._backend

    def generate(self, requests: list[Request], labels: list[str] | None = None,
                 done: Callable[[list[int]], None] | None = None) -> list[Response]:
        """Responses in request order; failed requests come back with ``error`` set.

        ``labels`` name the requests in error messages (e.g. row ids); ``done(indices)`` is called
        as requests finish (cached ones first)."""
        labels = labels or [str(i) for i in range(len(requests))]
        done = done or (lambda indices: None)
        keys = [[sample_key(self.identity, r, k) for k in range(r.sampling.n)] for r in requests]
        cached = self.cache.get_many([k for ks in keys for k in ks])
        results: list[Response | None] = [None] * len(requests)
        misses = []
        for i, ks in enumerate(keys):
            if all(k in cached for k in ks):
                results[i] = Response([cached[k][0] for k in ks], cached[ks[0]][1])
            else:
                misses.append(i)
        self.count("cache_hits", len(requests) - len(misses))
        done([i for i in range(len(requests)) if results[i] is not None])
        if misses:
            backend = self.backend
            backend.prepare(self.node, [requests[i] for i in misses], [labels[i] for i in misses])
            misses.sort(key=lambda i: -sum(len(c) for _, c in requests[i].messages))
            for start in range(0, len(misses), backend.chunk_size):
                chunk = misses[start:start + backend.chunk_size]
                self._answer(backend, chunk, requests, keys, cached, results, done)
            if getattr(backend, "notes", None):
                self.record("fallbacks", "; ".join(backend.notes))
        return results  # type: ignore[return-value]

    def _answer(self, backend: Backend, chunk: list[int], requests: list[Request], keys: list[list[str]],
                cached: dict, results: list, done: Callable[[list[int]], None]) -> None:
        """Send one chunk of requests to the backend; store each answer as it comes (see the module doc)."""
        def finished(j: int, answer: Response) -> None:
            self._store([chunk[j]], [answer], keys, cached, results)
            done([chunk[j]])

        answers = _generate(backend, [requests[i] for i in chunk], finished)
        rest = [j for j, i in enumerate(chunk) if results[i] is None]
        self._store([chunk[j] for j in rest], [answers[j] for j in rest], keys, cached, results)
        done([chunk[j] for j in rest])

    def _store(self, chunk: list[int], answers: list[Response], keys: list[list[str]],
               cached: dict, results: list) -> None:
        samples, failures = [], []
        for i, answer in zip(chunk, answers):
            self.count("llm_calls", 1)
            if answer.tokens_in is not None:
                self.count("tokens_in", answer.tokens_in)
            if not answer.ok:
                self.count("llm_failures", 1)
                failures += [(k, answer.error) for k in keys[i] if k not in cached]
                results[i] = answer
                continue
            generated = answer.usage_out if answer.usage_out is not None else \
                sum(c.tokens_out or 0 for c in answer.completions)
            self.count("tokens_out", generated)
            merged = [cached[k][0] if k in cached else c for k, c in zip(keys[i], answer.completions)]
            samples += [(k, c, answer.tokens_in) for k, c in zip(keys[i], answer.completions) if k not in cached]
            results[i] = Response(merged, answer.tokens_in)
        self.cache.put_many(self.identity, samples, failures)


def _generate(backend: Backend, requests: list[Request], finished: Callable[[int, Response], None]) -> list[Response]:
    """The backend's responses, reported one by one as they finish where it can."""
    if _reports_finished(type(backend)):
        return backend.generate(requests, finished=finished)
    return backend.generate(requests)


@functools.cache
def _reports_finished(backend: type) -> bool:
    return "finished" in inspect.signature(backend.generate).parameters


@contextmanager
def backends_in_use(backends: dict[str, Backend]) -> Iterator[None]:
    """While inside, every client of these model specs in this process uses the given backend (e.g. one
    that sends requests to a cluster); the backends loaded before come back after."""
    before = {text: _loaded.pop(text) for text in backends if text in _loaded}
    _loaded.update(backends)
    try:
        yield
    finally:
        for text in backends:
            _loaded.pop(text, None)
        _loaded.update(before)


def unload_backends() -> None:
    """Forget the backends loaded in this process (the next request loads its model again)."""
    _loaded.clear()
