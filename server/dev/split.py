"""`taskapi dev --split`: the account and task services as processes of their own.

    taskapi serve --services auth,users   the account services: its own embedded store
    taskapi serve --services tasks        the task service: its own embedded store

Each child is the `taskapi serve` a deployment runs, sharing this stack's Redis and JWT
secret. It binds free ports itself and reports them when it serves (server/readiness.py);
Envoy routes each service to its own cluster, and WatchTasks to the task process's watch
server. The children print to this console (their call lines, text by default) and run in
sessions of their own, so Ctrl-C reaches only `taskapi dev`, which stops them after Envoy,
in order.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from taskapi.server import readiness
from taskapi.server.config import Settings, child_environment

ACCOUNT_SERVICES = ("auth", "users")
TASK_SERVICES = ("tasks",)
SIDES = ("accounts", "tasks")


class ChildFailed(Exception):
    """A service process exited (a bad setting, say), or did not report serving in time."""


@dataclass
class ServiceProcess:
    """One `taskapi serve --services ...` child, serving on the ports it reported bound."""

    services: Sequence[str]
    host: str
    process: subprocess.Popen[bytes]
    port: int = 0
    metrics_port: int = 0
    watch_port: int = 0  # 0: no watch server (the account services stream nothing)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port} ({', '.join(self.services)})"

    def check(self) -> None:
        if self.process.poll() is not None:
            raise ChildFailed(
                f"taskapi serve --services {','.join(self.services)} exited with {self.process.returncode}"
            )

    def ready(self, notifications: readiness.ReadinessSocket, timeout: float) -> None:
        """Wait for the child's READY notification and take the ports it bound from it."""
        try:
            fields = notifications.wait_for(self.check, timeout)
        except TimeoutError as exc:
            raise ChildFailed(f"taskapi serve --services {','.join(self.services)}: {exc}") from None
        self.port = self._port(fields, readiness.GRPC_PORT)
        self.metrics_port = self._port(fields, readiness.METRICS_PORT)
        self.watch_port = self._port(fields, readiness.WATCH_PORT) if readiness.WATCH_PORT in fields else 0

    def _port(self, fields: dict[str, str], key: str) -> int:
        """A port the READY notification reports: a clear failure when it is missing or not one."""
        value = fields.get(key, "")
        if not (value.isascii() and value.isdigit() and 0 < int(value) < 65536):
            raise ChildFailed(f"taskapi serve --services {','.join(self.services)} reported {key}={value!r}")
        return int(value)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # drains (no delay here) and exits
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class SplitServices:
    accounts: ServiceProcess
    tasks: ServiceProcess

    @property
    def children(self) -> tuple[ServiceProcess, ServiceProcess]:
        return (self.accounts, self.tasks)

    def service_upstreams(self) -> dict[str, list[tuple[str, int]]]:
        """EdgeConfig.service_upstreams: each service to the process serving it."""
        return {"auth": [self.accounts.address], "users": [self.accounts.address], "tasks": [self.tasks.address]}

    def watch_upstreams(self) -> list[tuple[str, int]]:
        """EdgeConfig.watch_upstreams: the task process's watch server (WatchTasks), if it has one."""
        return [(child.host, child.watch_port) for child in self.children if child.watch_port]

    def check(self) -> None:
        for child in self.children:
            child.check()


def _taskapi() -> str:
    beside = Path(sys.executable).with_name("taskapi")
    found = str(beside) if beside.exists() else shutil.which("taskapi")
    if found is None:
        raise FileNotFoundError("no taskapi command next to this Python: install the project")
    return found


def _start(
    settings: Settings,
    services: Sequence[str],
    metrics_port: int,
    notifications: readiness.ReadinessSocket,
    extra: dict[str, str],
    args: list[str],
) -> ServiceProcess:
    env = child_environment(
        {
            "TASKAPI_SERVICES": ",".join(services),
            "TASKAPI_GRPC_HOST": settings.grpc_host,
            # Any free ports, bound by the child itself and reported (server/readiness.py):
            # none is chosen here and released for it, for another process to take meanwhile.
            "TASKAPI_GRPC_PORT": "0",
            "TASKAPI_WATCH_PORT": "0",
            "TASKAPI_METRICS_PORT": str(metrics_port),
            readiness.ENVIRONMENT: str(notifications.path),
            "TASKAPI_DRAIN_SECONDS": "0",  # Envoy, the only balancer, is gone before they stop
            "JWT_SECRET": settings.jwt_secret,  # one secret: tokens of the one verify at the other
            "REDIS_URL": settings.redis_url,
            "LOG_FORMAT": settings.log_format or "text",  # this console, as the single stack's
        }
        | extra
    )
    process = subprocess.Popen([_taskapi(), "serve", *args], stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return ServiceProcess(services, settings.grpc_host, process)


@contextmanager
def split_services(
    settings: Settings,
    directory: Path,
    metrics_port: int,
    *,
    admin_email: str = "",
    admin_password: str = "",
    ready_timeout: float = 60.0,
) -> Iterator[SplitServices]:
    """The account and task service processes, serving once this is entered (the account
    process's metrics on `metrics_port`, everything else on free ports; their readiness
    sockets in the private `directory`); stopped (SIGTERM) on exit."""
    with ExitStack() as stack:
        # Entered first, closed last: a child stopping still has its socket to say so.
        sockets = [stack.enter_context(readiness.ReadinessSocket(directory / f"ready-{side}")) for side in SIDES]
        admin = ["--admin-email", admin_email] if admin_email else []
        accounts = _start(
            settings, ACCOUNT_SERVICES, metrics_port, sockets[0], {"TASKAPI_ADMIN_PASSWORD": admin_password}, admin
        )
        stack.callback(accounts.stop)
        tasks = _start(settings, TASK_SERVICES, 0, sockets[1], {}, [])
        stack.callback(tasks.stop)
        for child, notifications in zip((accounts, tasks), sockets, strict=True):
            child.ready(notifications, ready_timeout)
        yield SplitServices(accounts, tasks)
