"""The vLLM backend (GPU): offline ``LLM.generate`` over the whole node in large chunks.

Each chunk (default 4,096 requests) is one ``generate`` call, so vLLM schedules it with
continuous batching and keeps the GPU full; prefix caching is on, and a request's ``n`` samples
come from one ``SamplingParams(n=..., seed=...)``. The client stores every finished chunk in the
request cache, so a crash loses at most the chunk in flight.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from dataflow.errors import DataflowError
from dataflow.llm.backends.registry import model_dir_identity, model_dir_problems, path_target, register_backend
from dataflow.llm.spec import ModelSpec
from dataflow.llm.types import Completion, Request, Response, Sampling


class VLLMBackend:
    def __init__(self, path: Path, spec: ModelSpec):
        from vllm import LLM

        self.chunk_size = spec.option("chunk", 4096)
        options = {"enable_prefix_caching": True, "dtype": spec.option("dtype", "auto"),
                   "gpu_memory_utilization": spec.option("gpu_memory_utilization", 0.9),
                   "tensor_parallel_size": spec.option("tensor_parallel_size", 1)}
        if "max_model_len" in spec.options:
            options["max_model_len"] = spec.option("max_model_len", 0)
        self.llm = LLM(model=str(path), **options)
        self.tokenizer = self.llm.get_tokenizer()
        config = getattr(self.llm, "model_config", None) or self.llm.llm_engine.model_config
        self.context_length = config.max_model_len

    def encode(self, request: Request) -> list[int]:
        if request.prompt is not None:
            return self.tokenizer.encode(request.prompt, add_special_tokens=False)
        ids = self.tokenizer.apply_chat_template(request.chat(), tokenize=True, **request.template_args())
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def prepare(self, node: str, requests: list[Request], labels: list[str]) -> None:
        for label, request in zip(labels, requests):
            if (n := len(self.encode(request))) >= self.context_length:
                raise DataflowError(
                    f"node '{node}': row id={label} has {n} prompt tokens, more than the model context "
                    f"({self.context_length}); shorten or filter such rows before this step, or raise "
                    f"max_model_len in the spec if the model allows it")

    def generate(self, requests: list[Request]) -> list[Response]:
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=self.encode(r)) for r in requests]
        params = [self.sampling_params(r.sampling) for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        responses = []
        for output, request in zip(outputs, requests):
            completions = [Completion(c.text, "length" if c.finish_reason == "length" else "stop", len(c.token_ids),
                                      *_logprobs(c, request.sampling.logprobs))
                           for c in sorted(output.outputs, key=lambda c: c.index)]
            responses.append(Response(completions, len(output.prompt_token_ids)))
        return responses

    @staticmethod
    def sampling_params(s: Sampling):
        from vllm import SamplingParams

        options = dict(n=s.n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                       stop=list(s.stop) or None, seed=s.seed, logprobs=s.logprobs or None)
        if s.json_schema:
            schema = json.loads(s.json_schema)
            try:  # vLLM >= 0.12
                from vllm.sampling_params import StructuredOutputsParams

                options["structured_outputs"] = StructuredOutputsParams(json=schema)
            except ImportError:
                from vllm.sampling_params import GuidedDecodingParams

                options["guided_decoding"] = GuidedDecodingParams(json=schema)
        return SamplingParams(**options)


def _logprobs(output, k: int) -> tuple[list[str] | None, list[dict[str, float]] | None]:
    """Token texts and the ``k`` most likely texts per position of a vLLM completion output."""
    if not k or not output.logprobs:
        return None, None
    tokens, top = [], []
    for token, position in zip(output.token_ids, output.logprobs):
        tokens.append(position[token].decoded_token if token in position else "")
        best = sorted(position.values(), key=lambda p: -p.logprob)[:k]
        top.append({p.decoded_token: p.logprob for p in best})
    return tokens, top


MISSING = ("vLLM is not installed: pip install 'dataflow[vllm]' on a GPU machine, or use model='hf:PATH' to run "
           "the same model on transformers")


def _problems(spec: ModelSpec) -> list[str]:
    return model_dir_problems(spec) + ([] if importlib.util.find_spec("vllm") else [MISSING])


register_backend("vllm", lambda spec: VLLMBackend(Path(spec.target), spec),
                 lambda spec: model_dir_identity("vllm", spec),
                 options=frozenset({"dtype", "chunk", "gpu_memory_utilization", "tensor_parallel_size", "max_model_len"}),
                 read_target=path_target, problems=_problems, model_dir=lambda spec: Path(spec.target))
