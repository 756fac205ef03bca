"""The transformers backend (CPU or GPU): batched sampling with a continuously refilled batch.

A hand-written decode loop instead of ``generate()``: every sequence has its own seeded
generator (sample k of a request is reproducible whatever else is in the batch), a request's
``n`` samples share one prefill of the prompt (prefix sharing), finished sequences leave the
batch at once, and new prompts are prefilled and merged in (left-padded) as slots free up, so
the batch stays full. Prompts are fed longest first, so batches hold prompts of similar length.
A request with a JSON schema has its own grammar matcher: each step masks the tokens the schema
does not allow before sampling (``dataflow.llm.constrained``), so its output always matches.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dataflow.errors import DataflowError
from dataflow.filehash import file_digest
from dataflow.llm.constrained import Grammars, allowed_tokens
from dataflow.llm.backends.registry import (model_dir_identity, model_dir_problems, no_target, path_target,
                                            register_backend, with_identity_options)
from dataflow.llm.spec import ModelSpec
from dataflow.llm.types import Completion, Request, Response, Sampling, sample_seed


def default_threads() -> int:
    """Torch threads: ``$DATAFLOW_TORCH_THREADS``, else the cores this process may use minus the
    cores other processes keep busy (a descheduled torch thread stalls the whole step)."""
    if os.environ.get("DATAFLOW_TORCH_THREADS"):
        return max(1, int(os.environ["DATAFLOW_TORCH_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = int(os.getloadavg()[0] + 0.3) if hasattr(os, "getloadavg") else 0
    return max(1, min(cores, cores - busy))


@dataclass
class _Sequence:
    request: int
    sample: int
    generator: object
    sampling: Sampling
    max_new: int
    matcher: object | None = None  # the grammar matcher of a request with a JSON schema
    tokens: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # with logprobs asked: each token's text
    top: list[dict[str, float]] = field(default_factory=list)  # ... and the most likely texts


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
        dtype = getattr(torch, spec.option("dtype", "float32"))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 30)
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self.eos.add(self.tokenizer.eos_token_id)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos)
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.grammars = Grammars(self.tokenizer, self.vocab_size)
        self._texts: dict[int, str] = {}

    # -- client interface ------------------------------------------------------------------
    def encode(self, request: Request) -> list[int]:
        if request.prompt is not None:
            return self.tokenizer.encode(request.prompt, add_special_tokens=False)
        ids = self.tokenizer.apply_chat_template(request.chat(), tokenize=True, **request.template_args())
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def prepare(self, node: str, requests: list[Request], labels: list[str]) -> None:
        """Fail before the first batch if a JSON schema does not compile or a prompt does not fit
        the model context."""
        for schema in {r.sampling.json_schema for r in requests} - {None}:
            try:
                self.grammars.grammar(schema)
            except DataflowError as exc:
                raise DataflowError(f"node '{node}': {exc}. Fix the schema (a JSON schema, draft 2020-12).") from None
        too_long = [(label, n) for label, r in zip(labels, requests) if (n := len(self.encode(r))) >= self.context_length]
        if too_long:
            label, n = too_long[0]
            raise DataflowError(
                f"node '{node}': {len(too_long)} prompt(s) are longer than the model context "
                f"({self.context_length} tokens), e.g. row id={label} has {n} prompt tokens. Shorten or filter "
                f"those rows before this step (e.g. node.filter(pl.col(...).str.len_chars() < ...)), "
                f"or use a model with a longer context.")

    def generate(self, requests: list[Request],
                 finished: Callable[[int, Response], None] | None = None) -> list[Response]:
        """Responses in request order; ``finished(i, response)`` as soon as request i is done."""
        prompts = [self.encode(r) for r in requests]
        report = (lambda i, samples: finished(i, Response(samples, len(prompts[i])))) if finished else None
        with self.torch.inference_mode():
            texts = self._run(prompts, [r.sampling for r in requests], report)
        return [Response(texts[i], len(prompts[i])) for i in range(len(requests))]

    # -- the decode loop -------------------------------------------------------------------
    def _run(self, prompts: list[list[int]], samplings: list[Sampling],
             report: Callable[[int, list[Completion]], None] | None = None) -> list[list[Completion]]:
        out: list[list[Completion | None]] = [[None] * s.n for s in samplings]
        pending = deque(sorted(range(len(prompts)), key=lambda i: -len(prompts[i])))
        batch: _Batch | None = None
        refill_at = max(1, self.batch_size // 4)
        while pending or batch is not None:
            size = batch.size if batch else 0
            if pending and (size == 0 or self.batch_size - size >= refill_at):
                admitted, room = [], self.batch_size - size
                while pending and (samplings[pending[0]].n <= room or not admitted and size == 0):
                    room -= samplings[pending[0]].n
                    admitted.append(pending.popleft())
                if admitted:
                    new = self._prefill(admitted, prompts, samplings)
                    batch = new if batch is None else batch.merge(new)
                    self._finish(batch, out, report)
            if batch is None or batch.size == 0:
                batch = None
                continue
            batch.step(self._next_tokens(batch.step_logits(self.model), batch.sequences))
            self._finish(batch, out, report)
            if batch.size == 0:
                batch = None
        return out  # type: ignore[return-value]

    def _prefill(self, admitted: list[int], prompts: list[list[int]], samplings: list[Sampling]) -> _Batch:
        torch = self.torch
        width = max(len(prompts[i]) for i in admitted)
        ids = torch.full((len(admitted), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(admitted), width), dtype=torch.long)
        for row, i in enumerate(admitted):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        from transformers import DynamicCache

        cache = DynamicCache()
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                            use_cache=True, logits_to_keep=1).logits[:, -1, :].float()
        repeat = torch.tensor([samplings[i].n for i in admitted], device=self.device)
        rows = torch.repeat_interleave(torch.arange(len(admitted), device=self.device), repeat)
        if samplings[admitted[0]].n > 1 or len(rows) != len(admitted):
            cache.batch_select_indices(rows)
        sequences = []
        for i in admitted:
            s = samplings[i]
            room = self.context_length - len(prompts[i])
            for k in range(s.n):
                generator = torch.Generator(device=self.device).manual_seed(sample_seed(s.seed, k))
                matcher = self.grammars.matcher(s.json_schema) if s.json_schema else None
                sequences.append(_Sequence(i, k, generator, s, max(1, min(s.max_tokens, room)), matcher))
        batch = _Batch(self, cache, mask[rows], mask[rows].sum(-1), sequences)
        batch.step(self._next_tokens(logits[rows], sequences))
        return batch

    def _next_tokens(self, logits, sequences: list[_Sequence]):
        """Each sequence's next token: masked by its grammar, sampled, its log-probabilities kept
        where asked, and consumed by its grammar."""
        logits = self._constrain(logits, sequences)
        tokens = self._sample(logits, sequences)
        chosen = tokens.tolist()
        wanting = [row for row, seq in enumerate(sequences) if seq.sampling.logprobs]
        if wanting:
            k = max(sequences[row].sampling.logprobs for row in wanting)
            values, ids = logits[wanting].log_softmax(-1).topk(k, dim=-1)
            for row, top_values, top_ids in zip(wanting, values.tolist(), ids.tolist()):
                seq = sequences[row]
                seq.texts.append(self._text(chosen[row]))
                seq.top.append({self._text(i): v for i, v in zip(top_ids[:seq.sampling.logprobs],
                                                                 top_values[:seq.sampling.logprobs]) if v > -1e30})
        for seq, token in zip(sequences, chosen):
            if seq.matcher is not None:
                seq.matcher.consume_token(token)
        return tokens

    def _constrain(self, logits, sequences: list[_Sequence]):
        """The logits with every token a sequence's grammar forbids at -inf."""
        rows = [row for row, seq in enumerate(sequences) if seq.matcher is not None]
        if not rows:
            return logits
        allowed = np.stack([allowed_tokens(sequences[row].matcher, self.vocab_size) for row in rows])
        allowed[~allowed.any(1), min(self.eos)] = True  # a grammar with nothing left to allow ends
        index = self.torch.tensor(rows, device=logits.device)
        forbidden = ~self.torch.from_numpy(allowed).to(logits.device)
        logits = logits.clone()
        logits[index] = logits[index].masked_fill(forbidden, float("-inf"))
        return logits

    def _text(self, token: int) -> str:
        if token not in self._texts:
            self._texts[token] = self.tokenizer.decode([token])
        return self._texts[token]

    def _sample(self, logits, sequences: list[_Sequence]):
        torch = self.torch
        temps = torch.tensor([s.sampling.temperature for s in sequences], device=logits.device)
        greedy = temps == 0
        chosen = logits.argmax(-1)
        if bool(greedy.all()):
            return chosen
        scaled = logits / torch.where(greedy, 1.0, temps)[:, None]
        top_p = torch.tensor([s.sampling.top_p for s in sequences], device=logits.device)
        if bool((top_p < 1).any()):
            ordered, order = scaled.sort(-1, descending=True)
            probs = ordered.softmax(-1)
            drop = probs.cumsum(-1) - probs > top_p[:, None]
            scaled = scaled.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
        # Inverse-CDF sampling: one uniform draw per row from the row's own generator.
        cdf = scaled.softmax(-1).cumsum(-1)
        draws = torch.cat([torch.rand(1, generator=s.generator, device=logits.device) for s in sequences])
        sampled = torch.searchsorted(cdf, (draws * cdf[:, -1])[:, None]).squeeze(1).clamp(max=cdf.shape[1] - 1)
        return torch.where(greedy, chosen, sampled)

    def _finish(self, batch: _Batch, out: list[list[Completion | None]],
                report: Callable[[int, list[Completion]], None] | None) -> None:
        """Move finished sequences out of the batch into ``out``; report requests now complete."""
        keep = []
        for row, seq in enumerate(batch.sequences):
            done = self._completion(seq)
            if done is None:
                keep.append(row)
                continue
            out[seq.request][seq.sample] = done
            if report and None not in out[seq.request]:
                report(seq.request, out[seq.request])
        if len(keep) < batch.size:
            batch.select(keep)

    def _completion(self, seq: _Sequence) -> Completion | None:
        """The finished completion of ``seq``, or None while it goes on."""
        if seq.tokens[-1] in self.eos:
            return self._completed(seq, len(seq.tokens) - 1, "stop")
        if seq.matcher is not None and seq.matcher.is_stopped():  # the schema's output is complete
            return self._completed(seq, len(seq.tokens), "stop")
        if seq.sampling.stop:
            text = self.tokenizer.decode(seq.tokens, skip_special_tokens=True)
            cut = min((text.find(s) for s in seq.sampling.stop if s in text), default=-1)
            if cut >= 0:
                return self._completed(seq, len(seq.tokens), "stop", text[:cut])
        if len(seq.tokens) >= seq.max_new:
            return self._completed(seq, len(seq.tokens), "length")
        return None

    def _completed(self, seq: _Sequence, kept: int, reason: str, text: str | None = None) -> Completion:
        """The completion of the first ``kept`` tokens of ``seq``."""
        if text is None:
            text = self.tokenizer.decode(seq.tokens[:kept], skip_special_tokens=True)
        if not seq.sampling.logprobs:
            return Completion(text, reason, kept)
        return Completion(text, reason, kept, seq.texts[:kept], seq.top[:kept])


class _Batch:
    """Live sequences: their KV cache, attention mask (left padding), positions and next tokens."""

    def __init__(self, backend: TransformersBackend, cache, mask, positions, sequences: list[_Sequence]):
        self.backend, self.cache, self.mask, self.positions, self.sequences = backend, cache, mask, positions, sequences
        self.pending = None

    @property
    def size(self) -> int:
        return len(self.sequences)

    def step_logits(self, model):
        torch = self.backend.torch
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.size, 1))], dim=1)
        logits = model(input_ids=self.pending[:, None], attention_mask=self.mask,
                       position_ids=self.positions[:, None], past_key_values=self.cache, use_cache=True).logits
        self.positions = self.positions + 1
        return logits[:, -1, :].float()

    def step(self, tokens) -> None:
        self.pending = tokens
        for seq, token in zip(self.sequences, tokens.tolist()):
            seq.tokens.append(token)

    def select(self, rows: list[int]) -> None:
        """Keep only ``rows``, then drop leading cache columns that are padding for every row."""
        torch = self.backend.torch
        self.sequences = [self.sequences[r] for r in rows]
        if not rows:
            return
        index = torch.tensor(rows, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.positions, self.pending = self.mask[index], self.positions[index], self.pending[index]
        start = int(self.mask.any(0).long().argmax())
        if start > 0:
            self.mask = self.mask[:, start:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]

    def merge(self, other: _Batch) -> _Batch:
        """One batch from two, the shorter one left-padded to the longer cache."""
        torch = self.backend.torch
        width = max(self.mask.shape[1], other.mask.shape[1])

        def pad(tensor, dim_from_end: int):
            missing = width - tensor.shape[-dim_from_end]
            if missing == 0:
                return tensor
            shape = list(tensor.shape)
            shape[-dim_from_end] = missing
            return torch.cat([tensor.new_zeros(shape), tensor], dim=tensor.dim() - dim_from_end)

        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)])
            mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)])
        self.mask = torch.cat([pad(self.mask, 1), pad(other.mask, 1)])
        self.positions = torch.cat([self.positions, other.positions])
        self.pending = torch.cat([self.pending, other.pending])
        self.sequences = self.sequences + other.sequences
        return self


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
