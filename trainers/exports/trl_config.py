"""TRL: ``<output>.parquet`` and ``<output>.yaml``, a config for ``trl sft|dpo|grpo --config`` that loads the
Parquet file (``datasets: [{path: parquet, data_files}]``) with the columns its trainer reads. The trainer
follows the record schema: conversations -> sft, preference pairs -> dpo, a prompt set -> grpo (rewarded by
the prompt set's own verifiers, ``trl_reward.verified_answer``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from dataflow.errors import DataflowError
from dataflow.trainers.exports.writing import ExportDir
from dataflow.trainers.inputs import BuildOutput
from dataflow.trainers.train import COLUMNS

TRAINERS = {"sft": "sft", "conversation": "sft", "preference": "dpo", "prompt": "grpo"}
REWARD = "dataflow.trainers.exports.trl_reward.verified_answer"


def model_path(model: str) -> str:
    """``model_name_or_path`` for ``--model``: local (the packaged default model), hf:PATH, or a path or hub id."""
    if model == "local":
        from dataflow.llm.convert import ensure_default_model

        return str(ensure_default_model())
    path = model.removeprefix("hf:")
    if not path or (":" in path and not Path(path).exists()):
        raise DataflowError(f"--model {model!r}: give local, hf:PATH of a saved model, or a hub id such as "
                            f"HuggingFaceTB/SmolLM2-135M-Instruct")
    return path


def yaml_text(config: dict[str, Any]) -> str:
    """``config`` (scalars, lists, and lists of flat mappings) as block YAML; values in JSON, which YAML reads."""
    lines = []
    for key, value in config.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{key}:")
            lines += [f"{'  - ' if i == 0 else '    '}{k}: {json.dumps(v)}" for item in value
                      for i, (k, v) in enumerate(item.items())]
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def check_rewardable(data: BuildOutput, frame: pl.DataFrame) -> None:
    """Every prompt names a verifier the GRPO reward can run."""
    from dataflow.trainers.rewards import verifier_problems

    if "verifier" not in frame.columns or frame["verifier"].null_count():
        missing = "some rows have none" if "verifier" in frame.columns else "the output has no verifier column"
        raise DataflowError(f"output '{data.name}': GRPO's reward checks each completion with the row's "
                            f"`verifier`, and {missing}; name it in the pipeline (e.g. ToPrompt(verifier=\"math\")) "
                            f"and build again")
    if problems := verifier_problems(set(frame["verifier"])):
        raise DataflowError(f"output '{data.name}': the GRPO reward cannot check its answers: {'; '.join(problems)}")


def write_trl(data: BuildOutput, frame: pl.DataFrame, target: ExportDir, model: str) -> list[str]:
    trainer = TRAINERS[data.schema]
    if trainer == "grpo":
        check_rewardable(data, frame)
    model_name = model_path(model)
    parquet = target.parquet(f"{data.name}.parquet", frame)
    config: dict[str, Any] = {"model_name_or_path": model_name, "datasets": [
        {"path": "parquet", "data_files": str(parquet.resolve()), "columns": COLUMNS[trainer]}]}
    if trainer == "grpo":
        config["reward_funcs"] = [REWARD]
    header = (f"# trl {trainer} --config {data.name}.yaml: output '{data.name}' of pipeline '{data.pipeline}' "
              f"({data.rows} rows, fingerprint {data.fingerprint or 'unknown'})\n")
    path = target.text(f"{data.name}.yaml", header + yaml_text(config))
    return [f"TRL: trl {trainer} --config {path.resolve()} --output_dir runs/{data.name}"]
