"""CPU throughput of the default model (SmolLM2-135M-Instruct): dataflow's backends (transformers,
``local``; llama.cpp, ``llamacpp``) at several batch sizes beside llama.cpp used directly
(llama-cpp-python) on the same GGUF, in the same run, interleaved, with the same prompt tokens, thread
count and sampling (temperature 0.7, seeded); also the transformers path with int8 weights (torch's
dynamic quantization of every Linear layer: measured, not offered, see ``INT8_VERDICT``) and the model
load time.

    python benchmarks/llm_throughput.py [--runs 3] [--prompts 32] [--max-tokens 128] [--batch-sizes 1,32]

Every engine stops a sequence at end-of-sequence or after max tokens; tokens/s counts the tokens
actually generated over the wall time of the whole set (prefill included).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from llm_results import ROOT, chat_prompts, median
from results import load, run_facts, write_section

LOAD_SNIPPET = """
import time
started = time.perf_counter()
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
imported = time.perf_counter()
from dataflow.llm import open_backend
open_backend("local")
print(imported - started, time.perf_counter() - imported)
"""


def load_seconds(runs: int) -> list[tuple[float, float]]:
    """(import torch + transformers, model load) in fresh processes, after the one-time conversion."""
    out = []
    for _ in range(runs):
        result = subprocess.run([sys.executable, "-c", LOAD_SNIPPET], capture_output=True, text=True, check=True)
        imports, model = result.stdout.strip().splitlines()[-1].split()
        out.append((float(imports), float(model)))
    return out


def dataflow_run(backend, prompts: list[str], batch_size: int, max_tokens: int,
                 refill: bool = True) -> tuple[int, float]:
    """Generate for all prompts; without ``refill``, in static batches that each drain fully
    before the next starts (what plain ``generate()`` batching does)."""
    from dataflow.llm.types import Request, Sampling

    backend.batch_size = batch_size
    requests = [Request((("user", q),), Sampling(temperature=0.7, max_tokens=max_tokens, seed=i))
                for i, q in enumerate(prompts)]
    groups = [requests] if refill else [requests[i:i + batch_size] for i in range(0, len(requests), batch_size)]
    started = time.perf_counter()
    responses = [r for group in groups for r in backend.generate(group)]
    seconds = time.perf_counter() - started
    return sum(c.tokens_out for r in responses for c in r.completions), seconds


class LlamaCpp:
    """llama.cpp through llama-cpp-python: one sequence at a time (high-level API) or all
    sequences in parallel in one context (low-level batch API, as llama.cpp's `batched` example)."""

    def __init__(self, gguf: str, threads: int, max_sequences: int, context: int):
        import llama_cpp as L

        self.L, self.threads = L, threads
        self.single = L.Llama(model_path=gguf, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                              verbose=False, seed=0)
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(gguf.encode(), L.llama_model_default_params())
        self.vocab = L.llama_model_get_vocab(self.model)
        params = L.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = context, 2048, 512
        params.n_seq_max, params.kv_unified = max_sequences, True
        params.n_threads = params.n_threads_batch = threads
        self.ctx = L.llama_init_from_model(self.model, params)
        self.batch = L.llama_batch_init(2048, 0, max_sequences)

    def run_single(self, prompts: list[list[int]], max_tokens: int) -> tuple[int, float]:
        started, tokens = time.perf_counter(), 0
        for i, ids in enumerate(prompts):
            out = self.single.create_completion(ids, max_tokens=max_tokens, temperature=0.7, top_p=1.0, top_k=0,
                                                min_p=0.0, repeat_penalty=1.0, seed=i)
            tokens += out["usage"]["completion_tokens"]
        return tokens, time.perf_counter() - started

    def _add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        b, i = self.batch, self.batch.n_tokens
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
        b.seq_id[i][0] = seq
        b.n_tokens += 1
        return i

    def _decode(self) -> None:
        if self.L.llama_decode(self.ctx, self.batch) != 0:
            raise RuntimeError("llama_decode failed")

    def run_parallel(self, prompts: list[list[int]], max_tokens: int) -> tuple[int, float]:
        L = self.L
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
        samplers = []
        for i in range(len(prompts)):
            chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(0.7))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(i))
            samplers.append(chain)
        started = time.perf_counter()
        last, pos, produced, active = {}, {}, {}, set()
        group: list[int] = []

        def prefill(seqs: list[int]) -> None:
            self.batch.n_tokens = 0
            where = {}
            for s in seqs:
                for j, token in enumerate(prompts[s]):
                    where[s] = self._add(token, j, s, j == len(prompts[s]) - 1)
            self._decode()
            for s in seqs:
                last[s] = L.llama_sampler_sample(samplers[s], self.ctx, where[s])
                pos[s], produced[s] = len(prompts[s]), 1
                active.add(s)

        size = 0
        for s, ids in enumerate(prompts):  # prefill in batches of up to 2,048 tokens
            if size + len(ids) > 2048:
                prefill(group)
                group, size = [], 0
            group.append(s)
            size += len(ids)
        prefill(group)
        tokens = 0
        while active:
            for s in list(active):
                if L.llama_vocab_is_eog(self.vocab, last[s]) or produced[s] >= max_tokens:
                    tokens += produced[s] - (1 if L.llama_vocab_is_eog(self.vocab, last[s]) else 0)
                    active.discard(s)
            if not active:
                break
            self.batch.n_tokens = 0
            where = {s: self._add(last[s], pos[s], s, True) for s in sorted(active)}
            self._decode()
            for s, i in where.items():
                last[s] = L.llama_sampler_sample(samplers[s], self.ctx, i)
                pos[s] += 1
                produced[s] += 1
        seconds = time.perf_counter() - started
        for chain in samplers:
            L.llama_sampler_free(chain)
        return tokens, seconds


INT8_VERDICT = ("int8 weights (torch's dynamic per-tensor quantization of every Linear layer) are fast but ruin this "
                "135M model: asked greedily 'What is the capital of France?' it answers 'France, a land of the mind. "
                "The land of the mind, ...' and 'Name three colors.' gives 'Thesaurus: 1. 1.1.1.1...', where float32 "
                "says 'The capital of France is Paris.' and '1. Red 2. Blue 3. Green' (checked 2026-12-02), and it "
                "stops early (fewer tokens above). So dataflow does not offer it.")


def int8_backend(threads: int):
    """The transformers backend with int8 weights (a measured option, not offered: see ``INT8_VERDICT``)."""
    import torch

    from dataflow.llm import open_backend

    backend = open_backend(f"local?threads={threads}")
    backend.model = torch.ao.quantization.quantize_dynamic(backend.model, {torch.nn.Linear}, dtype=torch.qint8)
    return backend


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--single-prompts", type=int, default=4, help="prompts for the one-sequence runs")
    parser.add_argument("--print", action="store_true", help="print the section; leave RESULTS.md as it is")
    args = parser.parse_args()

    from dataflow.llm import open_backend
    from dataflow.llm.backends.decoding import default_threads
    from dataflow.llm.convert import default_gguf, ensure_default_model

    ensure_default_model()
    threads = default_threads()
    load_before = load()
    loads = load_seconds(args.runs)
    backends = {"dataflow transformers (local)": open_backend(f"local?threads={threads}"),
                "dataflow transformers, int8 weights (measured, not offered)": int8_backend(threads),
                "dataflow llama.cpp (llamacpp)": open_backend(f"llamacpp?threads={threads}")}
    backend = backends["dataflow transformers (local)"]
    prompts = chat_prompts(args.prompts)
    from dataflow.llm.types import Request

    token_ids = [backend.encode(Request((("user", q),))) for q in prompts]
    context = sum(len(t) for t in token_ids) + len(prompts) * args.max_tokens + 256
    llama = LlamaCpp(str(default_gguf()), threads, len(prompts), context)
    rows = []  # (engine, batch, prompts, tokens, seconds list)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    for _ in range(args.runs):  # interleaved, so a change in machine load hits every engine alike
        for bs in sizes:
            subset = prompts[:args.single_prompts] if bs == 1 else prompts
            for name, engine in backends.items():
                rows.append((name, bs, len(subset), *dataflow_run(engine, subset, bs, args.max_tokens)))
            if 1 < bs < len(prompts):
                rows.append(("dataflow transformers, static batches (no refill)", bs, len(subset),
                             *dataflow_run(backend, subset, bs, args.max_tokens, refill=False)))
        rows.append(("llama.cpp, one sequence", 1, args.single_prompts,
                     *llama.run_single(token_ids[:args.single_prompts], args.max_tokens)))
        rows.append(("llama.cpp, parallel sequences", len(prompts), len(prompts),
                     *llama.run_parallel(token_ids, args.max_tokens)))
        print(rows, flush=True)
    table: dict[tuple, list] = {}
    for engine, bs, n, tokens, seconds in rows:
        table.setdefault((engine, bs, n), []).append((tokens, seconds))
    best_llama = max(median([t / s for t, s in v]) for k, v in table.items() if k[0].startswith("llama"))
    lines = run_facts() + [
        f"- threads: {threads} (dataflow's default pick; the same for llama.cpp); load before: {load_before}, "
        f"after: {load()}",
        f"- {args.prompts} chat prompts (quickstart instructions), up to {args.max_tokens} new tokens, "
        f"temperature 0.7, seeded; one-sequence runs use the first {args.single_prompts} prompts; medians of "
        f"{args.runs} runs",
        f"- model load after conversion (fresh process, `open_backend('local')`: tokenizer + weights + identity "
        f"hash): median {median([m for _, m in loads]):.2f} s (runs: {', '.join(f'{m:.2f}' for _, m in loads)}); "
        f"target < 5 s. Importing torch + transformers before it: median {median([i for i, _ in loads]):.2f} s",
        "- targets: >= 1.0x llama.cpp's best at batch 32, >= 0.6x llama.cpp's one sequence at batch 1",
        "", "| engine | batch | prompts | tokens | median s | median tok/s | vs best llama.cpp | vs llama.cpp, "
        "same batch |", "|---|---|---|---|---|---|---|---|"]
    rates = {key: median([t / s for t, s in values]) for key, values in table.items()}
    same_batch = {1: rates[("llama.cpp, one sequence", 1, args.single_prompts)],
                  len(prompts): rates[("llama.cpp, parallel sequences", len(prompts), len(prompts))]}
    for (engine, bs, n), values in table.items():
        rate = rates[(engine, bs, n)]
        versus = f"{rate / same_batch[bs]:.2f}x" if bs in same_batch else "-"
        lines.append(f"| {engine} | {bs} | {n} | {median([t for t, _ in values]):.0f} | "
                     f"{median([s for _, s in values]):.1f} | {rate:.1f} | {rate / best_llama:.2f}x | {versus} |")
    lines += ["", "The paths: `local` runs transformers on the converted float32 weights (the weights `dataflow train` "
              "fine-tunes); `llamacpp` runs llama.cpp on the packaged Q4_1 GGUF as shipped, through dataflow's "
              "decode loop (continuous batching, seeded sampling and constrained decoding shared with `local`), "
              "with its own KV cells per sequence and flash attention on; 'llama.cpp' rows use llama-cpp-python "
              "directly: one sequence through `Llama.create_completion`, and all sequences in one context as "
              "llama.cpp's `batched` example does (unified KV cache, default context settings, llama.cpp's own "
              "samplers). The two backends' outputs differ (llama.cpp computes with quantized activations): "
              "each is deterministic per seed, and the request cache keeps them apart (the model identity "
              "names the engine).", "", INT8_VERDICT]
    write_section("llm-throughput", "llm-throughput: default model on CPU, dataflow vs llama.cpp",
                  "\n".join(lines), record=not args.print)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "benchmarks"))
    main()
