"""The client: one interface over every backend, with the persistent request cache in front.

``LLMClient(model).generate(requests)`` answers each request from the cache when all its
samples are there, and sends the rest to the backend in chunks (sorted by prompt length, so
batches hold prompts of similar length); each chunk is stored as soon as it returns. The model
loads only when a request misses the cache, so a warm rebuild never loads it.
"""

from __future__ import annotations

import time
from typing import Callable

from dataflow.errors import DataflowError
from dataflow.llm.backends import Backend, model_identity, open_backend
from dataflow.llm.backends.registry import as_spec
from dataflow.llm.cache import RequestCache, sample_key, shared_cache
from dataflow.llm.spec import ModelSpec
from dataflow.llm.types import Request, Response

_loaded: dict[str, Backend] = {}  # backends loaded in this process, by spec: a model loads once per build


class LLMClient:
    def __init__(self, model: str | ModelSpec, node: str = "llm", cache: RequestCache | None = None,
                 count: Callable[[str, int], None] | None = None, log: Callable[[str], None] = print):
        self.spec = as_spec(model)
        self.model, self.node, self.log = self.spec.text, node, log
        self.identity = model_identity(self.spec)
        self.cache = cache or shared_cache()
        self.count = count or (lambda metric, amount: None)
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
                answers = backend.generate([requests[i] for i in chunk])
                self._store(chunk, answers, keys, cached, results)
                done(chunk)
        return results  # type: ignore[return-value]

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


def unload_backends() -> None:
    """Forget the backends loaded in this process (the next request loads its model again)."""
    _loaded.clear()
