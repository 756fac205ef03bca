"""What an evaluation measures and how: one dataclass, every field documented."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

METRICS = ("pass@k", "format", "win_rate", "kl", "distinct_2")
GATE_BOUNDS = ("min_win_rate", "max_kl", "min_distinct_2", "min_format")  # check results, not measures


@dataclass(frozen=True)
class EvalOptions:
    """Options of ``evaluate``. The measured ones name the record (same model, data and options:
    the same record, rebuilt from the cache); the gate bounds only decide pass or fail."""

    metrics: tuple[str, ...] = ()  # of METRICS; empty: every metric that applies to the data and models
    baseline: str | None = None  # win rate against this model; a run's default: its base model
    reference: str | None = None  # KL to this model; a run's default: its base model
    judge: str = "local"  # the pairwise judge (both orders)
    rubric: str = "helpfulness"  # the judge's criterion: a built-in rubric name or a rubric text
    k: int = 4  # pass@k's k (pass@1 is always given)
    samples: int | None = None  # samples per prompt for pass@k, at least k (default: k)
    prompts: int | None = None  # a seeded sample of this many of the output's prompts (default: all)
    kl_prompts: int = 32  # prompts sampled (at temperature 1) for the KL estimate
    max_tokens: int = 256  # per generation
    temperature: float = 0.7  # of the samples for pass@k, format, win rate and distinct-2
    seed: int = 0  # of the samples and of the prompt sample
    system: str | None = None  # a system prompt sent before each prompt (e.g. the answer format)
    verifier: str = "math"  # the verifier of prompts without a `verifier` value
    gates: tuple[str, ...] | None = None  # the exit gates to check; None: by the run's trainer; (): none
    min_win_rate: float = 0.55  # seed 001: a DPO model beats its SFT base on more than 55% of prompts
    max_kl: float = 0.5  # seed 001: KL to the reference below 0.5 nats per token
    min_distinct_2: float = 0.3  # seed 001: distinct-2 of the generations above 0.3
    min_format: float = 0.95  # seed 001: SFT format correctness above 95%

    @property
    def samples_per_prompt(self) -> int:
        return self.samples or self.k

    def measured(self) -> dict[str, Any]:
        """The options that change what is measured (everything but the gates and their bounds)."""
        return {k: v for k, v in asdict(self).items() if k not in (*GATE_BOUNDS, "gates")}

    def bounds(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in GATE_BOUNDS}

    def problems(self) -> list[str]:
        """Each option that cannot work, with the fix."""
        found = [f"unknown metric {m!r}: choose from {', '.join(METRICS)}" for m in self.metrics if m not in METRICS]
        for name in ("k", "kl_prompts", "max_tokens", "samples", "prompts"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                found.append(f"{name} must be a positive int, not {value!r}")
        if isinstance(self.samples, int) and isinstance(self.k, int) and self.samples < self.k:
            found.append(f"samples ({self.samples}) must be at least k ({self.k}): pass@k draws k of the samples")
        if not 0 <= self.temperature <= 5:
            found.append(f"temperature must be between 0 and 5, not {self.temperature}")
        return found

