"""What changed since the previous build of the same pipeline: rows per node and the shift of each
distribution the report draws. Each report keeps its build's summary (rows per node; rows, mean and
median of each distribution) in ``<out>/.dataflow/reports/<pipeline>.json`` beside the one before it,
so the comparison needs neither the previous build's data nor its cache entries."""

from __future__ import annotations

from typing import Any

from dataflow.records import read_record, write_record
from dataflow.reports.distributions import Histogram
from dataflow.reports.stored import StoredBuild


def summary(build: StoredBuild, histograms: list[Histogram]) -> dict[str, Any]:
    manifest = build.manifest
    run = manifest.get("run_id") or manifest["started"]  # builds can start in the same second
    return {"build": f"{run}/{manifest.get('finished')}/{manifest.get('status', 'ok')}",
            "started": manifest["started"], "run_id": manifest.get("run_id"),
            "rows": {name: node["rows_out"] for name, node in build.nodes.items()},
            "distributions": {h.key: {"rows": h.rows, "mean": h.mean, "median": h.median} for h in histograms}}


def previous_summary(build: StoredBuild, current: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of the build before this one, keeping this one's for the next report when the build
    finished (an interrupted build is compared with the last finished one, and not kept)."""
    path = build.store.root / "reports" / f"{build.manifest['pipeline']}.json"
    saved = read_record(path) if path.exists() else {}
    if saved.get("current", {}).get("build") == current["build"]:
        return saved.get("previous")
    if build.finished:
        write_record(path, {"previous": saved.get("current"), "current": current})
    return saved.get("current")


def row_changes(before: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, int | None, int | None]]:
    """(node, rows before, rows now) for each node whose rows changed, was added or was removed."""
    names = list(dict.fromkeys([*now["rows"], *before["rows"]]))
    return [(n, before["rows"].get(n), now["rows"].get(n)) for n in names
            if before["rows"].get(n) != now["rows"].get(n)]


def shifts(before: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(distribution, before, now) for each distribution in both builds whose rows, mean or median moved,
    the largest relative move of the mean first."""
    moved = [(key, before["distributions"][key], value) for key, value in now["distributions"].items()
             if key in before["distributions"] and before["distributions"][key] != value]

    def relative(item: tuple[str, dict[str, Any], dict[str, Any]]) -> float:
        old, new = item[1]["mean"], item[2]["mean"]
        return abs(new - old) / max(abs(old), 1e-9) if old is not None and new is not None else 0.0

    return sorted(moved, key=relative, reverse=True)
