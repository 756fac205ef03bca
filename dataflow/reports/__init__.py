"""Reports: views of what a build recorded (``dataflow.records``), by name. A report is a function
``render(manifest, stream)``; ``dataflow report --format NAME`` renders the latest build's, and
``dataflow build`` prints the summary after every build. Add one with a file and a line in ``REPORTS``."""

from __future__ import annotations

from typing import Any, Callable

from dataflow.plugins import load

REPORTS = {
    "summary": "dataflow.reports.summary:render",  # the node table and the operators' metrics
    "html": "dataflow.reports.html:render",  # one offline HTML file with charts: render(manifest, stream, out)
}


def report(name: str) -> Callable[..., Any]:
    """The render function registered as ``name``."""
    return load("--format", name, REPORTS)
