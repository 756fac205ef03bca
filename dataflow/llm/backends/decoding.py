"""What the in-process backends share: continuous batching, seeded sampling and finishing.

A backend supplies an :class:`Engine` (its model's forward pass over live rows); :func:`decode`
runs the loop. Every sequence has its own seeded generator (sample k of a request is reproducible
whatever else is in the batch), a request's ``n`` samples share one prefill of the prompt, finished
sequences leave the batch at once and new prompts join as slots free up, so the batch stays full.
Prompts are fed longest first, so batches hold prompts of similar length. A request with a JSON
schema has its own grammar matcher: each step masks the tokens the schema does not allow before
sampling (``dataflow.llm.constrained``), so its output always matches.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from dataflow.errors import DataflowError
from dataflow.llm.constrained import Grammars, allowed_tokens
from dataflow.llm.types import Completion, Request, Response, Sampling, sample_seed

Report = Callable[[int, Response], None]


def default_threads() -> int:
    """Compute threads: ``$DATAFLOW_TORCH_THREADS``, else the cores this process may use minus the
    cores other processes keep busy (a descheduled thread stalls the whole step)."""
    if os.environ.get("DATAFLOW_TORCH_THREADS"):
        return max(1, int(os.environ["DATAFLOW_TORCH_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = int(os.getloadavg()[0] + 0.3) if hasattr(os, "getloadavg") else 0
    return max(1, min(cores, cores - busy))


def encode(tokenizer, request: Request) -> list[int]:
    """The prompt tokens of a request: its raw prompt, or its turns through the chat template."""
    if request.prompt is not None:
        return tokenizer.encode(request.prompt, add_special_tokens=False)
    ids = tokenizer.apply_chat_template(request.chat(), tokenize=True, **request.template_args())
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@dataclass
class Sequence:
    """One sample being generated."""

    request: int
    sample: int
    generator: object
    sampling: Sampling
    max_new: int
    matcher: object | None = None  # the grammar matcher of a request with a JSON schema
    tokens: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # with logprobs asked: each token's text
    top: list[dict[str, float]] = field(default_factory=list)  # ... and the most likely texts


class Engine(Protocol):
    """A backend's model over the live rows of one :func:`decode` loop (row order = sequence order)."""

    def admit(self, prompts: list[list[int]], copies: list[int]):
        """Prefill ``prompts``, each as ``copies`` new rows appended after the live ones; their next-token logits."""

    def step(self, tokens: list[int]):
        """Feed each live row its last token; the next-token logits of every live row."""

    def keep(self, rows: list[int]) -> None:
        """Drop every live row not in ``rows``."""


class Sampler:
    """Sampling and finishing for one tokenizer (torch tensors of logits, on any device)."""

    def __init__(self, torch, tokenizer, eos: set[int], vocab_size: int, context_length: int, device: str = "cpu"):
        self.torch, self.tokenizer, self.eos, self.vocab_size = torch, tokenizer, eos, vocab_size
        self.context_length, self.device = context_length, device
        self.grammars = Grammars(tokenizer, vocab_size)
        self._texts: dict[int, str] = {}

    def check(self, node: str, requests: list[Request], labels: list[str], prompt_lengths: list[int]) -> None:
        """Fail before the first batch if a JSON schema does not compile or a prompt does not fit the context."""
        for schema in {r.sampling.json_schema for r in requests} - {None}:
            try:
                self.grammars.grammar(schema)
            except DataflowError as exc:
                raise DataflowError(f"node '{node}': {exc}. Fix the schema (a JSON schema, draft 2020-12).") from None
        too_long = [(label, n) for label, n in zip(labels, prompt_lengths) if n >= self.context_length]
        if too_long:
            label, n = too_long[0]
            raise DataflowError(
                f"node '{node}': {len(too_long)} prompt(s) are longer than the model context "
                f"({self.context_length} tokens), e.g. row id={label} has {n} prompt tokens. Shorten or filter "
                f"those rows before this step (e.g. node.filter(pl.col(...).str.len_chars() < ...)), "
                f"or use a model with a longer context.")

    def max_new(self, sampling: Sampling, prompt_length: int) -> int:
        """The most tokens a sample may generate: ``max_tokens``, within the model context."""
        return max(1, min(sampling.max_tokens, self.context_length - prompt_length))

    def sequences(self, request: int, sampling: Sampling, prompt_length: int) -> list[Sequence]:
        """The ``n`` sequences of a request, each with its seeded generator (and matcher)."""
        generator = self.torch.Generator
        return [Sequence(request, k, generator(device=self.device).manual_seed(sample_seed(sampling.seed, k)),
                         sampling, self.max_new(sampling, prompt_length),
                         self.grammars.matcher(sampling.json_schema) if sampling.json_schema else None)
                for k in range(sampling.n)]

    def advance(self, sequences: list[Sequence], logits) -> None:
        """Append each sequence's next token: masked by its grammar, sampled, its log-probabilities kept
        where asked, and consumed by its grammar."""
        logits = self._constrain(logits, sequences)
        chosen = self._sample(logits, sequences).tolist()
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
            seq.tokens.append(token)
            if seq.matcher is not None:
                seq.matcher.consume_token(token)

    def _constrain(self, logits, sequences: list[Sequence]):
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

    def _sample(self, logits, sequences: list[Sequence]):
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

    def completion(self, seq: Sequence) -> Completion | None:
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

    def _completed(self, seq: Sequence, kept: int, reason: str, text: str | None = None) -> Completion:
        """The completion of the first ``kept`` tokens of ``seq``."""
        if text is None:
            text = self.tokenizer.decode(seq.tokens[:kept], skip_special_tokens=True)
        if not seq.sampling.logprobs:
            return Completion(text, reason, kept)
        return Completion(text, reason, kept, seq.texts[:kept], seq.top[:kept])


def decode(engine: Engine, sampler: Sampler, prompts: list[list[int]], samplings: list[Sampling], batch_size: int,
           report: Report | None = None) -> list[Response]:
    """Responses in request order, by continuous batching of up to ``batch_size`` live sequences;
    ``report(i, response)`` as soon as request i is done."""
    out: list[list[Completion | None]] = [[None] * s.n for s in samplings]
    pending = deque(sorted(range(len(prompts)), key=lambda i: -len(prompts[i])))
    live: list[Sequence] = []
    refill_at = max(1, batch_size // 4)

    def finish() -> None:
        nonlocal live
        keep = []
        for row, seq in enumerate(live):
            done = sampler.completion(seq)
            if done is None:
                keep.append(row)
                continue
            out[seq.request][seq.sample] = done
            if report and None not in out[seq.request]:
                report(seq.request, Response(out[seq.request], len(prompts[seq.request])))
        if len(keep) < len(live):
            engine.keep(keep)
            live = [live[row] for row in keep]

    while pending or live:
        if pending and (not live or batch_size - len(live) >= refill_at):
            admitted, room = [], batch_size - len(live)
            while pending and (samplings[pending[0]].n <= room or not admitted and not live):
                room -= samplings[pending[0]].n
                admitted.append(pending.popleft())
            if admitted:
                new = [seq for i in admitted for seq in sampler.sequences(i, samplings[i], len(prompts[i]))]
                logits = engine.admit([prompts[i] for i in admitted], [samplings[i].n for i in admitted])
                sampler.advance(new, logits)
                live += new
                finish()
                continue
        sampler.advance(live, engine.step([seq.tokens[-1] for seq in live]))
        finish()
    return [Response(out[i], len(prompts[i])) for i in range(len(prompts))]  # type: ignore[arg-type]
