"""Shared helpers: build a pipeline into a temporary directory and read what came out."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest

from dataflow.build import BuildReport, build
from dataflow.catalog import query
from dataflow.pipeline import Pipeline
from dataflow.progress import Progress

REPO = Path(__file__).resolve().parent.parent


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

