"""The llama.cpp backend (CPU): GGUF weights run by llama.cpp (``llama-cpp-python``), with the same
continuous batching, seeded sampling and constrained decoding as the transformers backend
(``decoding.decode``).

- ``llamacpp``: the packaged default model's GGUF (SmolLM2-135M-Instruct, Q4_1) as shipped.
- ``llamacpp:PATH.gguf``: another GGUF file; its tokenizer is read from the file (or ``tokenizer=DIR``).

All live sequences share one llama.cpp context: each is a sequence id with its own KV cells
(``context`` of them, so attention reads only its own), the ``n`` samples of a request get copies of
the prompt's cells after one prefill (``llama_memory_seq_cp``), and one ``llama_decode`` per step
feeds every live sequence its last token. Prompts are tokenized by the model's Hugging Face
tokenizer and chat template, as on transformers. The weights stay quantized, so this is the fast CPU
path for generation; training needs Hugging Face weights (``local`` / ``hf:``).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np

from dataflow.errors import DataflowError
from dataflow.filehash import file_digest
from dataflow.llm.backends.decoding import Report, Sampler, decode, default_threads, encode
from dataflow.llm.backends.registry import register_backend, with_identity_options
from dataflow.llm.spec import ModelSpec, SpecError
from dataflow.llm.types import Request, Response

OPTIONS = frozenset({"threads", "batch_size", "context", "chunk", "tokenizer"})
MISSING = "the llama.cpp backend is not installed: pip install 'dataflow[llamacpp]' (builds llama.cpp: minutes)"
BATCH_TOKENS = 2048  # tokens per llama_decode call during prefill
MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ: the sequences one context can hold
FLASH_ATTENTION = 1  # LLAMA_FLASH_ATTN_TYPE_ENABLED: 1.3-1.7x the tokens/s of off at batch 32 here (2026-12-02)


class LlamaCppBackend:
    def __init__(self, gguf: Path, tokenizer_dir: Path | None, spec: ModelSpec):
        import llama_cpp as L
        import torch
        from transformers import AutoTokenizer

        L.llama_log_set(_quiet_log(), None)  # llama.cpp's load and context logs, in every build log otherwise
        self.L = L
        self.threads = spec.option("threads", default_threads())
        self.batch_size = spec.option("batch_size", 32)
        self.chunk_size = spec.option("chunk", 8 * self.batch_size)
        self.context = spec.option("context", 1024)  # KV cells of each sequence (prompt and output)
        L.llama_backend_init()
        params = L.llama_model_default_params()
        params.use_extra_bufts = not _has_amx()
        self.model = L.llama_model_load_from_file(str(gguf).encode(), params)
        if not self.model:
            raise DataflowError(f"llama.cpp could not load {gguf}: is it a GGUF model file?")
        weakref.finalize(self, L.llama_model_free, self.model)  # when unloaded, or at exit (before the library goes)
        self.vocab = L.llama_model_get_vocab(self.model)
        vocab_size = L.llama_vocab_n_tokens(self.vocab)
        self.tokenizer = (AutoTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir
                          else AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))
        eos = {t for t in range(vocab_size) if L.llama_vocab_is_eog(self.vocab, t)}
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        torch.set_num_threads(self.threads)
        self.sampler = Sampler(torch, self.tokenizer, eos, vocab_size, L.llama_model_n_ctx_train(self.model))
        self.ctx, self.sequences = None, 0

    def encode(self, request: Request) -> list[int]:
        return encode(self.tokenizer, request)

    def prepare(self, node: str, requests: list[Request], labels: list[str]) -> None:
        """Fail before the first batch if a schema does not compile, a prompt does not fit the model
        context, or a request's prompt and output do not fit the KV cells of one sequence (``context``)."""
        lengths = [len(self.encode(r)) for r in requests]
        self.sampler.check(node, requests, labels, lengths)
        if (most := max((r.sampling.n for r in requests), default=1)) > MAX_SEQUENCES:
            raise DataflowError(f"node '{node}': {most} samples of one prompt, more than the {MAX_SEQUENCES} "
                                f"sequences a llama.cpp context holds; ask for at most {MAX_SEQUENCES} (or use another "
                                f"backend)")
        for label, r, length in zip(labels, requests, lengths):
            need = length + self.sampler.max_new(r.sampling, length)
            if need > self.context:
                raise DataflowError(f"node '{node}': row id={label} needs {need} tokens of context ({length} "
                                    f"prompt tokens and up to {r.sampling.max_tokens} new ones), more than the "
                                    f"{self.context} each llama.cpp sequence has; raise it (e.g. "
                                    f"llamacpp?context={1 << need.bit_length()}) or lower max_tokens")

    def generate(self, requests: list[Request], finished: Report | None = None) -> list[Response]:
        """Responses in request order; ``finished(i, response)`` as soon as request i is done."""
        prompts = [self.encode(r) for r in requests]
        self._context(max([self.batch_size] + [r.sampling.n for r in requests]))
        return decode(_Sequences(self), self.sampler, prompts, [r.sampling for r in requests], self.batch_size,
                      finished)

    def _context(self, sequences: int) -> None:
        """A llama.cpp context for up to ``sequences`` live sequences (made anew only when more are needed)."""
        L = self.L
        if self.ctx is not None and self.sequences >= sequences:
            L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
            return
        if self.ctx is not None:
            self._release_context()
        params = L.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = self.context * sequences, BATCH_TOKENS, 512
        params.n_seq_max, params.kv_unified, params.flash_attn_type = sequences, False, FLASH_ATTENTION
        params.n_threads = params.n_threads_batch = self.threads
        self.ctx = L.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise DataflowError(f"llama.cpp could not make a context of {self.context} tokens for each of "
                                f"{sequences} sequences (out of memory?); lower llamacpp?context= or batch_size=")
        self.batch = L.llama_batch_init(max(BATCH_TOKENS, sequences), 0, 1)
        self.sequences = sequences
        self._release_context = weakref.finalize(self, _free_context, L, self.ctx, self.batch)


class _Sequences:
    """The live rows of one ``decode`` loop as llama.cpp sequence ids, each with its own KV cells; a request's
    copies get the cells of its prompt, prefilled once."""

    def __init__(self, backend: LlamaCppBackend):
        self.b, self.L = backend, backend.L
        self.memory = self.L.llama_get_memory(backend.ctx)
        self.free = list(range(backend.sequences - 1, -1, -1))
        self.rows: list[int] = []  # the sequence id of each live row
        self.position: dict[int, int] = {}

    def admit(self, prompts: list[list[int]], copies: list[int]):
        first = [self.free.pop() for _ in prompts]
        tokens = [(token, j, seq, j == len(prompt) - 1) for prompt, seq in zip(prompts, first)
                  for j, token in enumerate(prompt)]
        logits = np.concatenate([self._decode(tokens[i:i + BATCH_TOKENS])
                                 for i in range(0, len(tokens), BATCH_TOKENS)])
        rows = []
        for row, (prompt, seq, n) in enumerate(zip(prompts, first, copies)):
            seqs = [seq] + [self.free.pop() for _ in range(n - 1)]
            for copy in seqs[1:]:
                self.L.llama_memory_seq_cp(self.memory, seq, copy, -1, -1)
            self.position.update((copy, len(prompt)) for copy in seqs)
            self.rows += seqs
            rows += [row] * n
        return self.b.sampler.torch.from_numpy(logits[rows])

    def step(self, tokens: list[int]):
        logits = self._decode([(token, self.position[seq], seq, True) for token, seq in zip(tokens, self.rows)])
        for seq in self.rows:
            self.position[seq] += 1
        return self.b.sampler.torch.from_numpy(logits)

    def keep(self, rows: list[int]) -> None:
        kept = [self.rows[r] for r in rows]
        for seq in set(self.rows) - set(kept):
            self.L.llama_memory_seq_rm(self.memory, seq, -1, -1)
            del self.position[seq]
            self.free.append(seq)
        self.rows = kept

    def _decode(self, tokens: list[tuple[int, int, int, bool]]) -> np.ndarray:
        """One ``llama_decode`` of (token, position, sequence, wants logits); a copy of the logits it outputs."""
        batch = self.b.batch
        batch.n_tokens = len(tokens)
        for i, (token, position, seq, wanted) in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, position, 1, wanted
            batch.seq_id[i][0] = seq
        code = self.L.llama_decode(self.b.ctx, batch)
        if code != 0:
            raise DataflowError(f"llama.cpp could not decode a batch (code {code}: out of KV cells?); "
                                f"raise llamacpp?context= (now {self.b.context})")
        outputs = sum(wanted for *_, wanted in tokens)
        vocab = self.b.sampler.vocab_size
        return np.ctypeslib.as_array(self.L.llama_get_logits(self.b.ctx), shape=(outputs, vocab)).copy()


def _has_amx() -> bool:
    """Whether the CPU has AMX tiles. llama.cpp's AMX matrix kernels (one of its extra CPU buffer types)
    crash there (SIGSEGV in ggml_backend_amx_mul_mat, llama-cpp-python 0.3.36 built natively on a Xeon
    VM, even through its own ``Llama`` class), so such CPUs load models without the extra buffer types."""
    try:
        return " amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _free_context(L, ctx, batch) -> None:
    L.llama_batch_free(batch)
    L.llama_free(ctx)


@functools.lru_cache(maxsize=1)
def _quiet_log():
    """A llama.cpp log callback that drops every message (made once: llama.cpp keeps calling it)."""
    import llama_cpp

    return llama_cpp.llama_log_callback(lambda level, text, data: None)


def _installed() -> list[str]:
    return [] if importlib.util.find_spec("llama_cpp") else [MISSING]


def _gguf(spec: ModelSpec) -> Path:
    from dataflow.llm.convert import default_gguf

    return Path(spec.target) if spec.target else default_gguf()


def _read_target(spec: ModelSpec) -> ModelSpec:
    if spec.model:
        raise SpecError(f"model spec {spec.text!r}: 'llamacpp' takes a GGUF path, not #MODEL")
    if spec.option("batch_size", 32) > MAX_SEQUENCES:
        raise SpecError(f"model spec {spec.text!r}: batch_size is at most {MAX_SEQUENCES} on llama.cpp (the sequences "
                        f"one context holds)")
    if spec.target and not spec.target.endswith(".gguf"):
        raise SpecError(f"model spec {spec.text!r}: give a GGUF file (llamacpp:/path/model.gguf), or no path "
                        f"for the packaged default model")
    return replace(spec, target=str(Path(spec.target).expanduser())) if spec.target else spec


def _problems(spec: ModelSpec) -> list[str]:
    if spec.target and not Path(spec.target).is_file():
        return _installed() + [f"model spec {spec.text!r}: no GGUF file at {spec.target}"]
    try:
        _gguf(spec)
    except DataflowError as exc:
        return _installed() + [str(exc)]
    return _installed()


def _identity(spec: ModelSpec) -> str:
    import llama_cpp

    gguf = _gguf(spec)
    return with_identity_options(f"llama.cpp-{llama_cpp.__version__}:{gguf.name}:gguf-{file_digest(gguf)}", spec)


def _tokenizer_dir(spec: ModelSpec) -> Path | None:
    """The tokenizer's directory: ``tokenizer=``, the converted default model's, or None (read from the GGUF)."""
    if spec.options.get("tokenizer"):
        return Path(spec.options["tokenizer"]).expanduser()
    if spec.target:
        return None
    from dataflow.llm.convert import ensure_default_model

    return ensure_default_model(lambda text: print(text, file=sys.stderr))


def _open(spec: ModelSpec) -> LlamaCppBackend:
    return LlamaCppBackend(_gguf(spec), _tokenizer_dir(spec), spec)


register_backend("llamacpp", _open, _identity, options=OPTIONS, read_target=_read_target, problems=_problems,
                 model_dir=_tokenizer_dir)
