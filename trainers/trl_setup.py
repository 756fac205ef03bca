"""A dataflow trainer config as TRL's SFT, DPO or GRPO trainer: the device (GPU and bf16 when there
is one, else CPU), LoRA through peft, assistant-only loss with a marked chat template, GRPO rewards
from dataflow's verifiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from dataflow.trainers.config import DPOTrainConfig, GRPOTrainConfig, SFTTrainConfig, TrainConfig
from dataflow.trainers.rewards import grpo_reward
from dataflow.trainers.templates import training_template


def device() -> dict[str, Any]:
    """Where a run trains: {"device": "cuda"|"cpu", "bf16": bool}."""
    import torch

    cuda = torch.cuda.is_available()
    return {"device": "cuda" if cuda else "cpu", "bf16": cuda and torch.cuda.is_bf16_supported()}


def common_arguments(config: TrainConfig, output_dir: Path) -> dict[str, Any]:
    """TrainingArguments shared by the three TRL configs."""
    where = device()
    return dict(
        output_dir=str(output_dir), learning_rate=config.learning_rate, num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation, warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay, seed=config.seed, data_seed=config.seed,
        train_sampling_strategy=config.order,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=1,
        logging_steps=config.logging_steps, report_to="none", disable_tqdm=True,
        use_cpu=where["device"] == "cpu", bf16=where["bf16"],
    )


def lora_config(config: TrainConfig):
    if not config.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def make_trainer(trainer: str, config: TrainConfig, model_dir: Path, model_name: str, dataset, output_dir: Path,
                 callbacks: list) -> Any:
    """The TRL trainer of ``trainer`` ("sft", "dpo", "grpo") for the model saved in ``model_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="bfloat16" if device()["bf16"] else "float32")
    trainer_class, config_class, fields, extra = BUILDERS[trainer](config, tokenizer, model_name)
    args = config_class(**common_arguments(config, output_dir), **fields)
    from transformers.trainer_callback import PrinterCallback

    run = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                        peft_config=lora_config(config), callbacks=callbacks, **extra)
    run.remove_callback(PrinterCallback)  # it prints every log dict; the run log prints its own lines
    return run


def _sft(config: SFTTrainConfig, tokenizer, model_name: str):
    import trl

    if config.assistant_only_loss:
        marked = training_template(tokenizer, model_name)
        if marked:
            tokenizer.chat_template = marked
    fields = dict(max_length=config.max_length, assistant_only_loss=config.assistant_only_loss,
                  packing=config.packing)
    return trl.SFTTrainer, trl.SFTConfig, fields, {}


def _dpo(config: DPOTrainConfig, tokenizer, model_name: str):
    import trl

    fields = dict(max_length=config.max_length, beta=config.beta, loss_type=[config.loss_type])
    return trl.DPOTrainer, trl.DPOConfig, fields, {}


def _grpo(config: GRPOTrainConfig, tokenizer, model_name: str):
    import trl

    fields = dict(num_generations=config.num_generations, max_completion_length=config.max_completion_length,
                  temperature=config.temperature, beta=config.beta, generation_batch_size=config.batch_size)
    return trl.GRPOTrainer, trl.GRPOConfig, fields, {"reward_funcs": [grpo_reward(config.verifier or None)]}


# trainer -> (config, tokenizer, model name) -> (TRL trainer class, TRL config class, its fields, trainer keywords)
BUILDERS: dict[str, Callable[..., tuple[type, type, dict, dict]]] = {"sft": _sft, "dpo": _dpo, "grpo": _grpo}
