"""Requests and responses of the one client interface shared by every backend."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True, kw_only=True)
class SamplingParameters:
    """How each completion is sampled; an LLM operator's sampling fields are these."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0


def sampling_parameters(source: Any) -> dict[str, Any]:
    """The sampling parameters of ``source`` (an LLM operator, a Sampling), by name."""
    return {f.name: getattr(source, f.name) for f in fields(SamplingParameters)}


@dataclass(frozen=True, kw_only=True)
class Sampling(SamplingParameters):
    """Sampling parameters of a chat request. ``n`` completions share the prompt (prefix sharing);
    completion ``k`` is reproducible from (``seed``, ``k``). ``json_schema`` is JSON text that the
    completion must match (constrained decoding where the backend has it). ``logprobs`` asks for
    that many most likely tokens, with their log-probabilities, at every generated position."""

    n: int = 1
    json_schema: str | None = None
    logprobs: int = 0

    def cache_fields(self) -> dict[str, Any]:
        """What identifies one sample of this request (``n`` does not: sample k is sample k)."""
        fields = asdict(self)
        fields.pop("n")
        fields["stop"] = list(self.stop)
        return fields

    def problems(self) -> list[str]:
        found = []
        if not 0 <= self.temperature <= 5:
            found.append(f"temperature must be between 0 and 5, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            found.append(f"top_p must be in (0, 1], not {self.top_p}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            found.append(f"max_tokens must be a positive int, not {self.max_tokens!r}")
        if not isinstance(self.n, int) or self.n < 1:
            found.append(f"n must be a positive int, not {self.n!r}")
        if not isinstance(self.seed, int):
            found.append(f"seed must be an int, not {self.seed!r}")
        if not isinstance(self.logprobs, int) or not 0 <= self.logprobs <= 20:
            found.append(f"logprobs must be an int from 0 to 20, not {self.logprobs!r}")
        return found


@dataclass(frozen=True)
class Request:
    """A chat request: turns as (role, content) pairs, and its sampling parameters. With
    ``prompt``, a raw-text request instead: the model continues that text with no chat template
    (``messages`` is then empty; OpenAI-compatible servers get ``/v1/completions``)."""

    messages: tuple[tuple[str, str], ...]
    sampling: Sampling = Sampling()
    prompt: str | None = None

    def chat(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def template_args(self) -> dict[str, bool]:
        """Chat-template arguments: a request ending with an assistant turn asks the model to
        continue that turn (a prefilled reply, e.g. '{"score": '), others to start a new one."""
        prefilled = bool(self.messages) and self.messages[-1][0] == "assistant"
        return {"add_generation_prompt": not prefilled, "continue_final_message": prefilled}


TRUNCATED = "length"  # the finish reason of a completion cut off at max_tokens (else "stop")


@dataclass
class Completion:
    """One sample. With ``logprobs`` asked: ``tokens`` are the texts of the generated tokens and
    ``top_logprobs[i]`` maps the most likely texts at position i to their log-probabilities."""

    text: str
    finish_reason: str  # "stop" or "length"
    tokens_out: int | None = None
    tokens: list[str] | None = None
    top_logprobs: list[dict[str, float]] | None = None


@dataclass
class Response:
    """The ``n`` completions of a request, or an ``error`` (then ``completions`` is empty).
    ``usage_out`` is the generated token count a server reports for all completions together."""

    completions: list[Completion] = field(default_factory=list)
    tokens_in: int | None = None
    error: str | None = None
    usage_out: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` of a request seeded with ``seed`` (a stable 63-bit mix)."""
    return (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + index) % (1 << 63)


def schema_text(schema: dict | str | None) -> str | None:
    """A JSON schema as compact JSON text. Keys keep their order: the order of ``properties`` is
    the order in which constrained decoding writes them (a judge's verdict before its rationale)."""
    if schema is None:
        return None
    value = json.loads(schema) if isinstance(schema, str) else schema
    return json.dumps(value, separators=(",", ":"))
