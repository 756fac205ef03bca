"""Model specs: strings that name a model and the backend that runs it, parsed here and checked
against their backend by the registry (:mod:`dataflow.llm.backends`).

    SCHEME[:TARGET][#MODEL][?KEY=VALUE&...]

- ``local``: the embedded default (SmolLM2-135M-Instruct on transformers, CPU).
- ``hf:PATH``: a Hugging Face model directory on transformers (CPU, or GPU with ``device=cuda``).
- ``llamacpp[:PATH.gguf]``: a GGUF file on llama.cpp (CPU; without a path, the default model's GGUF).
- ``vllm:PATH``: a model directory on vLLM (GPU, offline batch).
- ``openai:BASE_URL#MODEL``: an OpenAI-compatible server, e.g. ``openai:http://127.0.0.1:8000/v1#qwen``.

Runtime options follow ``?`` (``local?threads=2&batch_size=16``). They tune how the model runs,
not what it computes, and are not part of the model identity (except ``dtype``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

EXAMPLES = ("local, hf:/path/to/model, llamacpp, llamacpp:/path/to/model.gguf, vllm:/path/to/model, "
            "openai:http://127.0.0.1:8000/v1#model-name")


class SpecError(ValueError):
    """A model spec that cannot work; the message says how to fix it."""


@dataclass(frozen=True)
class ModelSpec:
    text: str  # as the user wrote it
    scheme: str
    target: str = ""  # a path, or a base URL
    model: str = ""  # the served model id (openai)
    options: dict[str, str] = field(default_factory=dict)

    def option(self, name: str, default: Any) -> Any:
        if name not in self.options:
            return default
        return type(default)(self.options[name]) if default is not None else self.options[name]


def parse_spec(text: str) -> ModelSpec:
    """The parts of a spec string (its syntax only: the backend checks its target and options)."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"model must be a spec string such as {EXAMPLES}; got {text!r}")
    base, _, query = text.strip().partition("?")
    scheme, _, rest = base.partition(":")
    target, _, model = rest.partition("#")
    return ModelSpec(text, scheme, target, model, dict(parse_qsl(query, keep_blank_values=True)))
