"""Best-of-K on the default model (CPU): K samples per prompt as one request with ``n=K`` (one
prefill shared by the K sequences) vs K independent requests (K prefills), same batch size.

    python benchmarks/llm_best_of_k.py [--runs 3] [--prompts 32] [--k 4] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import sys
import time

from llm_results import ROOT, chat_prompts, median
from results import load, run_facts, write_section


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    from dataflow.llm import open_backend
    from dataflow.llm.types import Request, Sampling, sample_seed

    backend = open_backend("local?batch_size=32")
    prompts = chat_prompts(args.prompts)
    shared = [Request((("user", q),), Sampling(temperature=0.8, max_tokens=args.max_tokens, n=args.k, seed=1))
              for q in prompts]
    independent = [Request((("user", q),), Sampling(temperature=0.8, max_tokens=args.max_tokens,
                                                    seed=sample_seed(1, k)))
                   for q in prompts for k in range(args.k)]
    load_before = load()
    results: dict[str, list[tuple[int, float]]] = {"n": [], "independent": []}
    for _ in range(args.runs):
        for name, requests in (("n", shared), ("independent", independent)):
            started = time.perf_counter()
            responses = backend.generate(requests)
            seconds = time.perf_counter() - started
            results[name].append((sum(c.tokens_out for r in responses for c in r.completions), seconds))
        print(results, flush=True)
    shared_s, independent_s = (median([s for _, s in results[k]]) for k in ("n", "independent"))
    lines = run_facts() + [
        f"- default model, transformers backend, {backend.threads} thread(s), batch 32; {args.prompts} prompts x "
        f"K={args.k}, up to {args.max_tokens} new tokens, temperature 0.8; medians of {args.runs} runs; "
        f"load before: {load_before}, after: {load()}",
        "", "| mode | requests | sequences | tokens (median) | median s | tok/s |", "|---|---|---|---|---|---|",
        f"| n={args.k} per prompt | {len(shared)} | {len(shared) * args.k} | "
        f"{median([t for t, _ in results['n']]):.0f} | {shared_s:.1f} | "
        f"{median([t / s for t, s in results['n']]):.1f} |",
        f"| {args.k} independent requests | {len(independent)} | {len(independent)} | "
        f"{median([t for t, _ in results['independent']]):.0f} | {independent_s:.1f} | "
        f"{median([t / s for t, s in results['independent']]):.1f} |",
        "", f"Time ratio independent / n: **{independent_s / shared_s:.2f}x**. On CPU the shared prefill saves "
            f"only the prompt's forward pass of K-1 sequences, so the gain grows with prompt length and shrinks "
            f"with generated length; on vLLM, `n` and prefix caching do the same across the whole node."]
    write_section("llm-best-of-k", "llm-best-of-k: K samples with n (shared prefill) vs K independent requests",
                  "\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "benchmarks"))
    main()
