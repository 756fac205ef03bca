"""What constrained JSON decoding costs (issue 19): tokens/s of the transformers backend on the
default model with a JSON schema against the same requests without one, interleaved in one run.

    python benchmarks/constrained.py [--runs 3] [--prompts 32] [--max-tokens 64]

The backend is called directly (no request cache). Target: constrained >= 1/1.2 of the
unconstrained rate. Why llguidance: measured once (2026-12-01) on the default tokenizer and the
judge schema, its mask takes ~7 us per step (xgrammar 0.2.9: ~4.5 us), both far below a model step,
and it needs no other package (xgrammar pulls triton and apache-tvm-ffi).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results import load, run_facts, settle, write_section  # noqa: E402

from dataflow.llm import open_backend  # noqa: E402
from dataflow.llm.types import Request, Sampling  # noqa: E402

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "role": {"enum": ["chef", "pilot", "poet", "nurse"]},
    "age": {"type": "integer", "minimum": 18, "maximum": 90},
    "skills": {"type": "array", "items": {"type": "string"}}, "city": {"type": "string"}},
    "required": ["name", "role", "age", "skills", "city"], "additionalProperties": False}


def requests(count: int, max_tokens: int, schema: str | None) -> list[Request]:
    return [Request((("user", f"Invent character {i} of a novel and describe them as JSON with name, role, age, "
                              f"skills and city."),),
                    Sampling(max_tokens=max_tokens, temperature=0.8, seed=i, json_schema=schema)) for i in range(count)]


def timed(backend, batch: list[Request]) -> tuple[float, int]:
    started = time.perf_counter()
    responses = backend.generate(batch)
    return time.perf_counter() - started, sum(c.tokens_out for r in responses for c in r.completions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    backend = open_backend("local?batch_size=32")
    modes = {"unconstrained": None, "JSON schema": json.dumps(SCHEMA)}
    timed(backend, requests(4, 8, modes["JSON schema"]))  # warm up (and compile the grammar tokenizer)
    settle()
    before = load()
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    tokens: dict[str, list[int]] = {mode: [] for mode in modes}
    for _ in range(args.runs):
        for mode, schema in modes.items():  # interleaved
            seconds, count = timed(backend, requests(args.prompts, args.max_tokens, schema))
            rates[mode].append(count / seconds)
            tokens[mode].append(count)
    ratio = statistics.median(rates["unconstrained"]) / statistics.median(rates["JSON schema"])
    lines = [*run_facts(),
             f"- default model, transformers backend, {backend.threads} thread(s), batch 32; {args.prompts} prompts, "
             f"up to {args.max_tokens} new tokens, temperature 0.8; {args.runs} interleaved runs; load before: {before}, "
             f"after: {load()}", "",
             "| mode | tokens (median) | tok/s (median) | runs tok/s |", "|---|---|---|---|",
             *[f"| {mode} | {statistics.median(tokens[mode]):.0f} | {statistics.median(rates[mode]):.1f} | "
               f"{', '.join(f'{r:.1f}' for r in rates[mode])} |" for mode in modes], "",
             f"Unconstrained / constrained tok/s: **{ratio:.2f}x** (target <= 1.2x). The mask is llguidance's, a few "
             f"microseconds per sequence and step; the rest of a step is the model."]
    write_section("constrained-decoding", "constrained-decoding: JSON-schema decoding cost on the transformers backend",
                  "\n".join(lines))


if __name__ == "__main__":
    main()
