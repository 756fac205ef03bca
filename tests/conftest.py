"""Shared helpers: build a pipeline into a temporary directory and read what came out."""

from __future__ import annotations

import io
import os
import random
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import settings

from dataflow.build import BuildReport, build
from dataflow.catalog import query
from dataflow.operator import Context
from dataflow.pipeline import Pipeline
from dataflow.progress import Progress

REPO = Path(__file__).resolve().parent.parent
# Property tests draw the same examples on every run (CI stays reproducible); raise the counts locally
# with HYPOTHESIS_PROFILE=thorough.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class Builder:
    """Builds pipelines into one out directory and reads outputs, rejects and SQL."""

    def __init__(self, out: Path):
        self.out = out
        self.log = io.StringIO()

    def build(self, pipeline: Pipeline, rebuild: tuple[str, ...] = ()) -> BuildReport:
        return build(pipeline, self.out, Progress(self.log), rebuild)

    def output(self, name: str) -> pl.DataFrame:
        return pl.read_parquet(self.out / name / "data.parquet")

    def sql(self, text: str) -> pl.DataFrame:
        return query(self.out, text)

    def rejects(self, node: str) -> pl.DataFrame:
        return self.sql(f"select id, reason, detail, score from rejects where node = '{node}' order by id")

    @staticmethod
    def status(report: BuildReport) -> dict[str, str]:
        return {s.name: s.status for s in report.stats}


@pytest.fixture
def builder(tmp_path: Path) -> Builder:
    return Builder(tmp_path / "out")


def run(op, table: pl.DataFrame, *others: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """An operator applied directly to frames, outside a build: its output and rejects."""
    with tempfile.TemporaryDirectory() as work:
        result = op.apply(table.lazy(), *[o.lazy() for o in others], ctx=Context(node="t", workdir=Path(work)))
        output = result.output.lazy().collect()
        rejects = None if result.rejects is None else result.rejects.lazy().collect()
    return output, rejects


def shuffled(table: pl.DataFrame, seed: int) -> pl.DataFrame:
    order = list(range(table.height))
    random.Random(seed).shuffle(order)
    return table[order]


# Every example pipeline at the size the tests build it: the default where the README's main job, the benchmarks
# or other tests build the same (their model requests are then cached), small ones elsewhere. A cold request
# cache costs ~3 min of model time here, a warm one seconds.
EXAMPLES = {"quickstart.py": {}, "generate_demo.py": {}, "dpo_best_of_k.py": {}, "grpo_math.py": {},
            "post_training_recipe.py": {}, "self_instruct.py": {"target": 4, "prompts_per_round": 2},
            "evol_instruct.py": {"seeds": 2, "generations": 1}, "sales_dialogue.py": {"dialogues": 2, "turns": 1},
            "rft_math.py": {"problems": 6, "k": 2}}


@pytest.fixture(scope="session")
def example_build(tmp_path_factory):
    """``example_build("grpo_math.py", problems=4)``: the build folder of an example pipeline, built once per
    test session for each file and parameter set (each pipeline in its own folder: a build's manifest
    names its own outputs)."""
    from dataflow.build import load_pipeline

    built: dict[tuple, Path] = {}

    def example(file: str, **params) -> Path:
        key = (file, tuple(sorted(params.items())))
        if key not in built:
            out = tmp_path_factory.mktemp(Path(file).stem) / "out"
            pipeline = load_pipeline(str(REPO / "pipelines" / file), {k: str(v) for k, v in params.items()})
            build(pipeline, out, Progress(io.StringIO()))
            built[key] = out
        return built[key]

    return example
