"""KL(policy || reference) of sampled responses, from both models' next-token distributions.

For a response y sampled from the policy at temperature 1, the estimate of its sequence KL is the
sum over its tokens t of the exact KL between the two next-token distributions at that position,
``sum_v p(v | x, y<t) * (log p(v | x, y<t) - log q(v | x, y<t))``; its mean over samples is an
unbiased estimate of KL(p || q) over whole responses (the chain rule of KL), never negative and with
less variance than the mean of the sampled log-ratio ``log p(y|x) - log q(y|x)``. The tokens are the
response re-tokenized by the policy's tokenizer, plus the end-of-turn token where the model stopped.
Both models must share the tokenizer (a trained model and its base do).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from dataflow.errors import DataflowError
from dataflow.llm import model_identity
from dataflow.operator import Context, Kind, Operator, Result, identity_field
from dataflow.operators.generation import Generate
from dataflow.trainers.quiet import quiet_libraries
from dataflow.trainers.runs import trainable_dir

Turns = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SequenceKL(Operator):
    """Adds ``kl`` (the response's KL(policy || reference) in nats, see the module doc) and
    ``kl_tokens`` (its token count) to rows with the prompt ``conversation`` (sent after ``system``, as
    ``Generate`` sends it) and a ``response`` sampled from ``policy``."""

    conversation: str = "prompt"
    system: str | None = None
    response: str = "response"
    policy: str = identity_field("local")
    reference: str = identity_field("local")
    kind = Kind.GLOBAL

    def label(self) -> str:
        return "sequence_kl"

    def required_columns(self) -> dict[str, Any]:
        return {self.conversation: None, self.response: str, f"{self.response}_finish_reason": str}

    def output_schema(self, schema: pl.Schema) -> pl.Schema:
        return pl.Schema({**schema, "kl": pl.Float64(), "kl_tokens": pl.Int64()})

    def fingerprint_extras(self) -> dict[str, Any]:
        return {"models": [model_identity(self.policy), model_identity(self.reference)]}

    def apply(self, frame: pl.LazyFrame, ctx: Context) -> Result:
        table = frame.collect()
        prompt = Generate(conversation=self.conversation, system=self.system)
        turns = [prompt.messages(row) for row in table.select(self.conversation).iter_rows(named=True)]
        stopped = [reason == "stop" for reason in table[f"{self.response}_finish_reason"]]
        values = sequence_kls(trainable_dir(self.policy), trainable_dir(self.reference), turns,
                              table[self.response].to_list(), stopped) if table.height else []
        ctx.progress(table.height)
        return Result(table.with_columns(pl.Series("kl", [v[0] for v in values], pl.Float64),
                                         pl.Series("kl_tokens", [v[1] for v in values], pl.Int64)))


def sequence_kls(policy_dir: Path, reference_dir: Path, prompts: list[Turns], responses: list[str],
                 stopped: list[bool]) -> list[tuple[float, int]]:
    """(sequence KL, tokens) of each response to its prompt (see the module doc)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_libraries()
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    if AutoTokenizer.from_pretrained(reference_dir).get_vocab() != tokenizer.get_vocab():
        raise DataflowError(f"KL: the reference model {reference_dir} has another tokenizer than the evaluated model "
                            f"{policy_dir}; KL over tokens needs both on one vocabulary (a trained model and its base)")
    policy, reference = (AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
                         for d in (policy_dir, reference_dir))
    eos = policy.generation_config.eos_token_id
    eos = (eos[0] if isinstance(eos, list) else eos) if eos is not None else tokenizer.eos_token_id
    found = []
    with torch.inference_mode():
        for turns, text, stop in zip(prompts, responses, stopped):
            chat = [{"role": role, "content": content} for role, content in turns]
            encoded = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
            prompt = list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
            completion = tokenizer.encode(text or "", add_special_tokens=False) + ([eos] if stop else [])
            if not completion:
                found.append((0.0, 0))
                continue
            ids = torch.tensor([prompt + completion])
            at = slice(len(prompt) - 1, -1)  # the positions that predict the completion's tokens
            log_p = policy(ids).logits[0, at].float().log_softmax(-1)
            log_q = reference(ids).logits[0, at].float().log_softmax(-1)
            found.append((float((log_p.exp() * (log_p - log_q)).sum()), len(completion)))
    return found
