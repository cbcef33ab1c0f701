"""Fixtures for the end-to-end tests: real Envoy → real replicas → real Redis.

The session's `stack` comes in both layouts, and every test on it runs against each:
- `single`: an App with two replicas serving every service, behind one Envoy cluster;
- `split`: `taskapi dev --split` as a user runs it, a child process: the account services
  and the task service in processes of their own (each with its own embedded store), one
  Envoy cluster per service, its worker and Redis (docs/services.md).
Tests that break a stack on purpose (stopping a replica, tight rate limits) start their
own with `running_stack`.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from taskapi.server.app import App, Replica
from taskapi.server.config import Settings
from taskapi.server.domain.caller import ROLE_ADMIN
from taskapi.server.edge import EdgeConfig, Envoy
from taskapi.server.store import audit
from taskapi.server.store.audit import StoreQuery
from tests.conftest import GENEROUS, TEST_SECRET, make_settings, unique_email
from tests.support.dev_process import DevProcess, running_dev
from tests.support.edge import Response, RestClient, running_edge

PASSWORD = "correct horse battery"
ALLOWED_ORIGIN = "http://app.example.com"  # tests.support.edge configures exactly this one


LAYOUTS = ("single", "split")
SPLIT_ADMIN = "split-admin@example.com"  # created by `taskapi dev --split --admin-email`


@dataclass
class Stack:
    app: App | None  # the single layout's, in this process; None for the split (child processes)
    replicas: list[Replica]
    envoy: Envoy
    client: RestClient
    workdir: Path
    layout: str = "single"
    access_log: Path | None = None
    split_replica_ports: list[int] = field(default_factory=list)
    dev: DevProcess | None = None

    @property
    def replica_ports(self) -> set[int]:
        return {replica.port for replica in self.replicas} | set(self.split_replica_ports)

    @property
    def task_replica_ports(self) -> set[int]:
        """The replicas serving TaskService."""
        if self.layout == "single":
            return self.replica_ports
        return {port for _, port in self.envoy.config.service_upstreams["tasks"]}

    @property
    def access_log_path(self) -> Path:
        return self.access_log or self.workdir / "access.log"


@contextmanager
def running_stack(
    settings: Settings, workdir: Path, *, replicas: int = 2, layout: str = "single", **edge: Any
) -> Iterator[Stack]:
    """An App with `replicas` replicas behind a real Envoy (`edge`: EdgeConfig fields); everything
    stopped on exit. `layout="split"`: in this process, an App serving the account services and
    one serving the task service, `replicas` each, one Envoy cluster per service."""
    if layout == "split":
        with running_split_stack(settings, workdir, replicas=replicas, **edge) as stack:
            yield stack
        return
    app = App(settings)
    try:
        started = [app.start_replica(0) for _ in range(replicas)]
        upstreams = [(settings.grpc_host, replica.port) for replica in started]
        watch = [(settings.grpc_host, r.watch.port) for r in started if r.watch is not None]
        with running_edge(upstreams, workdir, **({"watch_upstreams": watch} | edge)) as envoy:
            yield Stack(app, started, envoy, RestClient(envoy.rest_url), workdir)
    finally:
        app.close(grace=1.0)


@pytest.fixture(scope="session", autouse=True)
def store_queries() -> Iterator[list[StoreQuery]]:
    """Every query the store issues during the e2e run (docs/scaling.md, "Every task query is
    targeted"). At the end the run fails if a task query was not scoped by owner (admins'
    cross-owner listings aside) or a listing had no limit."""
    seen: list[StoreQuery] = []
    with audit.listening(seen.append):
        yield seen
    problems = audit.violations(seen)
    assert not problems, "\n".join(problems[:20])


@contextmanager
def running_split_stack(settings: Settings, workdir: Path, *, replicas: int = 2, **edge: Any) -> Iterator[Stack]:
    accounts = App(dataclasses.replace(settings, services=("auth", "users")))
    tasks = App(dataclasses.replace(settings, services=("tasks",)))
    try:
        account_replicas = [accounts.start_replica(0) for _ in range(replicas)]
        task_replicas = [tasks.start_replica(0) for _ in range(replicas)]
        account_addresses = [(settings.grpc_host, replica.port) for replica in account_replicas]
        upstreams = {
            "auth": account_addresses,
            "users": account_addresses,
            "tasks": [(settings.grpc_host, replica.port) for replica in task_replicas],
        }
        with running_edge([], workdir, service_upstreams=upstreams, **edge) as envoy:
            started = account_replicas + task_replicas
            yield Stack(accounts, started, envoy, RestClient(envoy.rest_url), workdir, "split")
    finally:
        tasks.close(grace=1.0)
        accounts.close(grace=1.0)


SPLIT_ENV = {
    "JWT_SECRET": TEST_SECRET,
    "TASKAPI_ADMIN_PASSWORD": "correct horse battery",
    # Limits no test reaches by accident, as make_settings gives the single layout.
    "RATE_LIMIT_IP": f"{GENEROUS.requests}/{GENEROUS.window_seconds}",
    "RATE_LIMIT_USER": f"{GENEROUS.requests}/{GENEROUS.window_seconds}",
    "RATE_LIMIT_AUTH": f"{GENEROUS.requests}/{GENEROUS.window_seconds}",
}


@contextmanager
def running_split_dev(workdir: Path, *args: str) -> Iterator[Stack]:
    """`taskapi dev --split` on free ports, read from its banner into a Stack."""
    free = ["--rest-port", "0", "--grpc-port", "0", "--admin-port", "0", "--metrics-port", "0", "--web-port", "0"]
    origin = ["--cors-origin", ALLOWED_ORIGIN]  # as tests.support.edge configures the single layout's
    with running_dev(["--split", *free, *origin, "--admin-email", SPLIT_ADMIN, *args], workdir, SPLIT_ENV) as dev:
        rest = dev.wait_for(r"REST\s+(http://\S+/api/v1/)")
        grpc_port = int(dev.wait_for(r"gRPC\s+\S+:(\d+)\s"))
        admin_port = int(dev.wait_for(r"admin\s+http://127\.0\.0\.1:(\d+)"))
        access_log = Path(dev.wait_for(r"access\s+(/\S+)"))
        replicas = dev.wait_for(r"replicas: (.*)\)$")
        services = {port: names.split(", ") for port, names in re.findall(r"\S+:(\d+) \(([a-z, ]+)\)", replicas)}
        upstreams = {
            service: [("127.0.0.1", int(port)) for port, names in services.items() if service in names]
            for service in ("auth", "tasks", "users")
        }
        config = EdgeConfig(
            rest_port=int(rest.split(":")[2].split("/")[0]),
            grpc_port=grpc_port,
            admin_port=admin_port,
            service_upstreams=upstreams,
        )
        # The dev stack's own Envoy, described (not started) for the admin and gRPC helpers.
        envoy = Envoy(config, workdir)
        ports = [int(port) for port in services]
        yield Stack(None, [], envoy, RestClient(rest), workdir, "split", access_log, ports, dev)


@pytest.fixture(scope="session", params=LAYOUTS)
def stack(request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if request.param == "split":
        with running_split_dev(tmp_path_factory.mktemp("split")) as running:
            yield running
        return
    with running_stack(make_settings(redis_url), tmp_path_factory.mktemp("edge")) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> RestClient:
    return stack.client


@dataclass
class Account:
    email: str
    password: str
    session: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def token(self) -> str:
        return self._text("accessToken")

    @property
    def refresh_token(self) -> str:
        return self._text("refreshToken")

    @property
    def user(self) -> dict[str, Any]:
        user = self.session["user"]
        assert isinstance(user, dict), self.session
        return user

    def _text(self, key: str) -> str:
        value = self.session[key]
        assert isinstance(value, str), (key, value)
        return value


def json_object(response: Response) -> dict[str, Any]:
    """The response's JSON body, which must be an object."""
    body = response.json()
    assert isinstance(body, dict), response
    return body


def session_of(response: Response) -> dict[str, Any]:
    """The AuthSession a Register/Login/Refresh response is, asserting 200."""
    assert response.status == 200, response
    return json_object(response)


def resource(response: Response) -> dict[str, Any]:
    """The Task or User a single-resource response is, asserting 200."""
    assert response.status == 200, response
    return json_object(response)


def register(
    client: RestClient, *, email: str | None = None, password: str = PASSWORD, name: str = "Test User"
) -> Account:
    email = email or unique_email()
    response = client.post("auth/register", {"email": email, "password": password, "name": name})
    return Account(email, password, session_of(response))


def login(client: RestClient, email: str, password: str = PASSWORD) -> Account:
    return Account(email, password, session_of(client.post("auth/login", {"email": email, "password": password})))


@pytest.fixture
def account(client: RestClient) -> Account:
    return register(client)


@pytest.fixture
def other_account(client: RestClient) -> Account:
    return register(client, name="Someone Else")


@pytest.fixture
def admin(stack: Stack, client: RestClient) -> Account:
    """An admin, created the only way admins are made (never through the API), then logged in
    over REST: in this process for the single layout; by `taskapi dev --split --admin-email`
    in the account service's process for the split (one admin, signed in afresh)."""
    if stack.app is None:
        return login(client, SPLIT_ADMIN)
    email = unique_email("admin")
    stack.app.accounts.create_user(email, PASSWORD, "Admin", role=ROLE_ADMIN)
    return login(client, email)


def request_id() -> str:
    return uuid.uuid4().hex


def assert_error(response: Response, status: int, code: int) -> dict[str, Any]:
    """The response is our JSON error shape with this HTTP status and gRPC code; returns the body."""
    assert response.status == status, response
    assert response.headers.get_content_type() == "application/json", response.headers
    body = json_object(response)
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["details"], list), body
    return body


def detail(body: dict[str, Any], type_name: str) -> dict[str, Any]:
    """The first detail of type `google.rpc.<type_name>`."""
    wanted = f"type.googleapis.com/google.rpc.{type_name}"
    for item in body["details"]:
        if item.get("@type") == wanted:
            assert isinstance(item, dict), item
            return item
    raise AssertionError(f"no {type_name} in details: {body['details']}")


def violated_fields(body: dict[str, Any]) -> set[str]:
    return {violation["field"] for violation in detail(body, "BadRequest")["fieldViolations"]}
