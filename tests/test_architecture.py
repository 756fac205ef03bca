"""The one-way import rule of ARCHITECTURE.md, checked on the real import graph of the source tree
(every import statement, those inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"dataflow": "dataflow", "operators": "dataflow.operators", "schemas": "dataflow.schemas",
            "trainers": "dataflow.trainers"}
BASE = {"dataflow.errors", "dataflow.dtypes", "dataflow.operator", "dataflow.fingerprint", "dataflow.filehash",
        "dataflow.paths", "dataflow.memory"}
FAMILIES = ("curation", "formats", "generation", "judging", "rewards", "selection")
FACADES = {"dataflow", "dataflow.operators", *(f"dataflow.operators.{f}" for f in ("core", *FAMILIES))}
ALLOWED = {  # layer -> the layers it may import
    "base": {"base"},
    "schemas": {"base"},
    "llm": {"base", "llm"},
    "text": {"base"},
    "core": {"base", "schemas", "text", "core"},
    "family": {"base", "schemas", "llm", "text", "core", "generation.base"},
    "engine": {"base", "schemas", "llm", "text", "core", "engine"},
    "trainers": {"base", "schemas", "llm", "text", "core", "family", "generation.base", "engine", "trainers"},
    "cli": {"base", "schemas", "llm", "text", "core", "engine", "trainers"},
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    if module in BASE:
        return "base"
    if module.startswith("dataflow.schemas"):
        return "schemas"
    if module.startswith("dataflow.llm"):
        return "llm"
    if module in ("dataflow.operators.text", "dataflow.operators.columns"):
        return "text"
    if module.startswith("dataflow.operators.core"):
        return "core"
    if module == "dataflow.operators.generation.base":
        return "generation.base"
    if module.startswith("dataflow.operators."):
        return "family"
    if module.startswith("dataflow.trainers"):
        return "trainers"
    if module == "dataflow.cli":
        return "cli"
    return "engine"


def family(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "operators" and parts[2] in FAMILIES else None


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name == "dataflow" or name.startswith("dataflow.")]


def violations(root: Path) -> tuple[int, int, list[str]]:
    """(files, imports checked, the imports that break the rule) of the tree under ``root``."""
    files = [p for package in PACKAGES for p in (root / package).rglob("*.py")]
    checked, broken = 0, []
    for path in files:
        importer = module_name(path, root)
        if importer in FACADES:
            continue  # packages that re-export their modules
        own = layer(importer) if layer(importer) != "generation.base" else "family"
        for line, target in imports(path):
            checked += 1
            ok = layer(target) in ALLOWED[own] or (own == "family" and family(target) == family(importer) is not None)
            if not ok:
                broken.append(f"{path.relative_to(root)}:{line} ({own}) imports {target} ({layer(target)})")
    return len(files), checked, broken


def test_operator_families_and_the_engine_import_one_way():
    files, checked, broken = violations(REPO)
    assert files > 60 and checked > 150  # the rule was applied to the real tree
    assert not broken, "imports against the rule of ARCHITECTURE.md:\n" + "\n".join(broken)


def test_the_rule_catches_imports_across_families_and_up_into_the_engine(tmp_path):
    cases = {
        "operators/judging/score.py": "from dataflow.operators.selection.pairs import PreferencePairs",
        "operators/curation/minhash.py": "from dataflow.build import build",
        "dataflow/catalog.py": "from dataflow.operators.curation.minhash import MinHashDedup",
        "operators/text.py": "from dataflow.llm import LLMClient",
        "dataflow/build.py": "from dataflow.trainers.runs import Run",
        "dataflow/operator.py": "def f():\n    from dataflow.pipeline import Pipeline",
        "operators/judging/pairwise.py": "from dataflow.operators.judging.score import JudgeScore",  # allowed
        "operators/rewards/math_answers.py": "from dataflow.operators.generation.base import LLMOperator",  # allowed
        "trainers/rewards.py": "from dataflow.operators.rewards.math_answers import MathVerify",  # allowed
    }
    for name, source in cases.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source + "\n")
    _, checked, broken = violations(tmp_path)
    assert checked == len(cases)
    assert sorted(b.split(":")[0] for b in broken) == sorted(list(cases)[:6])


def test_the_operators_package_names_what_each_family_exports():
    import importlib

    from dataflow import operators

    assert set(operators.FAMILIES) == {"core", *FAMILIES}
    for family, names in operators.FAMILIES.items():
        assert tuple(importlib.import_module(f"dataflow.operators.{family}").__all__) == names, family
    assert operators.MinHashDedup is importlib.import_module("dataflow.operators.curation").MinHashDedup
    with pytest.raises(AttributeError, match="no attribute 'MinhashDedup'"):
        operators.MinhashDedup  # noqa: B018


def test_every_package_folder_is_installed():
    tomllib = pytest.importorskip("tomllib")

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {module_name(init, REPO) for package in PACKAGES for init in (REPO / package).rglob("__init__.py")}
    assert folders == set(config["packages"])
