"""Model specs: strings that name a model and the backend that runs it.

- ``local``: the embedded default (SmolLM2-135M-Instruct on transformers, CPU).
- ``hf:PATH``: a Hugging Face model directory on transformers (CPU, or GPU with ``device=cuda``).
- ``vllm:PATH``: a model directory on vLLM (GPU, offline batch).
- ``openai:BASE_URL#MODEL``: an OpenAI-compatible server, e.g. ``openai:http://127.0.0.1:8000/v1#qwen``.

Runtime options follow ``?`` as ``key=value`` pairs joined by ``&`` (``local?threads=2&batch_size=16``).
They tune how the model runs, not what it computes, and are not part of the model identity
(except ``dtype``). Checking a spec never loads a model; :func:`model_identity` is cheap.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlparse

from dataflow.filehash import file_digest

OPTIONS = {
    "local": {"threads", "batch_size", "device", "dtype", "chunk"},
    "hf": {"threads", "batch_size", "device", "dtype", "chunk"},
    "vllm": {"dtype", "chunk", "gpu_memory_utilization", "tensor_parallel_size", "max_model_len"},
    "openai": {"concurrency", "timeout", "retries", "backoff", "api_key_env", "n", "chunk"},
}
IDENTITY_OPTIONS = {"dtype"}
EXAMPLES = "local, hf:/path/to/model, vllm:/path/to/model, openai:http://127.0.0.1:8000/v1#model-name"

# Extra schemes (e.g. a test double): scheme -> (factory(spec) -> backend, identity(spec) -> str).
_registered: dict[str, tuple[Callable[["ModelSpec"], Any], Callable[["ModelSpec"], str]]] = {}


def register_backend(scheme: str, factory: Callable[["ModelSpec"], Any],
                     identity: Callable[["ModelSpec"], str]) -> None:
    """Make ``scheme:TARGET`` specs run on ``factory(spec)``; ``identity(spec)`` names the model."""
    _registered[scheme] = (factory, identity)


@dataclass(frozen=True)
class ModelSpec:
    text: str
    scheme: str
    target: str = ""  # a path, or a base URL
    model: str = ""  # the served model id (openai)
    options: dict[str, str] = field(default_factory=dict)

    def option(self, name: str, default: Any) -> Any:
        if name not in self.options:
            return default
        return type(default)(self.options[name]) if default is not None else self.options[name]


class SpecError(ValueError):
    """A model spec that cannot work; the message says how to fix it."""


def parse_spec(text: str) -> ModelSpec:
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"model must be a spec string such as {EXAMPLES}; got {text!r}")
    base, _, query = text.strip().partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    scheme, _, rest = base.partition(":")
    if scheme in _registered:
        return ModelSpec(text, scheme, rest, options=options)
    if scheme not in OPTIONS:
        raise SpecError(f"unknown model spec {text!r}: use one of {EXAMPLES}")
    unknown = sorted(set(options) - OPTIONS[scheme])
    if unknown:
        raise SpecError(f"model spec {text!r}: unknown option(s) {unknown}; "
                        f"'{scheme}' takes {sorted(OPTIONS[scheme])}")
    if scheme == "local":
        if rest:
            raise SpecError(f"model spec {text!r}: 'local' takes no path; use hf:PATH for another model")
        return ModelSpec(text, scheme, options=options)
    if scheme == "openai":
        url, _, model = rest.partition("#")
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or not model:
            raise SpecError(f"model spec {text!r}: write openai:BASE_URL#MODEL, "
                            f"e.g. openai:http://127.0.0.1:8000/v1#my-model")
        return ModelSpec(text, scheme, url.rstrip("/"), model, options)
    if not rest:
        raise SpecError(f"model spec {text!r}: write {scheme}:PATH with the model directory")
    return ModelSpec(text, scheme, str(Path(rest).expanduser()), options=options)


def spec_problems(text: str) -> list[str]:
    """What stops this spec from working, found without loading anything."""
    try:
        spec = parse_spec(text)
    except SpecError as exc:
        return [str(exc)]
    if spec.scheme in _registered:
        return []
    problems = []
    if spec.scheme in ("local", "hf") and importlib.util.find_spec("transformers") is None:
        problems.append("the transformers backend is not installed: pip install 'dataflow[llm]'")
    if spec.scheme == "local":
        from dataflow.llm.convert import default_gguf, default_model_dir, is_converted
        from dataflow.errors import DataflowError

        if not is_converted(default_model_dir()):
            try:
                default_gguf()
            except DataflowError as exc:
                problems.append(str(exc))
    if spec.scheme in ("hf", "vllm"):
        path = Path(spec.target)
        if not (path / "config.json").is_file():
            problems.append(f"model spec {text!r}: no model at {path} (config.json missing); give the "
                            f"directory of a saved Hugging Face model (models are never downloaded at run time)")
    if spec.scheme == "vllm" and importlib.util.find_spec("vllm") is None:
        problems.append("vLLM is not installed: pip install 'dataflow[vllm]' on a GPU machine, "
                        "or use model='hf:PATH' to run the same model on transformers")
    if spec.scheme == "openai":
        env = spec.options.get("api_key_env")
        if env and not os.environ.get(env):
            problems.append(f"model spec {text!r}: the API key variable ${env} is not set; export it")
    return problems


def model_identity(text: str) -> str:
    """What the model computes with: backend, model and weights hash (or the served model id)."""
    spec = parse_spec(text)
    if spec.scheme in _registered:
        return _registered[spec.scheme][1](spec)
    kept = "&".join(f"{k}={v}" for k, v in sorted(spec.options.items()) if k in IDENTITY_OPTIONS)
    suffix = f"?{kept}" if kept else ""
    if spec.scheme == "local":
        from dataflow.llm.convert import CONVERSION_VERSION, DEFAULT_NAME, default_gguf

        gguf = default_gguf()
        return f"transformers:{DEFAULT_NAME}:gguf-{file_digest(gguf)}:conv{CONVERSION_VERSION}{suffix}"
    if spec.scheme == "openai":
        return f"openai:{spec.target}#{spec.model}{suffix}"
    backend = "transformers" if spec.scheme == "hf" else "vllm"
    return f"{backend}:{spec.target}:{file_digest(Path(spec.target))}{suffix}"


def open_backend(text: str, log: Callable[[str], None] = print) -> Any:
    """Load the backend a spec names (this is where models load)."""
    spec = parse_spec(text)
    identity = model_identity(text)
    if spec.scheme in _registered:
        return _registered[spec.scheme][0](spec)
    if spec.scheme in ("local", "hf"):
        from dataflow.llm.convert import ensure_default_model
        from dataflow.llm.transformers_backend import TransformersBackend

        path = ensure_default_model(log) if spec.scheme == "local" else Path(spec.target)
        return TransformersBackend(path, identity, spec)
    if spec.scheme == "vllm":
        from dataflow.llm.vllm_backend import VLLMBackend

        return VLLMBackend(Path(spec.target), identity, spec)
    from dataflow.llm.openai_backend import OpenAIBackend

    return OpenAIBackend(spec, identity)
