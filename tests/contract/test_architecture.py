"""The architecture, checked: one-way layers (import-linter contracts in .importlinter), strict types."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_imports_point_one_way() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--config", str(ROOT / ".importlinter"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_types_are_strict() -> None:
    """mypy --strict over every hand-written module (targets and options: pyproject's [tool.mypy])."""
    mypy = Path(sys.executable).parent / "mypy"
    result = subprocess.run([str(mypy)], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_script_is_type_checked() -> None:
    """Scripts are named one by one in [tool.mypy] modules (mypy takes files or modules, not both):
    a new one under scripts/, bench/ or clients/openapi/ must be added there."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    scripts = {path.stem for folder in config["mypy_path"] for path in (ROOT / folder).glob("*.py")}
    assert scripts == set(config["modules"])
