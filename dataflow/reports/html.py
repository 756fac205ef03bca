"""The build report as one self-contained HTML file (``dataflow report --format html``, and
``<out>/report.html`` after every build): the DAG with rows, rejects and time per node; rejects by node
and reason with sampled rows; score, length, margin and pass-rate distributions with their thresholds;
duplicate clusters; coverage and diversity; LLM cost; gates; and what changed since the previous build.
It opens from disk with no network: the charts are Vega-Lite, rendered by the Vega bundle inlined."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, TextIO

from dataflow.records import LLM_COST, read_runs, report_manifest, save_stopped_manifest, unfinished_manifest
from dataflow.reports import charts, dag, history
from dataflow.reports.distributions import Coverage, Histogram, coverage, output_histograms, score_histograms
from dataflow.reports.examples import RejectGroup, duplicate_clusters, output_samples, reject_groups
from dataflow.reports.page import Page, cell, details, fields, number, paragraph, table, text
from dataflow.reports.stored import StoredBuild
from dataflow.store import Store

REPORT = "report.html"
DIVERSITY_METRICS = ("distinct_1", "distinct_2", "mean_embedding_distance")
OTHER_REASONS = "(other reasons)"  # the bar of the reasons a node has past those listed


def render(manifest: dict[str, Any], stream: TextIO, out: Path) -> None:
    """Write the report of the build ``manifest`` records, whose store is in ``out``, to ``stream``."""
    build = StoredBuild(manifest, out)
    page = Page(f"dataflow report: {manifest['pipeline']}")
    scores = score_histograms(build)
    outputs = output_histograms(build)
    _dag_section(page, build)
    _rejects_section(page, build)
    _distributions_section(page, build, scores)
    _outputs_section(page, build, outputs)
    _duplicates_section(page, build)
    _coverage_section(page, build)
    _cost_section(page, build)
    _gates_section(page, manifest)
    now = history.summary(build, scores + [h for hs in outputs.values() for h in hs])
    _changes_section(page, history.previous_summary(build, now), now)
    stream.write(page.html(_header(build)))


def write(out: Path, manifest: dict[str, Any] | None = None) -> Path:
    """Write ``<out>/report.html`` for the last build in ``out`` (``report_manifest``), or the build
    ``manifest`` records."""
    out = Path(out)
    manifest = manifest or report_manifest(out)
    path, tmp = out / REPORT, out / f".{REPORT}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as stream:
            render(manifest, stream, out)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_after_build(store: Store, pipeline: Any, plans: dict[str, Any], run: dict[str, Any],
                      log: Callable[[str], None]) -> None:
    """Write the report at the end of a build, finished or not (an interrupted or failed build shows
    what finished); a report that cannot be written is logged, never fails the build."""
    started = time.perf_counter()
    try:
        manifest = None
        if run["status"] not in ("ok", "gate_failed"):
            manifest = unfinished_manifest(store, pipeline, plans, run)
            save_stopped_manifest(store, manifest)
        path = write(store.out, manifest)
        log(f"[report] {path} ({time.perf_counter() - started:.1f}s)")
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a polars panic too: the data is built, the report only shows it
        log(f"[report] not written: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")


# -- sections ---------------------------------------------------------------------------------------------
def _header(build: StoredBuild) -> str:
    m = build.manifest
    status = m.get("status") or ("gate failed" if any(not g["passed"] and not g["warn"] for g in m["gates"]) else "ok")
    params = ", ".join(f"{k}={v!r}" for k, v in m.get("params", {}).items()) or "none"
    return (f"<h1>{text(m['pipeline'])}</h1><p>{text(status)} · started {text(m['started'])} · "
            f"{text(m.get('seconds') or 0)}s · run {text(m.get('run_id') or run_of(build) or '?')} · "
            f"{text(m.get('file') or '')} · out {text(build.out)}</p><p>parameters: {text(params)}</p>")


def run_of(build: StoredBuild) -> str | None:
    """The id of the run the manifest records, from the run history (a manifest may predate run ids)."""
    runs = [r for r in read_runs(build.out) if r.get("pipeline") == build.manifest["pipeline"]
            and r.get("started") == build.manifest["started"]]
    return runs[-1]["run_id"] if len(runs) == 1 else None


def _banners(build: StoredBuild) -> str:
    parts = []
    missing = [n for n in build.nodes if build.nodes[n]["status"] == "not built"]
    if not build.finished:
        how = "was interrupted" if build.manifest["status"] == "interrupted" else "failed"
        parts.append(f'<div class="banner bad">This build {how} after {len(build.nodes) - len(missing)} of '
                     f'{len(build.nodes)} nodes; the nodes marked "not built" did not finish and no output was '
                     f'written. Run the same command again to resume.</div>')
    runs = read_runs(build.out)
    if build.finished and runs and runs[-1].get("status") not in ("ok", "gate_failed") \
            and runs[-1].get("started", "") > build.manifest["started"]:
        parts.append(f'<div class="banner warn">The latest build attempt here (run {text(runs[-1].get("run_id"))}, '
                     f'{text(runs[-1].get("status"))}) did not finish; this report shows the last finished build. '
                     f'Run that build again to resume it.</div>')
    skipped = [n for n, node in build.nodes.items() if node["status"] == "skipped"]
    outputs = [n for n, spec in build.manifest["outputs"].items() if spec.get("skipped")]
    if skipped or outputs:
        held = [f"{len(skipped)} node(s): {', '.join(skipped)}"] if skipped else []
        held += [f"output(s) {', '.join(outputs)}, not written"] if outputs else []
        parts.append(f'<div class="banner warn">A failed gate skipped {text("; ".join(held))}.</div>')
    return "".join(parts)


def _dag_section(page: Page, build: StoredBuild) -> None:
    seconds = {name: build.built_seconds(name) for name in build.nodes}
    rows = [[cell(name), cell(node["op"]), cell(node["status"], "status"), number(node["rows_in"]),
             number(node["rows_out"]), number(node["rejected"]), number(round(seconds[name], 3)),
             cell(node.get("reason", "") if node["status"] != "cached" else "cached (time of its build)"),
             cell(", ".join(f"{k}={v}" for k, v in (node.get("metrics") or {}).items()), "muted")]
            for name, node in build.nodes.items()]
    page.section("dag", "DAG", _banners(build), dag.svg(build.nodes, seconds),
                 table(["node", "operator", "status", "rows in", "rows out", "rejected", "seconds", "why built",
                        "metrics"], rows, "nodes"))


def _rejects_section(page: Page, build: StoredBuild) -> None:
    groups, left_out = reject_groups(build)
    if not groups:
        page.section("rejects", "Rejects", paragraph("No row was rejected.", "muted"))
        return
    bars = [{"node": g.node, "reason": g.reason, "rows": g.count} for g in groups]
    blocks = []
    for node in dict.fromkeys(g.node for g in groups):
        mine = [g for g in groups if g.node == node]
        more = ""
        if left_out.get(node):
            rows = build.nodes[node]["rejected"] - sum(g.count for g in mine)
            bars.append({"node": node, "reason": OTHER_REASONS, "rows": rows})
            more = paragraph(f"and {left_out[node]:,} other reasons ({rows:,} rows), none with more rows than the "
                             f"reasons shown", "muted")
        blocks.append(f"<h3>{text(node)}</h3>" + "".join(_reject_group(g) for g in mine) + more)
    chart = page.chart(charts.bars(bars, "node", "rows", "rejected rows by node and reason", color="reason"))
    page.section("rejects", "Rejects", chart, *blocks)


def _reject_group(group: RejectGroup) -> str:
    examples = []
    for e in group.examples:
        head = f'<div class="field"><span class="key">id:</span> {text(e["id"])}'
        head += f' <span class="key">score:</span> {text(e["score"])}' if e["score"] is not None else ""
        head += "</div>"
        reason = f'<div class="field"><span class="key">detail:</span> {text(e["detail"])}</div>' if e["detail"] else ""
        examples.append(f'<div class="row">{head}{reason}{fields(e["row"] or {})}</div>')
    shown = f"{len(group.examples)} sampled" if group.count > len(group.examples) else "all"
    return details(f"{text(group.reason)} — {group.count:,} rows ({shown} below)", "".join(examples))


def _histogram_title(h: Histogram) -> str:
    missing = f", {h.missing:,} missing" if h.missing else ""
    centre = f", mean {h.mean:.3g}, median {h.median:.3g}" if h.mean is not None else ""
    return f"{h.node}: {h.column} ({h.rows:,} rows{centre}{missing})"


def _distributions_section(page: Page, build: StoredBuild, found: list[Histogram]) -> None:
    tiers = [_tier_chart(page, build, name) for name, node in build.nodes.items()
             if node["op"] == "PyramidSample" and build.stored(name)]
    if not found and not tiers:
        page.section("distributions", "Scores and measures", paragraph("No step added a score or measure.", "muted"))
        return
    body = "".join(page.chart(charts.histogram(h, _histogram_title(h))) for h in found)
    page.section("distributions", "Scores and measures",
                 paragraph("Each step's new scores and measures; dashed rules are thresholds later steps apply "
                           "(filters, pairing margins, pyramid tier minimums).", "muted"),
                 f'<div class="charts">{body}{"".join(tiers)}</div>')


def _tier_chart(page: Page, build: StoredBuild, name: str) -> str:
    metrics = build.nodes[name].get("metrics") or {}
    tiers = [k[:-len("_selected")] for k in metrics if k.endswith("_selected")]
    rows = [{"tier": t, "rows": metrics.get(f"{t}_{kind}", 0), "count": kind}
            for t in tiers for kind in ("available", "selected")]
    return page.chart(charts.bars(rows, "tier", "rows", f"{name}: pyramid tiers, available and selected",
                                  color="count")) if rows else ""


def _outputs_section(page: Page, build: StoredBuild, found: dict[str, list[Histogram]]) -> None:
    outputs = build.outputs()
    if not outputs:
        page.section("outputs", "Outputs", paragraph("This build wrote no output.", "muted"))
        return
    samples = output_samples(build)
    blocks = []
    for name, spec in outputs.items():
        charts_html = "".join(page.chart(charts.histogram(h, _histogram_title(h))) for h in found.get(name, []))
        rows = "".join(f'<div class="row">{fields(r)}</div>' for r in samples[name])
        blocks.append(f"<h3>{text(name)}</h3>"
                      + paragraph(f"{spec['rows']:,} rows · record schema {spec.get('schema') or 'none'} · "
                                  f"{build.out / name / 'data.parquet'}")
                      + f'<div class="charts">{charts_html}</div>'
                      + details(f"{len(samples[name])} sampled rows", rows))
    page.section("outputs", "Outputs", *blocks)


def _duplicates_section(page: Page, build: StoredBuild) -> None:
    clusters = duplicate_clusters(build)
    if not clusters:
        page.section("duplicates", "Duplicate clusters", paragraph("No dedup step removed a row.", "muted"))
        return
    blocks = []
    for c in clusters:
        members = "".join(f'<div class="{state}"><div class="key">{text(state)} · {text(i)}</div>'
                          f'<div class="field">{text(t)}</div></div>' for i, state, t in c.members)
        shown = f", {len(c.members)} shown" if c.size > len(c.members) else ""
        blocks.append(details(f"{text(c.node)}: cluster of {c.size:,} rows (kept {text(c.members[0][0])}{shown})",
                              f'<div class="side">{members}</div>'))
    page.section("duplicates", "Duplicate clusters", paragraph("Largest first, per dedup step.", "muted"), *blocks)


def _coverage_section(page: Page, build: StoredBuild) -> None:
    found: list[Coverage] = coverage(build)
    body = "".join(page.chart(charts.bars([{"value": v, "rows": n} for v, n in c.counts], "value", "rows",
                                          f"{c.node}: rows per {c.column} ({c.distinct} values)"))
                   for c in found)
    gates = [[cell(r["node"]), number(r["measured"]), number(r["bound"]), cell(r["note"])]
             for r in build.manifest.get("gates", []) if r["condition"] == "min_coverage"]
    diversity = [[cell(name), *[number(node["metrics"].get(k)) for k in DIVERSITY_METRICS]]
                 for name, node in build.nodes.items()
                 if any(k in (node.get("metrics") or {}) for k in DIVERSITY_METRICS)]
    parts = [f'<div class="charts">{body}</div>' if body else paragraph("No topic, persona, template or tier "
                                                                         "column in the outputs.", "muted")]
    if gates:
        parts.append("<h3>Coverage targets (gates)</h3>" + table(["node", "coverage", "target", "values"], gates))
    if diversity:
        parts.append("<h3>Diversity</h3>" + table(["node", *DIVERSITY_METRICS], diversity))
    page.section("coverage", "Coverage and diversity", *parts)


def _cost_section(page: Page, build: StoredBuild) -> None:
    costly = {name: node for name, node in build.nodes.items()
              if any(k in (node.get("metrics") or {}) for k in ("model", *LLM_COST))}
    if not costly:
        page.section("cost", "LLM cost", paragraph("No step called a model.", "muted"))
        return
    rows = [[cell(name), cell(node["metrics"].get("model", "")), cell(node["status"]),
             *[number(node["metrics"].get(k)) for k in LLM_COST], number(round(build.built_seconds(name), 2))]
            for name, node in costly.items()]
    totals = [sum(node["metrics"].get(k) or 0 for node in costly.values()) for k in LLM_COST]
    rows.append([cell("total"), cell(""), cell(""), *[number(round(t, 2)) for t in totals],
                 number(round(sum(build.built_seconds(n) for n in costly), 2))])
    tokens = [{"node": name, "tokens": node["metrics"].get(k) or 0, "kind": k}
              for name, node in costly.items() for k in ("tokens_in", "tokens_out")]
    page.section("cost", "LLM cost",
                 paragraph("As recorded when each node was built; a cached node cost nothing this time.", "muted"),
                 table(["node", "model", "status", "calls", "cache hits", "tokens in", "tokens out", "model load s",
                        "node seconds"], rows),
                 page.chart(charts.bars(tokens, "node", "tokens", "tokens per node", color="kind")))


def _gates_section(page: Page, manifest: dict[str, Any]) -> None:
    results = manifest.get("gates", [])
    if not results:
        page.section("gates", "Gates", paragraph("No gate was checked.", "muted"))
        return
    rows = [[cell(r["node"]), cell(r["condition"]), number(r["measured"]), number(r["bound"]),
             cell("passed" if r["passed"] else "warning" if r["warn"] else "FAILED", "ok" if r["passed"] else "fail"),
             cell(r["message"])] for r in results]
    page.section("gates", "Gates", table(["node", "condition", "measured", "bound", "result", "message"], rows))


def _changes_section(page: Page, before: dict[str, Any] | None, now: dict[str, Any]) -> None:
    if before is None:
        page.section("changes", "Changes since the previous build",
                     paragraph("No earlier build of this pipeline has a report here to compare with.", "muted"))
        return
    rows = [[cell(n), number(a), number(b), number(None if a is None or b is None else b - a)]
            for n, a, b in history.row_changes(before, now)]
    moved = [[cell(key), number(a["rows"]), number(b["rows"]), number(a["mean"]), number(b["mean"]),
              number(a["median"]), number(b["median"])] for key, a, b in history.shifts(before, now)]
    parts = [paragraph(f"Compared with the build started {before['started']} (run {before.get('run_id') or '?'}).")]
    parts.append(table(["node", "rows before", "rows now", "change"], rows) if rows
                 else paragraph("Every node has the same rows as before.", "muted"))
    parts.append("<h3>Distribution shifts</h3>" + table(["distribution", "rows before", "rows now", "mean before",
                                                         "mean now", "median before", "median now"], moved)
                 if moved else paragraph("No distribution moved.", "muted"))
    page.section("changes", "Changes since the previous build", *parts)

