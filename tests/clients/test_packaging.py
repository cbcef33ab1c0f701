"""The distributions as a user installs them, in fresh virtual environments.

- `pip install ./clients/python` alone gives a working SDK (grpcio, protobuf and
  googleapis-common-protos only: no server, no Envoy, no mongomock, no bcrypt) that talks
  to a live server;
- `pip install ./clients/python .` puts nothing generic at the top of site-packages: the
  server is `taskapi.server`, its interceptors `taskapi.interceptors`, the generated
  validate options `taskapi.buf.validate`.

Slow-ish (a venv and a pip install each, from pip's cache), so each venv is built once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "clients" / "python"


def _venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin" / "python"


def _source_copy(source: Path, destination: Path) -> Path:
    """A copy of a project folder to install from: pip builds in the source tree, and its
    build/ output must not land in the checkout (nor mix with the editable link tree)."""
    ignore = shutil.ignore_patterns(
        "build", "*.egg-info", ".venv", "node_modules", "__pycache__", ".mypy_cache", "clients", "tests"
    )
    if source == ROOT:
        shutil.copytree(source, destination, ignore=ignore)
    else:
        shutil.copytree(source, destination, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    return destination


def _pip(python: Path, *args: str) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
        # A build in a temp dir, never the checkout's own editable link tree.
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _run(python: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd="/",  # not the checkout: nothing importable by accident from the working directory
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = _venv(tmp_path_factory.mktemp("sdk-venv") / "venv")
    _pip(python, str(_source_copy(SDK, tmp_path_factory.mktemp("sdk-source") / "python")))
    return python


def test_the_sdk_alone_installs_only_what_a_client_needs(sdk_python: Path) -> None:
    result = _run(
        sdk_python,
        """
        import importlib.metadata as md, importlib.util as u
        names = sorted(d.metadata["Name"].lower().replace("_", "-") for d in md.distributions())
        print(names)
        for module in ("bcrypt", "mongomock", "mongoengine", "redis", "envoy", "taskapi.server", "buf", "server"):
            assert u.find_spec(module.split(".")[0]) is None or (
                module == "taskapi.server" and u.find_spec(module) is None), module
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    installed = set(eval(result.stdout.strip()))  # noqa: S307 - our own repr of a list of names
    assert {"taskapi-client", "grpcio", "protobuf", "googleapis-common-protos"} <= installed
    # pip and setuptools come with the venv; typing-extensions with grpcio.
    allowed = {"taskapi-client", "grpcio", "protobuf", "googleapis-common-protos", "typing-extensions"}
    assert installed - {"pip", "setuptools"} <= allowed


def test_the_sdk_alone_talks_to_a_live_server(sdk_python: Path, grpc_target: str) -> None:
    result = _run(
        sdk_python,
        """
        import sys, uuid
        from taskapi.v1 import task_pb2
        from taskapi_client import NotFound, TaskApiClient
        with TaskApiClient(sys.argv[1]) as api:
            api.register(f"venv-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery", "Venv")
            task = api.create_task(title="from a fresh venv", priority=task_pb2.HIGH)
            assert api.get_task(task.id).title == "from a fresh venv"
            try:
                api.get_task("0" * 24)
            except NotFound as error:
                print("typed error:", error.reason)
        """,
        grpc_target,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "typed error: NOT_FOUND" in result.stdout


def test_installing_the_server_puts_nothing_generic_in_site_packages(tmp_path: Path) -> None:
    python = _venv(tmp_path / "venv")
    # --no-deps: the layout of our own two distributions is the question here.
    sources = tmp_path / "sources"
    _pip(python, "--no-deps", str(_source_copy(SDK, sources / "python")), str(_source_copy(ROOT, sources / "root")))
    result = _run(
        python,
        """
        import sysconfig, pathlib
        site = pathlib.Path(sysconfig.get_paths()["purelib"])
        print(sorted(p.name for p in site.iterdir()))
        """,
    )
    assert result.returncode == 0, result.stderr
    top_level = set(eval(result.stdout.strip()))  # noqa: S307 - our own repr of a list of names
    assert not top_level & {"server", "interceptors", "buf", "tests", "scripts", "bench"}, top_level
    assert {"taskapi", "taskapi_client"} <= top_level
    tree = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "venv").rglob("taskapi/*") if p.is_dir())
    assert any(name.endswith("taskapi/server") for name in tree), tree
    assert any(name.endswith("taskapi/interceptors") for name in tree), tree
    assert any(name.endswith("taskapi/v1") for name in tree), tree
