"""Will a training step fit? An estimate from the model's config before anything loads, so a batch
that cannot fit is an error naming the fix instead of a crash (or swapping) minutes into the run.

Estimated bytes: the weights in fp32 (4 per parameter) plus, for trained weights, their gradient
and AdamW's two moments (12 more); a frozen reference model (DPO; GRPO with beta > 0) adds 4 per
parameter; activations per step take ~20 x hidden x layers bytes per token for the saved layer
inputs (with gradient checkpointing off) and 12 bytes per token per vocabulary entry for the logits,
their log-softmax and its gradient. The estimate errs low: only a step clearly past the memory
available is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dataflow.errors import DataflowError
from dataflow.trainers.config import DPOTrainConfig, GRPOTrainConfig, TrainConfig


def parameters(config: dict) -> int:
    """The parameter count of a decoder from its config.json."""
    hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads = config.get("num_attention_heads", 1)
    kv = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim") or hidden // heads
    attention = hidden * head_dim * (2 * heads + 2 * kv)
    mlp = 3 * hidden * config.get("intermediate_size", 4 * hidden)
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", True) else 2)
    return layers * (attention + mlp) + embeddings


def step_bytes(model_dir: Path, config: TrainConfig) -> int:
    model = json.loads((Path(model_dir) / "config.json").read_text())
    n = parameters(model)
    state = n * (4 if config.lora else 16)
    if isinstance(config, DPOTrainConfig) or (isinstance(config, GRPOTrainConfig) and config.beta > 0):
        state += 0 if config.lora else n * 4  # the reference model (LoRA: the base with adapters off)
    sequences = config.batch_size * (2 if isinstance(config, DPOTrainConfig) else 1)
    length = config.max_completion_length if isinstance(config, GRPOTrainConfig) else config.max_length
    tokens = sequences * length
    activations = tokens * (20 * model["hidden_size"] * model["num_hidden_layers"] + 12 * model["vocab_size"])
    return state + activations


def available_bytes() -> tuple[int, str]:
    """Free memory of the device a run would use, and its name."""
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free, "GPU memory free"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024, "memory available"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"), "memory available"


def check_memory(model_dir: Path, config: TrainConfig, trainer: str) -> None:
    need, (have, what) = step_bytes(model_dir, config), available_bytes()
    if need <= have:
        return
    raise DataflowError(f"`dataflow train {trainer}`: a step needs about {need / 2**30:.1f} GiB (batch_size "
                        f"{config.batch_size} x {getattr(config, 'max_completion_length', config.max_length)} "
                        f"tokens) but {have / 2**30:.1f} GiB {what}; lower batch_size and raise "
                        f"gradient_accumulation (the same effective batch), lower max_length, or set lora=true")
