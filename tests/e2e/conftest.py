"""Fixtures for the end-to-end tests: real Envoy → real replicas → real Redis.

One stack (an App with two replicas behind one Envoy) serves the whole session;
tests that break a stack on purpose (stopping a replica, tight rate limits) start
their own with `running_stack`.
"""

from __future__ import annotations

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
from taskapi.server.edge import Envoy
from taskapi.server.store import audit
from taskapi.server.store.audit import StoreQuery
from tests.conftest import make_settings, unique_email
from tests.support.edge import Response, RestClient, running_edge

PASSWORD = "correct horse battery"
ALLOWED_ORIGIN = "http://app.example.com"  # tests.support.edge configures exactly this one


@dataclass
class Stack:
    app: App
    replicas: list[Replica]
    envoy: Envoy
    client: RestClient
    workdir: Path


@contextmanager
def running_stack(settings: Settings, workdir: Path, *, replicas: int = 2, **edge: Any) -> Iterator[Stack]:
    """An App with `replicas` replicas behind a real Envoy (`edge`: EdgeConfig fields); everything
    stopped on exit."""
    app = App(settings)
    try:
        started = [app.start_replica(0) for _ in range(replicas)]
        upstreams = [(settings.grpc_host, replica.port) for replica in started]
        with running_edge(upstreams, workdir, **edge) as envoy:
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


@pytest.fixture(scope="session")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
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
    """An admin, created the only way admins are made (never through the API), then logged in over REST."""
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
