"""Every third-party import in cortexgen/ and workflow_scripts/ is declared in pyproject.toml and envs/."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

import yaml

from tests.conftest import REPO

LOCAL = {"cortexgen", "tests", "benchmarks"}


def _imports() -> dict[str, str]:
    """Top-level module name -> one file that imports it."""
    found = {}
    for folder in ("cortexgen", "workflow_scripts"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if "workflow_scripts/cortexgen" in str(path.relative_to(REPO)):
                continue  # the link to the library
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    return {name: where for name, where in found.items()
            if name not in sys.stdlib_module_names and name not in LOCAL}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements) -> set[str]:
    return {_normalize(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]) for requirement in requirements}


def test_third_party_imports_are_declared():
    distributions = packages_distributions()
    pyproject = _requirement_names(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    env = yaml.safe_load((REPO / "envs" / "cortexgen.yaml").read_text())
    env_names = set()
    for entry in env["dependencies"]:
        env_names |= _requirement_names(entry["pip"]) if isinstance(entry, dict) else _requirement_names([entry])
    imports = _imports()
    assert {"numpy", "nibabel", "ants", "torch"} <= set(imports)
    undeclared = []
    for module, where in sorted(imports.items()):
        names = {_normalize(name) for name in distributions.get(module, [])}
        assert names, f"{module} (imported in {where}) is not installed, so its distribution is unknown"
        if not names & pyproject:
            undeclared.append(f"{module} ({where}): {sorted(names)} not in pyproject.toml")
        if not names & env_names:
            undeclared.append(f"{module} ({where}): {sorted(names)} not in envs/cortexgen.yaml")
    assert undeclared == []
