"""The transformers backend (CPU or GPU): continuous batching (``decoding.decode``) over a KV cache
that sequences leave as they finish and new prompts join, left-padded, as slots free up.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

from dataflow.errors import DataflowError
from dataflow.filehash import file_digest
from dataflow.llm.backends.decoding import Report, Sampler, decode, default_threads, encode
from dataflow.llm.backends.registry import (model_dir_identity, model_dir_problems, no_target, path_target,
                                            register_backend, with_identity_options)
from dataflow.llm.spec import ModelSpec
from dataflow.llm.types import Request, Response


class TransformersBackend:
    def __init__(self, path: Path, spec: ModelSpec):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        # Quiet in every build log: the client logs the load time, and `past_key_values=` is the keyword every
        # transformers version this backend supports takes (5.x warns that it will become `cache=`).
        transformers_logging.disable_progress_bar()
        warnings.filterwarnings("ignore", message="`past_key_values` is deprecated", category=FutureWarning)
        self.torch = torch
        self.threads = spec.option("threads", default_threads())
        torch.set_num_threads(self.threads)
        self.device = spec.option("device", "cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = spec.option("batch_size", 32)
        self.chunk_size = spec.option("chunk", 8 * self.batch_size)
        dtype = spec.option("dtype", "float32")
        dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        context_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 30)
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(eos)
        vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.sampler = Sampler(torch, self.tokenizer, eos, vocab_size, context_length, self.device)

    # -- client interface ------------------------------------------------------------------
    def encode(self, request: Request) -> list[int]:
        return encode(self.tokenizer, request)

    def prepare(self, node: str, requests: list[Request], labels: list[str]) -> None:
        """Fail before the first batch if a JSON schema does not compile or a prompt does not fit
        the model context."""
        self.sampler.check(node, requests, labels, [len(self.encode(r)) for r in requests])

    def generate(self, requests: list[Request], finished: Report | None = None) -> list[Response]:
        """Responses in request order; ``finished(i, response)`` as soon as request i is done."""
        prompts = [self.encode(r) for r in requests]
        with self.torch.inference_mode():
            return decode(_Batch(self), self.sampler, prompts, [r.sampling for r in requests], self.batch_size,
                          finished)


class _Batch:
    """The live rows of one ``decode`` loop: their KV cache, attention mask (left padding) and positions."""

    def __init__(self, backend: TransformersBackend):
        self.backend, self.torch = backend, backend.torch
        self.cache = self.mask = self.positions = None

    def admit(self, prompts: list[list[int]], copies: list[int]):
        torch, device = self.torch, self.backend.device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.backend.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        from transformers import DynamicCache

        cache = DynamicCache()
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.backend.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                    past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :].float()
        rows = torch.repeat_interleave(torch.arange(len(prompts), device=device), torch.tensor(copies, device=device))
        if len(rows) != len(prompts):
            cache.batch_select_indices(rows)
        self._merge(cache, mask[rows], mask[rows].sum(-1))
        return logits[rows]

    def step(self, tokens: list[int]):
        torch = self.torch
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(tokens), 1))], dim=1)
        pending = torch.tensor(tokens, device=self.mask.device)
        logits = self.backend.model(input_ids=pending[:, None], attention_mask=self.mask,
                                    position_ids=self.positions[:, None], past_key_values=self.cache,
                                    use_cache=True).logits
        self.positions = self.positions + 1
        return logits[:, -1, :].float()

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows``, then drop leading cache columns that are padding for every row."""
        if not rows:
            self.cache = self.mask = self.positions = None
            return
        index = self.torch.tensor(rows, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.positions = self.mask[index], self.positions[index]
        start = int(self.mask.any(0).long().argmax())
        if start > 0:
            self.mask = self.mask[:, start:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]

    def _merge(self, cache, mask, positions) -> None:
        """Append new rows, the shorter side left-padded to the longer cache."""
        if self.cache is None:
            self.cache, self.mask, self.positions = cache, mask, positions
            return
        torch = self.torch
        width = max(self.mask.shape[1], mask.shape[1])

        def pad(tensor, dim_from_end: int):
            missing = width - tensor.shape[-dim_from_end]
            if missing == 0:
                return tensor
            shape = list(tensor.shape)
            shape[-dim_from_end] = missing
            return torch.cat([tensor.new_zeros(shape), tensor], dim=tensor.dim() - dim_from_end)

        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)])
            mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)])
        self.mask = torch.cat([pad(self.mask, 1), pad(mask, 1)])
        self.positions = torch.cat([self.positions, positions])


OPTIONS = frozenset({"threads", "batch_size", "device", "dtype", "chunk"})
MISSING = "the transformers backend is not installed: pip install 'dataflow[llm]'"


def _installed() -> list[str]:
    return [] if importlib.util.find_spec("transformers") else [MISSING]


def _local_problems(spec: ModelSpec) -> list[str]:
    from dataflow.llm.convert import default_gguf, default_model_dir, is_converted

    if is_converted(default_model_dir()):
        return _installed()
    try:
        default_gguf()
    except DataflowError as exc:
        return _installed() + [str(exc)]
    return _installed()


def _local_identity(spec: ModelSpec) -> str:
    from dataflow.llm.convert import CONVERSION_VERSION, DEFAULT_NAME, default_gguf

    gguf = default_gguf()
    return with_identity_options(f"transformers:{DEFAULT_NAME}:gguf-{file_digest(gguf)}:conv{CONVERSION_VERSION}",
                                 spec)


def _local_dir(spec: ModelSpec) -> Path:
    from dataflow.llm.convert import ensure_default_model

    return ensure_default_model(lambda text: print(text, file=sys.stderr))


def _open_local(spec: ModelSpec) -> TransformersBackend:
    return TransformersBackend(_local_dir(spec), spec)


register_backend("local", _open_local, _local_identity, options=OPTIONS, read_target=no_target,
                 problems=_local_problems, model_dir=_local_dir)
register_backend("hf", lambda spec: TransformersBackend(Path(spec.target), spec),
                 lambda spec: model_dir_identity("transformers", spec), options=OPTIONS, read_target=path_target,
                 problems=lambda spec: _installed() + model_dir_problems(spec),
                 model_dir=lambda spec: Path(spec.target))
