"""``dataflow train sft|dpo|grpo DATA``: train a model on a build output with TRL, in a run folder
(``trainers/runs.py``) that names the exact outputs it trained on. Every check on the data, the
config, the model and the memory comes before the model loads."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Callable

import polars as pl

from dataflow.errors import DataflowError
from dataflow.records import now
from dataflow.trainers.config import CONFIGS, TrainConfig, as_yaml, load_config
from dataflow.trainers.inputs import BuildOutput, find_output, require_schema
from dataflow.trainers.memory_check import check_memory
from dataflow.trainers.quiet import quiet_libraries
from dataflow.trainers.rewards import verifier_problems
from dataflow.trainers.runs import (
    MODEL,
    RECORD,
    RUNS,
    base_identity,
    read_run,
    resolve_model,
    run_id,
    trainable_dir,
    write_run,
)

ACCEPTS = {"sft": ("sft", "conversation"), "dpo": ("preference",), "grpo": ("prompt",)}
RECORDS = {"sft": "sft", "dpo": "preference", "grpo": "prompt"}  # what every row must be, for the trainer
COLUMNS = {"sft": ["messages"], "dpo": ["prompt", "chosen", "rejected"], "grpo": ["prompt", "answer", "verifier"]}
CHECKPOINTS = "checkpoints"
LOSS = "loss.jsonl"


def train(trainer: str, data_ref: str, model: str = "local", config_file: Path | None = None,
          settings: dict[str, str] | None = None, out: Path | str = "out", runs: Path | str = RUNS,
          log: Callable[[str], None] = partial(print, flush=True)) -> Path:
    """Train (or resume, or find finished) the run of ``trainer`` on the output ``data_ref``; returns its folder."""
    data = find_output(data_ref, out)
    require_schema(data, ACCEPTS[trainer], f"`dataflow train {trainer}`")
    config = load_config(trainer, config_file, settings or {})
    spec, base_run = resolve_model(model, Path(runs))
    base_dir = trainable_dir(spec)
    frame = training_rows(trainer, data, config)
    directory = Path(runs) / run_id(trainer, base_identity(base_dir), config.identity(), [data.record()])
    if (directory / RECORD).exists() and read_run(directory).get("status") == "finished":
        log(f"already trained: {directory} (same trainer, base model, config and data); model in {directory / MODEL}")
        return directory
    check_memory(base_dir, config, trainer)
    directory.mkdir(parents=True, exist_ok=True)
    record = {"run_id": directory.name, "trainer": trainer, "base_model": spec, "base_dir": str(base_dir),
              "base_run": base_run.name if base_run else None, "config": asdict(config), "inputs": [data.record()],
              "status": "running", "started": now(), "command": " ".join(sys.argv), "versions": _versions()}
    write_run(directory, record)
    (directory / "config.yaml").write_text(as_yaml(config))
    try:
        _run(trainer, config, base_dir, model, frame, directory, record, log)
    except BaseException as exc:  # the record says so; the same command resumes from the last checkpoint
        record.update(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", finished=now(),
                      error=f"{type(exc).__name__}: {str(exc)[:500]}")
        write_run(directory, record)
        raise
    return directory


def training_rows(trainer: str, data: BuildOutput, config: TrainConfig) -> pl.DataFrame:
    """The columns the trainer reads, every row a valid record; a GRPO prompt set must say how each answer
    is checked."""
    frame = data.valid_frame(RECORDS[trainer], f"`dataflow train {trainer}`")
    columns = [c for c in COLUMNS[trainer] if c in frame.columns]
    if trainer == "grpo":
        names = set(frame["verifier"].unique()) if "verifier" in frame.columns else {None}
        if None in names and not config.verifier:
            raise DataflowError(f"output '{data.name}': the GRPO reward needs to know how answers are checked; "
                                f"it has rows without a `verifier` column value, so set verifier=math (or exact, "
                                f"contains, regex, code, json_schema) with --set")
        problems = verifier_problems(names - {None} | ({config.verifier} if config.verifier else set()))
        if problems:
            raise DataflowError(f"output '{data.name}': the GRPO reward cannot check its answers: "
                                f"{'; '.join(problems)}")
    return frame.select(columns)


def _run(trainer: str, config: TrainConfig, base_dir: Path, model_name: str, frame: pl.DataFrame, directory: Path,
         record: dict[str, Any], log: Callable[[str], None]) -> None:
    import datasets
    import torch
    from transformers.trainer_utils import get_last_checkpoint

    from dataflow.trainers.trl_setup import device, make_trainer

    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    checkpoints = directory / CHECKPOINTS
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    resumed_at = int(Path(last).name.split("-")[-1]) if last else 0
    _keep_log_until(directory / LOSS, resumed_at)
    where = device()
    log(f"training {trainer} on {record['inputs'][0]['output']} ({len(frame):,} rows) from {model_name} on "
        f"{where['device']}{' (bf16)' if where['bf16'] else ''} -> {directory}"
        + (f"; resuming from step {resumed_at}" if last else ""))
    started = time.perf_counter()
    dataset = datasets.Dataset.from_polars(frame)
    quiet_libraries()
    run = make_trainer(trainer, config, base_dir, model_name, dataset, checkpoints, [run_log(directory / LOSS, log)])
    result = run.train(resume_from_checkpoint=last)
    _save_model(run, base_dir, directory / MODEL)
    shutil.rmtree(checkpoints, ignore_errors=True)  # the model is saved: checkpoints would only take space
    losses = [json.loads(line) for line in (directory / LOSS).read_text().splitlines()]
    record.update(status="finished", finished=now(), seconds=round(time.perf_counter() - started, 1),
                  steps=result.global_step, resumed_at_step=resumed_at or None, device=where,
                  first_loss=_loss(losses[:1]), last_loss=_loss(losses[-1:]), train_loss=result.training_loss)
    write_run(directory, record)
    log(f"trained {result.global_step} steps in {record['seconds']}s; {_loss_change(losses)}; model in "
        f"{directory / MODEL}")
    for warning in _signal_warnings(losses, config):
        log(f"warning: {warning}")


def _loss(entries: list[dict]) -> float | None:
    return round(entries[0]["loss"], 4) if entries and "loss" in entries[0] else None


def _loss_change(entries: list[dict]) -> str:
    """The mean loss of the first and of the last logged steps (a step's loss alone is noisy)."""
    losses = [e["loss"] for e in entries if "loss" in e]
    if not losses:
        return "no loss logged"
    k = max(1, min(5, len(losses) // 2))
    return (f"mean loss of the first {k} logged step(s) {sum(losses[:k]) / k:.4f}, of the last {k} "
            f"{sum(losses[-k:]) / k:.4f}")


def _signal_warnings(entries: list[dict], config: TrainConfig) -> list[str]:
    """GRPO: what made its steps learn nothing (every group's rewards equal), or little (cut completions)."""
    found = []
    flat = [e["frac_reward_zero_std"] for e in entries if "frac_reward_zero_std" in e]
    if flat and min(flat) >= 1.0:
        found.append("no step had a learning signal: in every group the completions got the same reward (TRL's "
                     "frac_reward_zero_std = 1 at each logged step), so the policy did not move; train on prompts "
                     "the model solves only sometimes (a learnable pass-rate band), with more num_generations or "
                     "more steps")
    clipped = [e["completions/clipped_ratio"] for e in entries if "completions/clipped_ratio" in e]
    if clipped and sum(clipped) / len(clipped) >= 0.5:
        found.append(f"{sum(clipped) / len(clipped):.0%} of the completions were cut at max_completion_length "
                     f"({getattr(config, 'max_completion_length', '?')} tokens): a cut completion rarely holds an "
                     f"answer to reward; set a larger max_completion_length")
    return found


def _keep_log_until(path: Path, step: int) -> None:
    """The loss log of a resumed run: the lines up to its checkpoint (later steps will be logged again)."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def _save_model(run, base_dir: Path, target: Path) -> None:
    """The trained model as a plain Hugging Face directory (LoRA adapters merged) with the base model's
    tokenizer as it was (not the marked training template), written whole or not at all."""
    from transformers import AutoTokenizer

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = run.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def run_log(path: Path, log: Callable[[str], None]):
    """A trainer callback: each logged step as a line of loss.jsonl and a short line on the terminal; no
    checkpoint after the last step (the model is saved instead: a checkpoint would write the optimizer too)."""
    from transformers import TrainerCallback

    class RunLog(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = False

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            entry = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
            with open(path, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
            reward = f"  reward {logs['reward']:.3f}" if "reward" in logs else ""  # GRPO: the verifiers' mean
            log(f"  step {state.global_step}/{state.max_steps}  loss {logs['loss']:.4f}{reward}")

    return RunLog()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("dataflow", "trl", "transformers", "torch", "peft", "datasets"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def cli_help(trainer: str) -> str:
    from dataflow.trainers.config import field_help

    return field_help(CONFIGS[trainer])
