"""One documented config per trainer (TRL style: every field has help text, which is also the CLI help).

Defaults train the packaged 135M model on 2 CPU cores in minutes. Fields marked runtime (checkpoint
and log frequency, threads) change how a run goes, not what it computes, and are not part of the
run id. A config comes from the defaults, then ``--config FILE.yaml``, then ``--set NAME=VALUE``.
"""

from __future__ import annotations

import difflib
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dataflow.errors import DataflowError


def option(default: Any, help: str, *, runtime: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "runtime": runtime})


@dataclass(frozen=True)
class TrainConfig:
    """What every trainer takes."""

    learning_rate: float = option(5e-5, "peak learning rate (linear decay to 0 after the warmup)")
    epochs: float = option(1.0, "passes over the data (ignored when max_steps > 0)")
    max_steps: int = option(0, "stop after this many optimizer steps (0: run the epochs)")
    batch_size: int = option(4, "sequences per optimizer step on each device (DPO: pairs)")
    gradient_accumulation: int = option(1, "batches whose gradients add up before a step (a larger batch in the "
                                           "same memory)")
    max_length: int = option(512, "tokens per sequence (prompt and response); longer ones are truncated")
    warmup_ratio: float = option(0.0, "share of the steps over which the learning rate rises from 0")
    weight_decay: float = option(0.0, "AdamW weight decay")
    seed: int = option(0, "seed of the data order, dropout and sampling")
    order: str = option("random", "the order rows are trained in: random (shuffled each epoch) or sequential "
                                  "(the data's own order, e.g. a Curriculum's)")
    lora: bool = option(False, "train LoRA adapters (peft) instead of every weight; the saved model is merged")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA scaling alpha")
    lora_dropout: float = option(0.05, "LoRA dropout")
    save_steps: int = option(25, "write a checkpoint every N steps; a killed run resumes from the last",
                             runtime=True)
    logging_steps: int = option(1, "log the loss every N steps (loss.jsonl in the run folder)", runtime=True)
    threads: int = option(0, "CPU threads for torch (0: every core)", runtime=True)

    def problems(self) -> list[str]:
        positive = ("learning_rate", "batch_size", "gradient_accumulation", "max_length", "save_steps",
                    "logging_steps", "lora_r", "lora_alpha")
        found = [f"{name} must be > 0, not {getattr(self, name)}" for name in positive if getattr(self, name) <= 0]
        found += [f"{name} must be >= 0, not {getattr(self, name)}" for name in ("max_steps", "threads", "epochs")
                  if getattr(self, name) < 0]
        if self.max_steps == 0 and self.epochs == 0:
            found.append("epochs and max_steps are both 0: nothing to train")
        if not 0 <= self.warmup_ratio < 1:
            found.append(f"warmup_ratio must be in [0, 1), not {self.warmup_ratio}")
        if self.order not in ("random", "sequential"):
            found.append(f"order must be random or sequential, not {self.order!r}")
        return found

    def identity(self) -> dict[str, Any]:
        """The fields that change what the run computes (the run id hashes these)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("runtime")}


@dataclass(frozen=True)
class SFTTrainConfig(TrainConfig):
    """Supervised fine-tuning on conversations (an ``sft`` output)."""

    assistant_only_loss: bool = option(True, "train on the assistant turns only (the chat template gets "
                                             "{% generation %} markers when it lacks them)")
    packing: bool = option(False, "pack several conversations into each sequence of max_length")


@dataclass(frozen=True)
class DPOTrainConfig(TrainConfig):
    """Direct preference optimization on preference pairs (a ``preference`` output)."""

    learning_rate: float = option(5e-6, "peak learning rate (linear decay to 0 after the warmup)")
    beta: float = option(0.1, "how far the policy may move from the reference model (higher: closer)")
    loss_type: str = option("sigmoid", "the DPO loss: sigmoid (the paper), ipo, hinge, robust, ...; see TRL's "
                                       "DPOConfig.loss_type")

    def problems(self) -> list[str]:
        return super().problems() + ([f"beta must be > 0, not {self.beta}"] if self.beta <= 0 else [])


@dataclass(frozen=True)
class GRPOTrainConfig(TrainConfig):
    """Group relative policy optimization on a prompt set with gold answers (a ``prompt`` output)."""

    learning_rate: float = option(1e-6, "peak learning rate (linear decay to 0 after the warmup)")
    batch_size: int = option(4, "completions per optimizer step on each device (a multiple of num_generations)")
    num_generations: int = option(4, "completions sampled per prompt; their rewards are compared within the group")
    max_completion_length: int = option(128, "tokens per sampled completion (grpo_math.py measures its pass "
                                             "rates at 128: a shorter cut makes them lower)")
    temperature: float = option(1.0, "sampling temperature of the completions")
    beta: float = option(0.0, "KL penalty to the reference model (0: none, and no reference model is loaded)")
    verifier: str = option("", "the reward's verifier when the prompt set has no verifier column: math, exact, "
                               "contains, regex, code, json_schema")

    def problems(self) -> list[str]:
        found = super().problems()
        if self.num_generations < 2:
            found.append(f"num_generations must be >= 2 (rewards are compared within a group), "
                         f"not {self.num_generations}")
        elif self.batch_size % self.num_generations:
            found.append(f"batch_size ({self.batch_size}) must be a multiple of num_generations "
                         f"({self.num_generations})")
        if self.max_completion_length <= 0:
            found.append(f"max_completion_length must be > 0, not {self.max_completion_length}")
        return found


CONFIGS = {"sft": SFTTrainConfig, "dpo": DPOTrainConfig, "grpo": GRPOTrainConfig}


def field_help(config_class: type[TrainConfig]) -> str:
    """Every field with its type, default and help: the ``dataflow train KIND --help`` epilog."""
    lines = ["config fields (--set NAME=VALUE, or NAME: VALUE lines in --config FILE.yaml):"]
    for f in fields(config_class):
        runtime = "; runtime, not part of the run id" if f.metadata.get("runtime") else ""
        lines.append(f"  {f.name} ({_type_name(f)}, default {f.default!r}{runtime})")
        lines.append(f"      {f.metadata['help']}")
    return "\n".join(lines)


def _type_name(f) -> str:
    return f.type if isinstance(f.type, str) else f.type.__name__


def load_config(trainer: str, path: Path | None, settings: dict[str, str]) -> TrainConfig:
    """The defaults of ``trainer``, then the YAML file, then the ``--set`` values; unknown or ill-typed
    keys are errors that name the key and what it takes."""
    config_class = CONFIGS[trainer]
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_yaml(path))
    values.update(settings)
    known = {f.name: f for f in fields(config_class)}
    config = config_class()
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise DataflowError(f"unknown config key '{key}' for `dataflow train {trainer}`; {hint}the keys are: "
                                f"{', '.join(known)} (`dataflow train {trainer} --help` explains each)")
        config = replace(config, **{key: _coerce(trainer, known[key], value)})
    problems = config.problems()
    if problems:
        raise DataflowError(f"`dataflow train {trainer}` config: " + "; ".join(problems))
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not Path(path).is_file():
        raise DataflowError(f"--config {path}: no such file")
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataflowError(f"--config {path}: not valid YAML ({exc})") from None
    if not isinstance(values, dict):
        raise DataflowError(f"--config {path}: expected NAME: VALUE lines, got a {type(values).__name__}")
    return values


def _coerce(trainer: str, f, value: Any) -> Any:
    """``value`` (a YAML value or a --set string) as the field's type."""
    kind = type(f.default) if f.default is not MISSING else str
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        return kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
    except ValueError:
        raise DataflowError(f"config key '{f.name}' of `dataflow train {trainer}` takes a {kind.__name__} "
                            f"({f.metadata['help']}), not {value!r}") from None


def as_yaml(config: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(asdict(config), sort_keys=False)
