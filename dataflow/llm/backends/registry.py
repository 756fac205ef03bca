"""The one registry of model backends: scheme -> how its specs are checked, named and loaded.

A backend module calls :func:`register_backend` for each scheme it serves; the built-ins do so
exactly as a test double does. Checking a spec never loads a model; :func:`model_identity` is cheap.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Protocol

from dataflow.filehash import file_digest
from dataflow.llm.spec import EXAMPLES, ModelSpec, SpecError, parse_spec
from dataflow.llm.types import Request, Response

COUNTS = frozenset({"threads", "batch_size", "chunk", "context", "concurrency", "tensor_parallel_size"})
WHOLE_NUMBERS = frozenset({"retries", "n", "max_model_len"})
NUMBERS = frozenset({"backoff"})
POSITIVE_NUMBERS = frozenset({"timeout", "gpu_memory_utilization"})
DTYPES = ("auto", "float32", "float16", "bfloat16")


class Backend(Protocol):
    """A loaded model. The client sends it requests that missed the cache, in chunks."""

    chunk_size: int

    def prepare(self, node: str, requests: list[Request], labels: list[str]) -> None:
        """Fail (with a DataflowError naming the row) before the first chunk if a request cannot run."""

    def generate(self, requests: list[Request]) -> list[Response]:
        """One response per request, in order; a failed request is a Response with ``error``. A
        backend may also take ``finished``, a function it calls with (index, response) as each
        request finishes, so that the client stores it at once."""


@dataclass(frozen=True)
class BackendType:
    """How the specs of one scheme are read, checked, named and loaded."""

    scheme: str
    open: Callable[[ModelSpec], Backend]  # loads the model
    identity: Callable[[ModelSpec], str]  # what the model computes with (weights hash, served id)
    options: frozenset[str] | None = None  # the options it takes; None: any
    read_target: Callable[[ModelSpec], ModelSpec] = lambda spec: spec  # checks and normalizes the target
    problems: Callable[[ModelSpec], list[str]] = lambda spec: []  # what stops it, found without loading
    model_dir: Callable[[ModelSpec], Path | None] | None = None  # its tokenizer's directory, where it has one


_types: dict[str, BackendType] = {}


def register_backend(scheme: str, open: Callable[[ModelSpec], Backend], identity: Callable[[ModelSpec], str], *,
                     options: frozenset[str] | None = None,
                     read_target: Callable[[ModelSpec], ModelSpec] = lambda spec: spec,
                     problems: Callable[[ModelSpec], list[str]] = lambda spec: [],
                 model_dir: Callable[[ModelSpec], Path | None] | None = None) -> None:
    """Make ``scheme:...`` specs run on ``open(spec)``; ``identity(spec)`` names the model."""
    _types[scheme] = BackendType(scheme, open, identity, options, read_target, problems, model_dir)
    resolve_spec.cache_clear()


def backend_type(spec: ModelSpec) -> BackendType:
    return _types[spec.scheme]


@functools.lru_cache(maxsize=None)
def resolve_spec(text: str) -> ModelSpec:
    """The spec ``text`` parsed and checked against its backend (raises SpecError saying why not)."""
    spec = parse_spec(text)
    kind = _types.get(spec.scheme)
    if kind is None:
        raise SpecError(f"unknown model spec {text!r}: use one of {EXAMPLES}")
    unknown = sorted(set(spec.options) - kind.options) if kind.options is not None else []
    if unknown:
        raise SpecError(f"model spec {text!r}: unknown option(s) {unknown}; '{spec.scheme}' takes "
                        f"{sorted(kind.options)}")
    for name, value in spec.options.items():
        if problem := _value_problem(name, value):
            raise SpecError(f"model spec {text!r}: option {name}={value!r} {problem}")
    return kind.read_target(spec)


def _value_problem(name: str, value: str) -> str | None:
    """What is wrong with an option's value, if anything (options not listed here take any text)."""
    if name in COUNTS and not (value.isdigit() and int(value) > 0):
        return f"must be a whole number of at least 1, e.g. {name}=2"
    if name in WHOLE_NUMBERS and not value.isdigit():
        return f"must be a whole number, e.g. {name}=2"
    if name in NUMBERS | POSITIVE_NUMBERS:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if number > 0 or (number == 0 and name in NUMBERS):
            return None
        return f"must be a number {'of at least 0' if name in NUMBERS else 'above 0'}, e.g. {name}=1.5"
    if name == "dtype" and value not in DTYPES:
        return f"must be one of {', '.join(DTYPES)} (weights are not quantized by an option)"
    return None


def as_spec(model: str | ModelSpec) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else resolve_spec(model)


def spec_problems(text: str) -> list[str]:
    """What stops this spec from working, found without loading anything."""
    try:
        spec = resolve_spec(text)
    except SpecError as exc:
        return [str(exc)]
    return backend_type(spec).problems(spec)


def model_identity(model: str | ModelSpec) -> str:
    """What the model computes with: backend, model and weights hash (or the served model id)."""
    spec = as_spec(model)
    return backend_type(spec).identity(spec)


def open_backend(model: str | ModelSpec) -> Backend:
    """Load the backend a spec names (this is where models load)."""
    spec = as_spec(model)
    return backend_type(spec).open(spec)


@functools.lru_cache(maxsize=None)
def pre_query_text(model: str, system: str | None = None) -> str | None:
    """What the model's chat template writes before a user's message (after ``system`` as the
    system turn, else its default one), from its tokenizer alone; None for a backend without a
    tokenizer directory (a server)."""
    spec = as_spec(model)
    directory = backend_type(spec).model_dir
    path = directory(spec) if directory else None
    if path is None:
        return None
    from transformers import AutoTokenizer

    marker = "<<QUERY>>"
    turns = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": marker}]
    text = AutoTokenizer.from_pretrained(path).apply_chat_template(turns, tokenize=False)
    return text[:text.index(marker)]


def no_target(spec: ModelSpec) -> ModelSpec:
    if spec.target or spec.model:
        raise SpecError(f"model spec {spec.text!r}: '{spec.scheme}' takes no path; use hf:PATH for another model")
    return spec


def path_target(spec: ModelSpec) -> ModelSpec:
    if not spec.target:
        raise SpecError(f"model spec {spec.text!r}: write {spec.scheme}:PATH with the model directory")
    return replace(spec, target=str(Path(spec.target).expanduser()))


def with_identity_options(identity: str, spec: ModelSpec) -> str:
    """``identity`` followed by the options that change what the model computes (``dtype``)."""
    kept = "&".join(f"{k}={v}" for k, v in sorted(spec.options.items()) if k == "dtype")
    return f"{identity}?{kept}" if kept else identity


def model_dir_problems(spec: ModelSpec) -> list[str]:
    """The problem of a spec whose target is not a saved Hugging Face model directory."""
    if (Path(spec.target) / "config.json").is_file():
        return []
    return [f"model spec {spec.text!r}: no model at {spec.target} (config.json missing); give the directory of a "
            f"saved Hugging Face model (models are never downloaded at run time)"]


def model_dir_identity(engine: str, spec: ModelSpec) -> str:
    """The identity of a model directory run by ``engine``: its path and content hash."""
    return with_identity_options(f"{engine}:{spec.target}:{file_digest(Path(spec.target))}", spec)
