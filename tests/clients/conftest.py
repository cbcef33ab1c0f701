"""Fixtures for the client tests: the live server (tests/conftest.py's `replica`),
Envoy in front of it, and a static server for the browser pages.

Each non-Python client's own test runs as a subprocess (`node --test`, `go test`)
with the server's address in the environment; `run_checked` fails with its output.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from taskapi.server.app import Replica
from taskapi.server.edge import Envoy
from tests.support.edge import running_edge

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "clients"


def run_checked(command: Sequence[str], env: dict[str, str], *, timeout: float = 240) -> str:
    """Run a client's own test runner; fail the pytest test with its output unless it passed."""
    try:
        result = subprocess.run(
            list(command),
            cwd=ROOT,
            check=False,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except FileNotFoundError as error:
        pytest.fail(f"{command[0]} is not installed: run `bash scripts/setup.sh --dev` ({error})")
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output}"
    return output


@pytest.fixture(scope="session")
def grpc_target(replica: Replica) -> str:
    return replica.address


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def static_site() -> Iterator[str]:
    """clients/ over HTTP on a free port (what `taskapi dev` serves on :3000)."""
    handler = functools.partial(_QuietHandler, directory=str(CLIENTS))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="static-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def rest_edge(replica: Replica, static_site: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    """Real Envoy in front of the replica, allowing the static site's origin by CORS."""
    upstreams = [("127.0.0.1", replica.port)]
    with running_edge(upstreams, tmp_path_factory.mktemp("edge"), cors_origins=(static_site,)) as envoy:
        yield envoy
