"""Build status on every terminal: a piped build log gets a status line per running node (rows done, rate,
ETA) at least every interval, a terminal gets live bars with rows/s and tokens/s, and the status thread
never outlives the build."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from dataflow import DataflowError
from dataflow.progress import Progress, RichProgress, make_progress
from dataflow.records import NodeStats

SLOW_PIPELINE = """
    import time
    from dataflow import Pipeline, row_op

    @row_op(inputs={"n": int}, outputs={"double": int})
    def slow_double(row):
        time.sleep(0.004)
        return {"double": 2 * row["n"]}

    p = Pipeline("slow")
    p.output("o", p.from_rows([{"n": i} for i in range(500)], name="numbers").apply(slow_double, name="doubled"))
"""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def stats(name: str, rows: int, seconds: float, **metrics) -> NodeStats:
    return NodeStats(name, "Generate", "built", "f", rows, rows, 0, seconds, metrics=metrics)


def test_a_piped_build_logs_a_status_line_per_running_node(tmp_path):
    (tmp_path / "slow.py").write_text(textwrap.dedent(SLOW_PIPELINE))
    result = subprocess.run([sys.executable, "-m", "dataflow.cli", "build", str(tmp_path / "slow.py"), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "DATAFLOW_STATUS_SECONDS": "0.3"})
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("[status] doubled: ")]
    assert len(lines) >= 2, result.stderr
    done = [int(re.search(r"doubled: ([\d,]+) of 500 rows", line).group(1).replace(",", "")) for line in lines]
    assert done == sorted(done) and done[-1] > 0
    assert re.search(r"of 500 rows \(\d+%\), [\d.,]+ rows/s, \d+s elapsed, eta \d+s", lines[-1])
    assert "[status] numbers" not in result.stderr  # a node that is done prints no more status


def test_a_bad_status_interval_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv("DATAFLOW_STATUS_SECONDS", "soon")
    with pytest.raises(DataflowError, match=r"\$DATAFLOW_STATUS_SECONDS='soon': give the seconds"):
        make_progress(io.StringIO())


def test_status_lines_give_tokens_per_second_of_a_model_step_and_stop_when_it_ends():
    log = io.StringIO()
    progress = Progress(log, interval=0.1)
    metrics: dict = {}
    progress.start("generate", 100, "new node")
    progress.watch("generate", metrics)
    for _ in range(4):
        time.sleep(0.08)
        progress.advance("generate", 10)
        metrics["tokens_out"] = metrics.get("tokens_out", 0) + 400
    progress.finish(stats("generate", 100, 0.4, tokens_out=1600))
    lines = log.getvalue().splitlines()
    status = [line for line in lines if line.startswith("[status] generate: ")]
    assert status and all(re.search(r"\d+ of 100 rows \(\d+%\), [\d.,]+ rows/s, [\d.,]+ tokens/s", s) for s in status)
    assert lines[-1] == "[done] generate: 100 rows in 0.40s (250 rows/s, 4,000 tokens/s)"
    time.sleep(0.3)
    assert log.getvalue().splitlines()[-1] == lines[-1]  # nothing more once no node runs
    assert not [t for t in threading.enumerate() if t.name == "dataflow-status"]


def test_a_terminal_gets_live_bars_with_rows_and_tokens_per_second():
    terminal = Terminal()
    progress = make_progress(terminal)
    assert isinstance(progress, RichProgress)
    metrics: dict = {}
    progress.start("generate", 50, "new node")
    progress.watch("generate", metrics)
    progress.advance("generate", 25)
    metrics["tokens_out"] = 2000
    time.sleep(0.2)
    progress.bars.refresh()
    live = terminal.getvalue()
    assert "generate" in live and "25/50" in live and "rows/s" in live and "tokens/s" in live
    progress.finish(stats("generate", 50, 1.0, tokens_out=4000))
    progress.close()
    assert "50/50" in terminal.getvalue() and "[done] generate: 50 rows" in terminal.getvalue()
