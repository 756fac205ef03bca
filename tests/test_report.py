"""The HTML build report as a user sees it: written after every build, opened in a real browser (Debian's
chromium, headless, driven over the DevTools protocol) with no console error, no request off the disk,
every chart drawn, rows that expand on a click and a screenshot; text from the data shown, never run;
a node with a million rejects sampled; an interrupted build showing what finished; the changes since the
previous build; and a build directory with no build named as such."""

from __future__ import annotations

import base64
import io
import json
import math
import random
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import vl_convert

from conftest import EXAMPLES
from dataflow import DataflowError, Pipeline, Rejection, row_op
from dataflow.build import build
from dataflow.operators import PreferencePairs, PyramidSample, ToConversation
from dataflow.progress import Progress
from dataflow.records import read_manifest
from dataflow.reports import distributions, examples
from dataflow.reports import html as report
from dataflow.reports.stored import StoredBuild

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: run `bash scripts/setup.sh` "
                                                            "as root, or `apt-get install chromium` (Debian)")
TOPICS = ["astronomy", "cooking", "gardening", "travel"]
HOSTILE = "<script>window.__pwned = 1</script>"  # text in the data that must show, never run
HOSTILE_IMAGE = '<img src="x" onerror="window.__pwned = 2">'


# -- the browser ---------------------------------------------------------------------------------------------
class Browser:
    """Chromium headless over the DevTools protocol: console errors and exceptions, requested URLs,
    JavaScript evaluated in the page, real mouse clicks, screenshots."""

    def __init__(self, profile: Path):
        import websocket

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", f"--user-data-dir={profile}", "--remote-debugging-port=0", "--remote-allow-origins=*",
             "--window-size=1400,1000", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = self._port(profile / "DevToolsActivePort")
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        self.socket = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.calls, self.events = 0, []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def _port(self, path: Path) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().strip():
                return int(path.read_text().split()[0])
            assert self.process.poll() is None, f"chromium exited with {self.process.returncode}"
            time.sleep(0.05)
        raise AssertionError("chromium opened no DevTools port in 30 s")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.calls:
                assert "error" not in message, f"{method}: {message['error']}"
                return message.get("result", {})
            self.events.append(message)

    def open(self, path: Path) -> None:
        """Load the report and wait until its charts are drawn (or failed)."""
        self.events = []
        self.call("Page.navigate", url=Path(path).resolve().as_uri())
        deadline = time.monotonic() + 60
        while self.evaluate("document.readyState === 'complete' && document.body.dataset.charts") in (None, False):
            assert time.monotonic() < deadline, f"the charts were never drawn; errors: {self.errors()}"
            time.sleep(0.05)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, f"{expression}: {result['exceptionDetails']}"
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries since the page was opened."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("exception", {}).get("description", "exception"))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the first element matching ``selector``."""
        x, y = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                             "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                             "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path) -> bytes:
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
        path.write_bytes(png)
        return png

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed: run `bash scripts/setup.sh` as root, or `apt-get install chromium`")
    chromium = Browser(tmp_path_factory.mktemp("chromium"))
    yield chromium
    chromium.close()


CHARTS_DRAWN = """[...document.querySelectorAll('.chart')].map(c => {
  const svg = c.querySelector('svg');
  return svg !== null && svg.getBoundingClientRect().width > 0 && svg.querySelectorAll('g.role-mark > *').length > 0;
})"""


def assert_renders(browser: Browser, path: Path) -> int:
    """Open a report: no error, nothing requested but the file itself, every chart drawn; the chart count."""
    browser.open(path)
    assert browser.errors() == []
    assert [url for url in browser.requests() if not url.startswith("file://")] == []
    drawn = browser.evaluate(CHARTS_DRAWN)
    assert browser.evaluate("document.body.dataset.charts") == str(len(drawn))
    assert all(drawn), f"charts not drawn: {[i for i, ok in enumerate(drawn) if not ok]}"
    assert browser.evaluate("document.querySelectorAll('svg.dag g.node').length") > 0
    return len(drawn)


# -- builds ------------------------------------------------------------------------------------------------------
def rows(n: int = 120) -> list[dict[str, Any]]:
    found = [{"instruction": f"Explain {TOPICS[i % 4]} idea number {i // 3}", "topic": TOPICS[i % 4],
              "response": " ".join(["word"] * (i % 23 + 1)), "prompt_id": f"p{i // 3}"} for i in range(n)]
    found += [dict(found[0]), dict(found[1]), dict(found[1])]  # an exact-duplicate cluster of 3 and one of 2
    found.append({"instruction": HOSTILE, "response": f"{HOSTILE_IMAGE} and more words here", "topic": HOSTILE,
                  "prompt_id": "p-hostile"})
    return found


def report_pipeline(min_score: float = 0.8) -> Pipeline:
    """Dedup, a score and a filter on it, a pyramid, preference pairs, a coverage gate: every section."""
    p = Pipeline("report_demo")
    threshold = p.param("min_score", min_score)
    unique = p.from_rows(rows(), name="src").dedup("instruction", name="deduped")
    scored = unique.map(score=pl.col("response").str.len_chars() / 20.0, name="scored") \
        .gate(min_coverage=0.5, column="topic", expected=TOPICS, warn=True)
    kept = scored.filter(pl.col("score") >= threshold, reason=f"too short {HOSTILE}", name="kept") \
        .filter(~pl.col("instruction").str.contains("<", literal=True), reason="markup in the instruction",
                name="clean")
    pyramid = kept.apply(PyramidSample(score="score", shares={"top": 0.2, "rest": 0.8}, size=40,
                                       quantiles={"top": 0.8, "rest": None}), name="pyramid")
    sft = pyramid.select("id", "instruction", "response", "tier").rename({"response": "output"}, name="alpaca") \
        .apply(ToConversation(), name="conversations")
    pairs = kept.apply(PreferencePairs(score="score", prompt="instruction", response="response", min_margin=0.2),
                       name="pairs")
    p.output("sft", sft, schema="sft")
    p.output("dpo", pairs, schema="preference")
    return p


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "out"
    build(report_pipeline(), out, Progress(io.StringIO()))
    return out


def page_text(path: Path) -> str:
    """The report's visible text, roughly: tags dropped, entities kept."""
    return re.sub(r"<[^>]+>", " ", path.read_text().split('<script type="application/json"')[0])


# -- tests --------------------------------------------------------------------------------------------------------
def test_every_build_writes_one_offline_file_with_every_section(built):
    path = built / "report.html"
    html = path.read_text()
    assert 0 < path.stat().st_size < 2_000_000
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing to fetch: no CDN, no server
    shown = page_text(path)
    for heading in ("DAG", "Rejects", "Scores and measures", "Outputs", "Duplicate clusters", "Coverage and diversity",
                    "LLM cost", "Gates", "Changes since the previous build"):
        assert f">{heading}</h2>" in html
    assert "duplicate — 3 rows (all below)" in shown  # 3 exact duplicates removed by 'deduped'
    assert "deduped: cluster of 3 rows" in shown
    specs = json.loads(re.search(r'id="dataflow-charts">(.*?)</script>', html, re.S).group(1))
    titles = " | ".join(str(s.get("title", "")) for s in specs.values())
    for drawn in ("scored: score", "sft: prompt words", "sft: response words", "sft: turns", "dpo: margin",
                  "pyramid: pyramid tiers", "rows per topic", "rejected rows by node and reason"):
        assert drawn in titles
    for chart in specs.values():
        vl_convert.vegalite_to_vega(chart)  # raises on a spec Vega-Lite does not take
    score = next(s for s in specs.values() if str(s.get("title", "")).startswith("scored: score"))
    rules = {v["threshold"]: v["value"] for layer in score["layer"][1:] for v in layer["data"]["values"]}
    assert rules["kept: >= 0.8"] == 0.8 and set(rules) == {"kept: >= 0.8", "pyramid top"}  # "rest" takes the rest


@needs_browser
def test_the_report_opens_in_a_browser_with_every_chart_drawn_and_rows_that_expand(browser, built, tmp_path):
    assert assert_renders(browser, built / "report.html") >= 8
    visible = "document.querySelector('details > .row, details > .side').checkVisibility()"
    assert browser.evaluate("document.querySelector('details').open") is False and browser.evaluate(visible) is False
    browser.click("details > summary")
    assert browser.evaluate("document.querySelector('details').open") is True and browser.evaluate(visible) is True
    png = browser.screenshot(tmp_path / "report.png")
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


@needs_browser
def test_script_in_the_data_is_shown_as_text_and_never_runs(browser, built):
    browser.open(built / "report.html")
    assert browser.evaluate("window.__pwned") is None
    browser.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    text = browser.evaluate("document.body.innerText")
    assert HOSTILE in text and HOSTILE_IMAGE in text  # the rejected row, the reason, the duplicate texts
    assert browser.evaluate("document.querySelectorAll('main script, main img').length") == 0
    axis = browser.evaluate("[...document.querySelectorAll('.chart svg text')].map(t => t.textContent).join(' ')")
    assert HOSTILE in axis  # a coverage value is an axis label, drawn as text
    assert browser.evaluate("window.__pwned") is None


def test_a_node_with_a_million_rejects_is_counted_and_sampled(tmp_path):
    n = 1_000_000
    source = tmp_path / "rows.parquet"
    pl.DataFrame({"id": [f"r{i}" for i in range(n)], "length": pl.int_range(n, eager=True) % 1000}) \
        .write_parquet(source)
    p = Pipeline("many_rejects")
    p.output("kept", p.read_parquet(source, name="rows").filter(pl.col("length") >= 999, reason="too short",
                                                                  name="kept"))
    out = tmp_path / "out"
    build(p, out, Progress(io.StringIO()))
    started = time.perf_counter()
    path = report.write(out)
    assert time.perf_counter() - started < 10
    assert path.stat().st_size < 2_000_000
    assert "too short — 999,000 rows (3 sampled below)" in page_text(path)


def test_an_interrupted_build_reports_what_finished_and_marks_the_rest(tmp_path):
    @row_op(inputs={"instruction": str}, outputs={"length": int})
    def stop_halfway(row):
        raise KeyboardInterrupt

    p = Pipeline("interrupted")
    unique = p.from_rows(rows(20), name="src").dedup("instruction", name="deduped")
    p.output("o", unique.apply(stop_halfway, name="measured").filter(pl.col("length") > 1, name="long"))
    out, log = tmp_path / "out", io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        build(p, out, Progress(log))
    assert f"[report] {out / 'report.html'}" in log.getvalue()
    shown = page_text(out / "report.html")
    assert "This build was interrupted after 2 of 4 nodes" in shown
    statuses = re.findall(r'<g class="node" data-status="([^"]+)"><title>(\w+)', (out / "report.html").read_text())
    assert dict((n, s) for s, n in statuses) == {"src": "built", "deduped": "built", "measured": "not built",
                                                 "long": "not built"}
    (out / "report.html").unlink()
    report.write(out)  # `dataflow report --format html`: the interrupted build's report again
    assert page_text(out / "report.html") == shown


@needs_browser
def test_an_interrupted_builds_report_opens_in_the_browser(browser, tmp_path):
    test_an_interrupted_build_reports_what_finished_and_marks_the_rest(tmp_path)
    assert_renders(browser, tmp_path / "out" / "report.html")
    assert browser.evaluate("document.querySelectorAll('svg.dag g.node[data-status=\"not built\"]').length") == 2


def test_the_report_shows_what_changed_since_the_previous_build(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built, out)
    build(report_pipeline(min_score=1.0), out, Progress(io.StringIO()))
    html = (out / "report.html").read_text()
    changes = html.split('id="changes"')[1]
    kept_before = json.loads((built / "manifest.json").read_text())["nodes"]["kept"]["rows_out"]
    kept_now = json.loads((out / "manifest.json").read_text())["nodes"]["kept"]["rows_out"]
    assert kept_now < kept_before
    assert f"<td>kept</td><td class=\"n\">{kept_before:,}</td><td class=\"n\">{kept_now:,}</td>" in changes
    assert "<td>dpo.margin</td>" in changes  # the pairs' margins moved with the threshold


def test_a_report_that_fails_is_logged_and_the_build_succeeds(tmp_path, monkeypatch):
    def broken(manifest, stream, out):
        raise ValueError("no charts today")

    monkeypatch.setattr(report, "render", broken)
    p = Pipeline("plain")
    p.output("o", p.from_rows([{"text": "a"}], name="src"))
    log = io.StringIO()
    result = build(p, tmp_path / "out", Progress(log))
    assert result.outputs_written == ["o"]
    assert "[report] not written: ValueError: no charts today" in log.getvalue()


def test_a_directory_with_no_build_is_named_with_the_fix(tmp_path):
    with pytest.raises(DataflowError, match=r"no build found in .*run `dataflow build PIPELINE.py --out"):
        report.write(tmp_path)


@needs_browser
@pytest.mark.parametrize("pipeline", EXAMPLES)
def test_every_example_pipelines_report_opens_in_the_browser(browser, example_build, pipeline):
    out = example_build(pipeline, **EXAMPLES[pipeline])
    assert assert_renders(browser, out / "report.html") >= 1


# -- distributions and samples, against a reading of their definition --------------------------------------------
def histogram_by_hand(values: list[float | None], integer: bool) -> tuple | None:
    """(bins, rows, missing, mean, median) of ``values`` as the report defines them, in plain Python: a value is
    in the last bin whose shown start is at most the value; null, NaN and infinite values are missing."""
    finite = sorted(v for v in values if v is not None and math.isfinite(v))
    if not finite:
        return None
    low, high = finite[0], finite[-1]
    if (integer and high - low < distributions.BINS) or low == high:
        start, width, count = low - 0.5, 1.0, int(high - low) + 1
    else:
        start, width, count = low, high / distributions.BINS - low / distributions.BINS, distributions.BINS
    starts = [(start / 2 + i * (width / 2)) * 2 for i in range(count + 1)]  # start + i * width, without overflow
    per_bin = [0] * count
    for v in finite:
        per_bin[max([i for i, s in enumerate(starts[:-1]) if s <= v] or [0])] += 1
    bins = [(starts[i], starts[i + 1], n) for i, n in enumerate(per_bin)]
    n = len(finite)
    mean = math.fsum(v / 2**600 for v in finite) / n * 2**600  # scaled by a power of two: no overflow near ±1e308
    return bins, n, len(values) - n, mean, finite[(n - 1) // 2] / 2 + finite[n // 2] / 2


def random_columns(seed: int) -> tuple[pl.DataFrame, set[str]]:
    """Floats with NaN, nulls and infinities, integers of a small and a large range, heavy ties, a constant,
    and columns with no value; an odd or even number of rows."""
    rng = np.random.default_rng(seed)
    n = [0, 1, 2, 7, 1000, 1001, 4000][seed % 7] + int(rng.integers(0, 2))

    def holes(values: np.ndarray, *fills: float) -> list[float | None]:
        out = [float(v) for v in values]
        for i in rng.choice(n, size=min(n, n // 10), replace=False) if n else []:
            out[i] = rng.choice([None, *fills])
        return out

    columns = {"floats": holes(rng.normal(size=n) * 10.0 ** rng.integers(-3, 6), math.nan, math.inf, -math.inf),
               "huge": holes(rng.choice([-1.7e308, 1.7e308, 0.0], n)),  # a range past the largest float
               "edges": holes(rng.choice([0.0, 0.235, 0.47, 4.7], n)),  # values on the edges of bins
               "small_ints": holes(rng.integers(-3, 20, n)), "large_ints": holes(rng.integers(-10**9, 10**9, n)),
               "ties": holes(rng.choice([0.0, 1.0, 2.5], n), math.nan), "constant": [4.0] * n,
               "skewed": holes(rng.exponential(size=n) ** 4), "empty": [None] * n, "nan": [math.nan] * n}
    return pl.DataFrame(columns, schema={c: pl.Float64 for c in columns}), {"small_ints", "large_ints"}


@pytest.mark.parametrize("fine_bins, most_held", [(4096, 65536), (4, 3), (2, 1)])
@pytest.mark.parametrize("seed", range(14))
def test_histograms_match_their_definition(seed, fine_bins, most_held, monkeypatch, tmp_path):
    monkeypatch.setattr(distributions, "FINE_BINS", fine_bins)  # small: the median is binned again and again
    monkeypatch.setattr(distributions, "MOST_HELD", most_held)
    frame, integers = random_columns(seed)
    found = {h.column: h for h in distributions.histograms(frame.lazy(), "node", {c: pl.col(c) for c in frame.columns},
                                                           integers, tmp_path)}
    for column in frame.columns:
        expected = histogram_by_hand(frame[column].to_list(), column in integers)
        if expected is None:
            assert column not in found
            continue
        h = found[column]
        bins, rows, missing, mean, median = expected
        assert (h.bins, h.rows, h.missing) == (bins, rows, missing), column
        assert h.mean == pytest.approx(mean, rel=1e-12, abs=1e-300), column
        assert h.median == pytest.approx(median, rel=1e-15, abs=0), column
        assert h.median == frame[column].filter(frame[column].is_finite()).median(), column


def test_reject_and_output_samples_are_seeded_and_come_from_the_right_rows(tmp_path):
    source = tmp_path / "rows.parquet"
    pl.DataFrame({"id": [f"r{i}" for i in range(5000)], "n": pl.int_range(5000, eager=True) % 100,
                  "text": [f"text {i}" for i in range(5000)]}).write_parquet(source, row_group_size=512)
    p = Pipeline("samples")
    kept = p.read_parquet(source, name="rows").filter(pl.col("n") >= 10, reason="small", name="big") \
        .filter(pl.col("n") % 2 == 0, name="even")
    p.output("kept", kept)
    out = tmp_path / "out"
    build(p, out, Progress(io.StringIO()))
    stored = StoredBuild(read_manifest(out), out)
    groups, left_out = examples.reject_groups(stored)
    assert (groups, left_out) == examples.reject_groups(stored)
    assert {(g.node, g.count) for g in groups} == {("big", 500), ("even", 2250)}
    for g in groups:
        assert len(g.examples) == examples.PER_REASON
        rejected = set(stored.rejects(g.node).collect()["id"])
        for e in g.examples:
            i = int(e["id"][1:])
            assert e["id"] in rejected and e["row"] == {"n": str(i % 100), "text": f"text {i}"}
    samples = examples.output_samples(stored)
    assert samples == examples.output_samples(stored)
    output = pl.read_parquet(out / "kept" / "data.parquet")
    shown = {(str(r["n"]), r["text"]) for r in output.iter_rows(named=True)}
    assert len(samples["kept"]) == 3 and all((s["n"], s["text"]) in shown for s in samples["kept"])


def test_samples_of_a_node_with_many_reasons_are_the_lowest_seeded_hashes_in_id_order(tmp_path):
    def odd_rejected(row):
        if row["n"] % 2:
            raise Rejection(f"odd {row['n'] % 3}")
        return {"half": row["n"] // 2}

    rows = [{"n": n} for n in random.Random(5).sample(range(6000), 6000)]
    p = Pipeline("reasons")
    p.output("kept", p.from_rows(rows, name="rows").map(odd_rejected, outputs={"half": int}, on_error="reject",
                                                        name="halved"))
    out = tmp_path / "out"
    build(p, out, Progress(io.StringIO()))
    stored = StoredBuild(read_manifest(out), out)
    groups, _ = examples.reject_groups(stored)
    rejects = stored.rejects("halved").collect()
    by_hand = {}
    for reason in ("odd 0", "odd 1", "odd 2"):
        ids = rejects.filter(pl.col("reason") == reason)["id"]
        lowest = ids.gather(ids.hash(examples.SEED).arg_sort().head(examples.PER_REASON)).to_list()
        by_hand[reason] = (len(ids), sorted(lowest))
    assert {g.reason: (g.count, [e["id"] for e in g.examples]) for g in groups} == by_hand


def test_samples_pick_every_row_as_often(tmp_path, monkeypatch):
    path = tmp_path / "rows.parquet"
    pl.DataFrame({"i": range(8)}).write_parquet(path, row_group_size=3)
    picked = []
    for seed in range(800):
        monkeypatch.setattr(examples, "SEED", seed)
        picked += examples.sampled(pl.scan_parquet(path), 3)["i"].to_list()
    counts = [picked.count(i) for i in range(8)]
    assert all(240 <= c <= 360 for c in counts), counts  # 300 expected each
    assert examples.sampled(pl.scan_parquet(path), 20)["i"].to_list() == list(range(8))
    assert examples.sampled(pl.scan_parquet(path).head(0), 3).height == 0


def test_two_builds_in_one_second_are_compared_and_a_failed_first_build_is_named(tmp_path):
    def pipeline(cut: int, fail: bool = False) -> Pipeline:
        p = Pipeline("quick")
        src = p.from_rows([{"n": i} for i in range(100)], name="src")
        kept = src.filter(pl.col("n") >= cut, reason="small", name="kept")

        @row_op(inputs={"n": int}, outputs={"m": int})
        def boom(row):
            if fail:
                raise ValueError("no")
            return {"m": row["n"]}

        p.output("o", kept.apply(boom, name="boom"))
        return p

    out = tmp_path / "out"
    with pytest.raises(DataflowError):
        build(pipeline(10, fail=True), out, Progress(io.StringIO()))
    with pytest.raises(DataflowError, match=r"no build in .* has finished yet: the last one \(run \w+\) ended with "
                                            r"status 'failed'; .*report.html, which it wrote, shows what it did"):
        read_manifest(out)  # what `dataflow report` prints from
    report.write(out)  # `dataflow report --format html`: the failed build's report again
    html = (out / "report.html").read_text()
    assert re.search(r"<td>src</td><td>FromRows</td><td class=\"status\">built</td>.*?<td>new node \(not built before\)</td>", html)
    build(pipeline(10), out, Progress(io.StringIO()))
    build(pipeline(50), out, Progress(io.StringIO()))  # most likely in the same second as the one before
    changes = (out / "report.html").read_text().split('id="changes"')[1]
    assert '<td>kept</td><td class="n">90</td><td class="n">50</td>' in changes


def test_the_report_names_skipped_outputs_counts_every_reason_and_shows_the_compared_turns(tmp_path):
    from dataflow.operators import ExactDedup

    p = Pipeline("parts")
    rows = p.from_rows([{"n": i, "messages": [{"role": "user", "content": f"q{i % 3}"},
                                              {"role": "assistant", "content": f"answer {i}"}]} for i in range(60)],
                       name="src")

    @row_op(inputs={"n": int}, outputs={"kept": bool}, on_error="reject")
    def reasons(row):
        if row["n"] < 50:
            raise Rejection(f"reason {row['n'] // 2:02d}")  # 25 reasons of 2 rows each
        return {"kept": True}

    many = rows.apply(reasons, name="many")
    p.output("by_prompt", rows.apply(ExactDedup(("messages",), roles=("user",)), name="by_prompt"))
    p.output("held", many.gate(min_rows=100, warn=False))
    with pytest.raises(DataflowError):
        build(p, tmp_path / "out", Progress(io.StringIO()))
    html = (tmp_path / "out" / "report.html").read_text()
    assert "A failed gate skipped output(s) held, not written." in html
    assert "and 5 other reasons (10 rows), none with more rows than the reasons shown" in html
    assert '"reason": "(other reasons)", "rows": 10}' in html  # the chart's bars add up to every reject
    clusters = html.split('id="duplicates"')[1]
    assert "q0" in clusters and "answer 3" not in clusters  # the user turns compared, not the answers


def test_a_pyramid_mark_is_the_threshold_the_operator_used_when_scores_hold_nan(tmp_path):
    scores = [math.nan if i % 3 == 0 else float(i) for i in range(90)]
    p = Pipeline("tiers")
    rows = p.from_rows([{"score": s} for s in scores], name="src")
    p.output("top", rows.apply(PyramidSample(score="score", shares={"top": 0.5, "rest": 0.5}, size=20,
                                             quantiles={"top": 0.5, "rest": None}), name="pyramid"))
    build(p, tmp_path / "out", Progress(io.StringIO()))
    (mark,) = distributions.tier_minimums(StoredBuild(read_manifest(tmp_path / "out"), tmp_path / "out"), "pyramid",
                                          "score").values()
    assert mark == pl.Series([s for s in scores if not math.isnan(s)]).quantile(0.5, "nearest")
