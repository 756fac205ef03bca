"""Model backends behind one registry (see :mod:`dataflow.llm.backends.registry`). Each built-in
module registers its schemes when imported: ``local`` and ``hf`` (transformers),
``llamacpp``, ``vllm``, ``openai``."""

from dataflow.llm.backends import llamacpp, openai, transformers, vllm  # noqa: F401  (each registers its schemes)
from dataflow.llm.backends.registry import (Backend, BackendType, model_identity, open_backend, pre_query_text,
                                            register_backend, resolve_spec, spec_problems)

__all__ = ["Backend", "BackendType", "model_identity", "open_backend", "pre_query_text", "register_backend",
           "resolve_spec", "spec_problems"]
