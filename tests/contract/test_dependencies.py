"""Every third-party import of the server and of the SDK is a declared dependency of its own
distribution (and the SDK declares nothing of the server's)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"taskapi", "taskapi_client"}


def _imports(roots: list[Path]) -> set[str]:
    found: set[str] = set()
    for root in roots:
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - OURS


def _declared(pyproject: Path) -> set[str]:
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return {_normal(re.split(r"[=<>\[ ;]", spec)[0]) for spec in dependencies}


def _normal(name: str) -> str:
    return name.lower().replace("_", "-")


@pytest.mark.parametrize(
    ("sources", "pyproject"),
    [
        (["server", "interceptors"], "pyproject.toml"),
        (["clients/python/taskapi_client"], "clients/python/pyproject.toml"),
    ],
    ids=["server", "sdk"],
)
def test_every_import_is_a_declared_pinned_dependency(sources: list[str], pyproject: str) -> None:
    owners = importlib.metadata.packages_distributions()
    declared = _declared(ROOT / pyproject)
    pins = tomllib.loads((ROOT / pyproject).read_text())["project"]["dependencies"]
    assert all("==" in spec for spec in pins), f"unpinned dependency in {pyproject}: {pins}"
    missing = {
        module: sorted(owners.get(module, []))
        for module in _imports([ROOT / source for source in sources])
        if not {_normal(owner) for owner in owners.get(module, [])} & declared
    }
    assert not missing, f"imported but not declared in {pyproject}: {missing}"
