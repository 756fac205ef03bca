"""Fingerprint every node and decide what to build, with the reason for each rebuild."""

from __future__ import annotations

from typing import Any

import polars as pl

from dataflow.compiler import CompiledPipeline
from dataflow.fingerprint import class_code_hash, digest, qualified_name
from dataflow.operator import Kind, fingerprint_parameters
from dataflow.records import NodePlan
from dataflow.store import Store


def _shown(value: Any) -> str:
    text = str(value) if isinstance(value, pl.Expr) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def plan_build(compiled: CompiledPipeline, store: Store, previous: dict[str, Any] | None,
               rebuild: set[str]) -> dict[str, NodePlan]:
    """Plan each node in order. ``rebuild`` forces those nodes and everything downstream."""
    previous_nodes = (previous or {}).get("nodes", {})
    forced: set[str] = set()
    plans: dict[str, NodePlan] = {}
    for name in compiled.order:
        node = compiled.nodes[name]
        op = node.op
        params = fingerprint_parameters(op)
        components = {
            "op": qualified_name(type(op)),
            "code": f"{class_code_hash(type(op))}:{op.version}",
            "params": {k: digest(v, 8) for k, v in params.items()},
            "extras": {k: digest(v, 8) for k, v in op.fingerprint_extras().items()},
            "inputs": {ref: plans[ref].fingerprint for ref in node.inputs},
        }
        if Kind(op.kind) is Kind.SOURCE:
            components["ids"] = name  # generated ids carry the node name
        fingerprint = digest(components)
        upstream_forced = [ref for ref in node.inputs if ref in forced]
        if name in rebuild or upstream_forced:
            forced.add(name)
        cached = store.has(fingerprint) and name not in forced
        reason = ""
        if not cached:
            if name in rebuild:
                reason = "--rebuild requested"
            elif upstream_forced:
                reason = f"upstream '{upstream_forced[0]}' is rebuilt"
            else:
                reason = explain(components, {k: _shown(v) for k, v in params.items()},
                                 previous_nodes.get(name), fingerprint)
        plans[name] = NodePlan(name, fingerprint, components, {k: _shown(v) for k, v in params.items()},
                               cached, reason)
    return plans


def explain(components: dict[str, Any], shown: dict[str, str], before: dict[str, Any] | None,
            fingerprint: str) -> str:
    """Why a node must be built, compared with its record in the previous build."""
    if not before:
        return "new node (not built before)"
    old = before.get("components", {})
    if before.get("fingerprint") == fingerprint:
        if before.get("status") == "skipped":
            return "not built yet: the previous build skipped it after a failed gate"
        return "its cache entry is missing (cleaned or never finished)"
    if old.get("op") != components["op"]:
        return f"operator changed ({old.get('op')} -> {components['op']})"
    if old.get("code") != components["code"]:
        return "operator code changed"
    changed = [k for k in components["params"] if old.get("params", {}).get(k) != components["params"][k]]
    if changed:
        key = changed[0]
        was = before.get("params", {}).get(key, "?")
        return f"parameter '{key}' changed ({was} -> {shown.get(key)})"
    changed = [k for k in components["extras"] if old.get("extras", {}).get(k) != components["extras"][k]]
    if changed:
        return "source file content changed" if changed[0] == "content" else f"{changed[0]} changed"
    for ref, fp in components["inputs"].items():
        if old.get("inputs", {}).get(ref) != fp:
            return f"upstream '{ref}' changed"
    return "fingerprint changed"
