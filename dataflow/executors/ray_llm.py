"""LLM nodes on Ray: one engine per worker, the request cache kept by the driver alone.

An LLM node runs on the driver, as in the local executor, so its ``LLMClient`` answers cache hits and
stores every answer (one writer, chunk by chunk: a killed job keeps the finished chunks). Only the model
is elsewhere: the client's backend is a :class:`ShardedBackend` that splits each chunk of cache misses
over engine actors, one per GPU for vLLM and one per ``threads`` CPUs otherwise, each holding the model
loaded by the ordinary backend registry. Engines start on a node's first miss, so a rebuild from the cache
starts none, and stop when the node is done, so the CPUs they hold go back to the other nodes' tasks; Ray
restarts an engine whose worker died and retries its share of the chunk.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from dataflow.llm import Request, Response, open_backend, resolve_spec
from dataflow.llm.client import backends_in_use
from dataflow.llm.spec import ModelSpec

GPU_SCHEMES = ("vllm",)
RESTARTS = 3  # how often Ray restarts an engine whose worker died


class Engine:
    """A model loaded in one Ray worker (the actor's class)."""

    def __init__(self, spec: str):
        self.backend = open_backend(resolve_spec(spec))

    def chunk_size(self) -> int:
        return self.backend.chunk_size

    def prepare(self, node: str, requests: list[Request], labels: list[str]) -> None:
        self.backend.prepare(node, requests, labels)

    def generate(self, requests: list[Request]) -> list[Response]:
        return self.backend.generate(requests)


def engine_resources(spec: ModelSpec, cluster: dict[str, float]) -> tuple[int, dict[str, Any]]:
    """How many engines a model gets on the cluster, and each one's Ray resources."""
    if spec.scheme in GPU_SCHEMES:
        return max(1, int(cluster.get("GPU", 0))), {"num_gpus": 1}
    threads = spec.option("threads", 1)
    return max(1, int(cluster.get("CPU", 1)) // threads), {
        "num_cpus": threads, "runtime_env": {"env_vars": {"DATAFLOW_TORCH_THREADS": str(threads)}}}


class ShardedBackend:
    """A backend whose requests go to engine actors on the cluster, in equal contiguous shards."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self._engines: list[Any] = []
        self._chunk = 0

    @property
    def engines(self) -> list[Any]:
        if not self._engines:
            import ray

            count, resources = engine_resources(self.spec, ray.cluster_resources())
            actor = ray.remote(max_restarts=RESTARTS, max_task_retries=RESTARTS, **resources)(Engine)
            self._engines = [actor.remote(self.spec.text) for _ in range(count)]
            self._chunk = ray.get(self._engines[0].chunk_size.remote()) * count
        return self._engines

    @property
    def chunk_size(self) -> int:
        self.engines  # noqa: B018 (a chunk holds one engine chunk per engine)
        return self._chunk

    def prepare(self, node: str, requests: list[Request], labels: list[str]) -> None:
        import ray

        ray.get(self.engines[0].prepare.remote(node, requests, labels))

    def generate(self, requests: list[Request]) -> list[Response]:
        import ray

        engines = self.engines
        shards = [requests[len(requests) * i // len(engines):len(requests) * (i + 1) // len(engines)]
                  for i in range(len(engines))]
        answers = ray.get([e.generate.remote(s) for e, s in zip(engines, shards) if s])
        return [response for shard in answers for response in shard]

    def close(self) -> None:
        import ray

        for engine in self._engines:
            ray.kill(engine)
        self._engines = []


def model_specs(op: Any) -> tuple[str, ...]:
    """The model specs an operator asks (an LLM operator names them in ``model_specs``); () for others."""
    specs = getattr(op, "model_specs", None)
    return tuple(resolve_spec(text).text for text in specs()) if callable(specs) else ()


@contextmanager
def sharded_models(specs: tuple[str, ...]) -> Iterator[None]:
    """While a node is built, every client of these model specs in this process sends its misses to the
    cluster."""
    backends = {text: ShardedBackend(resolve_spec(text)) for text in specs}
    try:
        with backends_in_use(backends):
            yield
    finally:
        for backend in backends.values():
            backend.close()
