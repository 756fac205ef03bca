"""The `dataflow` command as a user runs it, on the quickstart pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

QUICKSTART = REPO / "pipelines" / "quickstart.py"


def dataflow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataflow.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "out"
    result = dataflow("build", str(QUICKSTART), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_quickstart_builds_and_a_second_build_does_nothing(built):
    result = dataflow("build", str(QUICKSTART), "--out", str(built))
    assert result.returncode == 0
    assert "nothing to do: all 8 nodes are cached" in result.stdout
    assert "[build]" not in result.stderr


def test_query_answers_over_nodes_outputs_rejects_and_runs(built):
    count = dataflow("query", "select count(*) as n from deduped", "--out", str(built), "--format", "json")
    assert json.loads(count.stdout) == [{"n": 270}]
    reasons = dataflow("query", "select reason, count(*) as n from rejects group by reason order by reason",
                       "--out", str(built), "--format", "csv")
    assert "duplicate,25" in reasons.stdout and "malformed_json,4" in reasons.stdout
    runs = dataflow("query", "select count(*) as n from runs where status = 'ok'", "--out", str(built),
                    "--format", "json")
    assert json.loads(runs.stdout)[0]["n"] >= 1
    train = dataflow("query", "select count(*) as n from train", "--out", str(built), "--format", "json")
    evaluation = dataflow("query", "select count(*) as n from eval", "--out", str(built), "--format", "json")
    assert json.loads(train.stdout)[0]["n"] + json.loads(evaluation.stdout)[0]["n"] == 259


def test_show_prints_schema_and_rows(built):
    result = dataflow("show", "train", "--limit", "3", "--out", str(built))
    assert result.returncode == 0
    assert "train: " in result.stdout and "messages (List(Struct" in result.stdout


def test_dry_run_says_what_changed(built):
    result = dataflow("build", str(QUICKSTART), "--out", str(built), "--dry-run", "--set", "eval_fraction=0.2")
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert lines["raw"].split()[1] == "cached"
    assert "parameter 'eval_fraction' changed (0.1 -> 0.2)" in lines["train"]
    assert "2 of 8 node(s) to build" in result.stdout


def test_user_errors_exit_nonzero_with_one_paragraph(tmp_path, built):
    bad = tmp_path / "bad.py"
    bad.write_text("import polars as pl\nfrom dataflow import Pipeline\np = Pipeline('bad')\n"
                   "src = p.from_rows([{'text': 'a'}])\np.output('o', src.filter(pl.col('txet') != ''))\n")
    result = dataflow("build", str(bad), "--out", str(tmp_path / "o"))
    assert result.returncode == 1
    assert "column 'txet' not found. Did you mean 'text'?" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "pipeline.txt").write_text(bad.read_text())
    (tmp_path / "views.py").write_text(bad.read_text().replace("src.filter(pl.col('txet') != '')", "src"
                                                                ).replace("p.output('o'", "p.output('rejects'"))
    for args in (["query", "select * from nope", "--out", str(built)], ["show", "nope", "--out", str(built)],
                 ["build", str(tmp_path / "missing.py")], ["query", "select 1", "--out", str(tmp_path / "none")],
                 ["build", str(tmp_path / "pipeline.txt")], ["build", str(tmp_path)],
                 ["query", " ", "--out", str(built)],
                 ["query", "select interval 1 day", "--out", str(built)],
                 ["show", "train", "--format", "csv", "--out", str(built)], ["clean", "--out", str(tmp_path / "none")],
                 ["build", str(tmp_path / "views.py"), "--out", str(tmp_path / "v")]):
        result = dataflow(*args)
        assert result.returncode == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr, args
    assert not (tmp_path / "none").exists()


def test_help_documents_every_command():
    result = dataflow("--help")
    for command in ("build", "query", "show", "clean"):
        assert command in result.stdout
    build_help = dataflow("build", "--help").stdout
    for option in ("--out", "--set", "--dry-run", "--rebuild"):
        assert option in build_help


def test_clean_removes_only_unreferenced_entries(tmp_path):
    out = tmp_path / "out"
    assert dataflow("build", str(QUICKSTART), "--out", str(out), "--set", "seed=1").returncode == 0
    assert dataflow("build", str(QUICKSTART), "--out", str(out), "--set", "seed=2").returncode == 0
    result = dataflow("clean", "--out", str(out))
    assert "removed 2 unreferenced cache entries" in result.stdout
    again = dataflow("build", str(QUICKSTART), "--out", str(out), "--set", "seed=2")
    assert "nothing to do" in again.stdout


def test_help_params_and_dry_run_show_parameters_with_their_help(tmp_path, built):
    result = dataflow("build", str(REPO / "pipelines" / "generate_demo.py"), "--help-params", "--set", "k=3")
    assert result.returncode == 0
    assert "  prompts = 16  how many instructions to answer" in result.stdout
    assert "  k = 3 (default 2)  candidates per prompt for best-of-K" in result.stdout
    dry = dataflow("build", str(QUICKSTART), "--out", str(built), "--dry-run", "--set", "seed=3")
    assert "  seed = 3 (default 0)" in dry.stdout


def test_report_prints_the_last_builds_summary(built):
    result = dataflow("report", "--out", str(built))
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].split() == ["node", "status", "rows", "in", "rows", "out", "rejected",
                                                    "seconds", "why", "built"]
    assert any(line.startswith("deduped ") for line in result.stdout.splitlines())
    wrong = dataflow("report", "--format", "pdf", "--out", str(built))
    assert wrong.returncode == 1 and "--format pdf: no such choice; choose one of summary" in wrong.stderr


HEAVY = ("torch", "transformers", "ray", "duckdb", "datasets", "vllm")
LIGHT_PIPELINE = '''
import polars as pl
from dataflow import Pipeline

p = Pipeline("light")
rows = p.read_jsonl("rows.jsonl", name="rows")
kept = rows.filter(pl.col("n") > 1, name="kept").map(upper=pl.col("text").str.to_uppercase(), name="upper")
p.output("result", kept.dedup("text", name="deduped"))
'''


def test_a_build_starts_its_first_node_before_importing_numpy_or_pyarrow(tmp_path):
    """Start-up (issue 17): NumPy and pyarrow, ~0.2 s of imports, load when a node needs them, not before."""
    (tmp_path / "rows.jsonl").write_text('{"text": "a", "n": 1}\n')
    (tmp_path / "light.py").write_text(LIGHT_PIPELINE)
    script = ("import os, sys; from dataflow.executors.local import LocalExecutor; "
              "LocalExecutor._build = lambda self, name: (print(sorted({'numpy', 'pyarrow'} & set(sys.modules)), "
              "flush=True), os._exit(0)); from dataflow.cli import main; main(['build', 'light.py', '--out', 'out'])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_a_build_without_models_imports_no_model_ray_or_duckdb_library_nor_the_llm_layer(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"text": "a", "n": 1}\n{"text": "b", "n": 2}\n{"text": "b", "n": 3}\n')
    (tmp_path / "light.py").write_text(LIGHT_PIPELINE)
    script = ("import sys; from dataflow.cli import main; code = main(['build', 'light.py', '--out', 'out']); "
              f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})) "
              "+ sorted(m for m in sys.modules if m.startswith(('dataflow.llm', 'dataflow.operators.generation')))); "
              "sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "built 4 of 4 node(s)" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_summary_after_a_failed_build_says_it_is_the_one_before(tmp_path):
    out = tmp_path / "out"
    assert dataflow("build", str(QUICKSTART), "--out", str(out)).returncode == 0
    broken = tmp_path / "broken.py"
    broken.write_text("from dataflow import Pipeline\np = Pipeline('broken')\n"
                      "def fail(row):\n    raise ValueError('no')\n"
                      "p.output('o', p.from_rows([{'n': 1}]).map(fail, outputs={'m': int}, name='failing'))\n")
    assert dataflow("build", str(broken), "--out", str(out)).returncode == 1
    result = dataflow("report", "--out", str(out))
    assert result.returncode == 0 and "note: this is the last build that finished" in result.stdout
    assert "ended with status 'failed'" in result.stdout
    failed_report = (out / "report.html").read_text()
    assert "This build failed after" in failed_report
    (out / "report.html").unlink()
    assert dataflow("report", "--out", str(out), "--format", "html").returncode == 0
    assert "This build failed after" in (out / "report.html").read_text()  # the failed build's, not the one before


@pytest.mark.parametrize("record", ["builds", "meta"])
def test_a_damaged_record_of_the_build_is_an_error_naming_it_and_moving_it_away_heals(tmp_path, record):
    out = tmp_path / "out"
    assert dataflow("build", str(QUICKSTART), "--out", str(out)).returncode == 0
    path = (out / ".dataflow" / "builds" / "quickstart.json" if record == "builds" else
            next((out / ".dataflow" / "cache").glob("*/meta.json")))
    path.write_text('{"nodes": ')  # cut short
    damaged = f"error: {path}, which dataflow wrote, is damaged"
    result = dataflow("build", str(QUICKSTART), "--out", str(out))
    assert result.returncode == 1 and damaged in result.stderr and "Traceback" not in result.stderr
    result = dataflow("query", "select count(*) from rejects", "--out", str(out))  # a node's meta holds its rejects
    assert (result.returncode, damaged in result.stderr) == ((1, True) if record == "meta" else (0, False))
    path.unlink()
    result = dataflow("build", str(QUICKSTART), "--out", str(out))
    assert result.returncode == 0
    assert ("built 1 of 8 node(s)" if record == "meta" else "nothing to do") in result.stdout


def test_a_rebuild_writes_again_an_output_file_that_was_deleted_or_overwritten(tmp_path):
    out = tmp_path / "out"
    assert dataflow("build", str(QUICKSTART), "--out", str(out)).returncode == 0
    data = out / "train" / "data.parquet"
    kept = data.read_bytes()
    for damage in (data.unlink, lambda: data.write_text("garbage")):
        damage()
        result = dataflow("build", str(QUICKSTART), "--out", str(out))
        assert result.returncode == 0 and "nothing to do" not in result.stdout
        assert data.read_bytes() == kept
    assert "nothing to do" in dataflow("build", str(QUICKSTART), "--out", str(out)).stdout
