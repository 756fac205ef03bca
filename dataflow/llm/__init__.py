"""The LLM layer: one client interface over transformers (CPU/GPU), llama.cpp (CPU), vLLM (GPU,
offline batch) and OpenAI-compatible servers, with a persistent request cache shared by every pipeline.

    from dataflow.llm import LLMClient, Request, Sampling
    client = LLMClient("local")   # or "hf:PATH", "vllm:PATH", "openai:http://host:8000/v1#model"
    [response] = client.generate([Request((("user", "Hi!"),), Sampling(max_tokens=32, n=2, seed=0))])

Model specs are parsed in :mod:`dataflow.llm.spec` and checked, named and loaded by the backend
registry in :mod:`dataflow.llm.backends`; the cache is in :mod:`dataflow.llm.cache`
(``$DATAFLOW_LLM_CACHE``); the embedded default model in :mod:`dataflow.llm.convert`
(``$DATAFLOW_MODELS_DIR``). Pipelines use the operators in ``dataflow.operators.generation``.
"""

from dataflow.llm.backends import (Backend, BackendType, model_identity, open_backend, pre_query_text, register_backend,
                                   resolve_spec, spec_problems)
from dataflow.llm.cache import RequestCache, cache_path
from dataflow.llm.client import LLMClient, unload_backends
from dataflow.llm.spec import ModelSpec, SpecError, parse_spec
from dataflow.llm.types import Completion, Request, Response, Sampling

__all__ = ["Backend", "BackendType", "Completion", "LLMClient", "ModelSpec", "Request", "RequestCache", "Response",
           "Sampling", "SpecError", "cache_path", "model_identity", "open_backend", "parse_spec", "pre_query_text",
           "register_backend",
           "resolve_spec", "spec_problems", "unload_backends"]
