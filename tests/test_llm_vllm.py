"""The vLLM backend on a GPU: skipped without vLLM or without a CUDA device.

It runs the converted default model (an ordinary Hugging Face directory) through ``vllm:PATH``:
n samples per request with a seed, reproducibility, and the same pipeline as on CPU.
"""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed (pip install 'dataflow[vllm]' on a GPU machine)", allow_module_level=True)
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device: the vLLM backend needs a GPU", allow_module_level=True)

from dataflow import Pipeline  # noqa: E402
from dataflow.llm.client import unload_backends  # noqa: E402
from dataflow.llm.convert import ensure_default_model  # noqa: E402
from dataflow.llm import open_backend  # noqa: E402
from dataflow.llm.types import Request, Sampling  # noqa: E402
from dataflow.operators import BestOfK  # noqa: E402


@pytest.fixture(scope="module")
def spec() -> str:
    return f"vllm:{ensure_default_model()}?gpu_memory_utilization=0.3"


def test_n_samples_are_seeded_and_reproducible(spec):
    backend = open_backend(spec)
    request = Request((("user", "Write a haiku about rain."),), Sampling(temperature=1.0, max_tokens=16, n=4, seed=3))
    first, again = backend.generate([request])[0], backend.generate([request])[0]
    assert [c.text for c in first.completions] == [c.text for c in again.completions]
    assert len({c.text for c in first.completions}) > 1 and first.tokens_in > 0


def test_best_of_k_pipeline_on_vllm(builder, spec, tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFLOW_LLM_CACHE", str(tmp_path / "cache.sqlite"))
    unload_backends()
    p = Pipeline("t")
    rows = p.from_rows([{"q": "Name a fruit."}, {"q": "Name a color."}], name="rows")
    p.output("out", rows.apply(BestOfK(prompt="{q}", model=spec, k=4, temperatures=(0.3, 1.0), max_tokens=12),
                               name="gen"))
    report = builder.build(p)
    assert builder.output("out").height == 8
    assert next(s.metrics for s in report.stats if s.name == "gen")["llm_calls"] == 4
