"""`taskapi dev --split`: the account and task services as processes of their own.

    taskapi serve --services auth,users   the account services: its own embedded store
    taskapi serve --services tasks        the task service: its own embedded store

Each child is the `taskapi serve` a deployment runs, on a port chosen here, sharing this
stack's Redis and JWT secret; Envoy routes each service to its own cluster. The children
print to this console (their call lines, text by default) and run in sessions of their own,
so Ctrl-C reaches only `taskapi dev`, which stops them after Envoy, in order.
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

from taskapi.server.config import Settings, child_environment

ACCOUNT_SERVICES = ("auth", "users")
TASK_SERVICES = ("tasks",)


class ChildExited(Exception):
    """A service process exited before the stack was up (a port taken meanwhile, a bad setting)."""


@dataclass
class ServiceProcess:
    """One `taskapi serve --services ...` child."""

    services: Sequence[str]
    host: str
    port: int
    metrics_port: int
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port} ({', '.join(self.services)})"

    def check(self) -> None:
        if self.process.poll() is not None:
            raise ChildExited(
                f"taskapi serve --services {','.join(self.services)} exited with {self.process.returncode}"
            )

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
    settings: Settings, services: Sequence[str], port: int, metrics_port: int, extra: dict[str, str], args: list[str]
) -> ServiceProcess:
    env = child_environment(
        {
            "TASKAPI_SERVICES": ",".join(services),
            "TASKAPI_GRPC_HOST": settings.grpc_host,
            "TASKAPI_GRPC_PORT": str(port),
            "TASKAPI_WATCH_PORT": "0",  # any free one: a fixed port would collide between processes
            "TASKAPI_METRICS_PORT": str(metrics_port),
            "TASKAPI_DRAIN_SECONDS": "0",  # Envoy, the only balancer, is gone before they stop
            "JWT_SECRET": settings.jwt_secret,  # one secret: tokens of the one verify at the other
            "REDIS_URL": settings.redis_url,
            "LOG_FORMAT": settings.log_format or "text",  # this console, as the single stack's
        }
        | extra
    )
    process = subprocess.Popen([_taskapi(), "serve", *args], stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return ServiceProcess(services, settings.grpc_host, port, metrics_port, process)


@contextmanager
def split_services(
    settings: Settings,
    ports: Sequence[int],
    metrics_ports: Sequence[int],
    *,
    admin_email: str = "",
    admin_password: str = "",
) -> Iterator[SplitServices]:
    """The account and task service processes on `ports`; stopped (SIGTERM) on exit."""
    with ExitStack() as stack:
        admin = ["--admin-email", admin_email] if admin_email else []
        accounts = _start(
            settings, ACCOUNT_SERVICES, ports[0], metrics_ports[0], {"TASKAPI_ADMIN_PASSWORD": admin_password}, admin
        )
        stack.callback(accounts.stop)
        tasks = _start(settings, TASK_SERVICES, ports[1], metrics_ports[1], {}, [])
        stack.callback(tasks.stop)
        yield SplitServices(accounts, tasks)
