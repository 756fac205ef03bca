"""A build killed with SIGKILL resumes from completed nodes and gives the same outputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

PIPELINE = '''
import os, time
from pathlib import Path
import polars as pl
from dataflow import Pipeline

p = Pipeline("resume")
src = p.from_rows([{"text": f"document number {i}"} for i in range(300)], name="src")
first = src.map(n=pl.col("text").str.len_chars(), name="first")

def slow(row):
    Path(os.environ["STARTED"]).touch()
    time.sleep(float(os.environ.get("DELAY", "0")))
    return {"m": row["n"] * 2}

second = first.map(slow, outputs={"m": int}, name="second")
p.output("result", second.filter(pl.col("m") > 36, reason="short", name="third"))
'''


def build(pipeline: Path, out: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dataflow.cli", "build", str(pipeline), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def test_sigkill_mid_build_resumes_with_identical_outputs(tmp_path):
    pipeline = tmp_path / "resume.py"
    pipeline.write_text(PIPELINE)
    started = tmp_path / "started"
    env = {"STARTED": str(started)}

    proc = build(pipeline, tmp_path / "killed", {**env, "DELAY": "0.05"})
    deadline = time.time() + 60
    while not started.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "result").exists()
    swept = subprocess.run([sys.executable, "-m", "dataflow.cli", "clean", "--out", str(tmp_path / "killed")],
                           capture_output=True, text=True)
    assert "removed 0 unreferenced" in swept.stdout  # what the killed build finished is kept for the resume

    resumed = build(pipeline, tmp_path / "killed", env)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert "[cached] src" in err and "[cached] first" in err and "[build] second" in err

    clean = build(pipeline, tmp_path / "clean", env)
    clean.communicate(timeout=120)
    killed_result = pl.read_parquet(tmp_path / "killed" / "result" / "data.parquet")
    assert killed_result.equals(pl.read_parquet(tmp_path / "clean" / "result" / "data.parquet"))
    assert killed_result.height == 200  # texts of 17 or 18 characters (i < 100) give m <= 36
    leftovers = list((tmp_path / "killed" / ".dataflow" / "tmp").iterdir())
    assert leftovers == []  # the killed build's temporary files were swept


def test_ctrl_c_stops_cleanly_and_the_next_build_resumes(tmp_path):
    pipeline = tmp_path / "resume.py"
    pipeline.write_text(PIPELINE)
    started = tmp_path / "started"
    proc = build(pipeline, tmp_path / "out", {"STARTED": str(started), "DELAY": "0.05"})
    deadline = time.time() + 60
    while not started.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted: finished nodes are kept" in err and "Traceback" not in err
    # a polars writer thread may still close its file after the interrupt: that lands under tmp/,
    # never in the cache, and the next build sweeps it
    resumed = build(pipeline, tmp_path / "out", {"STARTED": str(started)})
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0 and "[cached] first" in err and "[build] second" in err
    assert list((tmp_path / "out" / ".dataflow" / "tmp").iterdir()) == []
