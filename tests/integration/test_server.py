"""Server lifecycle and failure behaviour: health, reflection, limits, drains, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import grpc
import pymongo.errors
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from taskapi.server.app import App, run_server
from taskapi.server.dev import free_port
from taskapi.server.domain.limits import RateLimit
from taskapi.server.domain.tasks import parse_order_by
from taskapi.server.store.tasks import MongoTaskStore
from taskapi.v1 import auth_pb2
from taskapi.v1 import task_pb2 as T
from tests.conftest import make_settings, unique_email
from tests.integration.api import PASSWORD, Api, as_call, error_details

SERVICES = ("taskapi.v1.AuthService", "taskapi.v1.TaskService", "taskapi.v1.UserService")


def test_health_reports_every_service(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", *SERVICES):
        assert (
            stub.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
        )


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in next(responses).list_services_response.service}
    assert set(SERVICES) | {"grpc.health.v1.Health"} <= names


def test_oversized_messages_are_refused(channel: grpc.Channel) -> None:
    api = Api(channel)
    user = api.register()
    with pytest.raises(grpc.RpcError) as info:
        api.tasks.CreateTask(
            T.CreateTaskRequest(task=T.Task(title="big", description="x" * (2 << 20))), metadata=user.auth
        )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_bug_is_internal_with_a_generic_message(channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch) -> None:
    """The failure is injected by replacing a store function (there is no real bug to trigger)."""
    api = Api(channel)
    user = api.register()

    def broken(*args: object, **kwargs: object) -> NoReturn:
        raise RuntimeError("secret detail /etc/passwd")

    monkeypatch.setattr(MongoTaskStore, "find", broken)
    with pytest.raises(grpc.RpcError) as info:
        api.tasks.GetTask(T.GetTaskRequest(id="a" * 24), metadata=user.auth)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    details = info.value.details()
    assert details is not None
    assert "secret" not in details and "Traceback" not in details
    assert error_details(info.value)["ErrorInfo"].reason == "INTERNAL"


def test_a_down_store_is_unavailable_not_a_hang(channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver timeout is injected (mongomock cannot go down); the real driver raises the same."""
    api = Api(channel)
    user = api.register()

    def down(*args: object, **kwargs: object) -> NoReturn:
        raise pymongo.errors.ServerSelectionTimeoutError("no servers")

    monkeypatch.setattr(MongoTaskStore, "find", down)
    with pytest.raises(grpc.RpcError) as info:
        api.tasks.GetTask(T.GetTaskRequest(id="b" * 24), metadata=user.auth, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_details(info.value)["RetryInfo"].retry_delay.ToMilliseconds() > 0


def test_drain_finishes_in_flight_calls_and_reports_not_serving(redis_url: str) -> None:
    app = App(make_settings(redis_url, bcrypt_rounds=13))  # a slow register keeps a call in flight
    replica = app.start_replica(0)
    with grpc.insecure_channel(replica.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="taskapi.v1.TaskService")
        )
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        result: dict[str, auth_pb2.AuthSession] = {}

        def register() -> None:
            result["session"] = Api(channel).auth.Register(
                auth_pb2.RegisterRequest(email=unique_email(), password=PASSWORD, name="Slow"), timeout=30
            )

        caller = threading.Thread(target=register)
        caller.start()
        time.sleep(0.2)
        stopper = threading.Thread(target=replica.stop, args=(10.0,))
        stopper.start()
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        caller.join(30)
        stopper.join(30)
    assert result["session"].access_token
    app.close(grace=0)


def test_serve_command_drains_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = os.environ | {
        "TASKAPI_GRPC_PORT": str(port),
        "TASKAPI_WATCH_PORT": "0",  # any free one: a fixed port would collide between processes
        "TASKAPI_METRICS_PORT": "0",
        "REDIS_URL": redis_url,
        "BCRYPT_ROUNDS": "4",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "taskapi.server.cli", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = health_pb2_grpc.HealthStub(channel)
            assert stub.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0
        assert "JWT_SECRET is not set" in output.decode()  # the loud warning of the embedded default
        assert '"stopped"' in output.decode()  # drained and closed before exiting
    finally:
        process.kill()
        process.communicate()


@pytest.mark.skipif(
    not os.environ.get("MONGODB_URI"), reason="needs a real MongoDB (MONGODB_URI): mongomock has no query planner"
)
def test_list_queries_use_indexes(app: App) -> None:
    from bson import ObjectId

    from taskapi.server.domain.ports import TaskQuery
    from taskapi.server.store.documents import TaskDoc

    owner = str(ObjectId())
    queries = [
        (TaskQuery(owner=owner), parse_order_by("")),
        (TaskQuery(owner=owner, status=1), parse_order_by("dueTime")),
        (TaskQuery(owner=owner), parse_order_by("priority desc")),
    ]
    for query, sort in queries:
        plan = str(MongoTaskStore().explain(query, sort)["queryPlanner"]["winningPlan"])
        assert "IXSCAN" in plan and "COLLSCAN" not in plan, (query, plan)
    by_request_id = TaskDoc._get_collection().find({"owner": ObjectId(owner), "request_id": "r"}).explain()
    assert "IXSCAN" in str(by_request_id["queryPlanner"]["winningPlan"])


def test_run_server_context_manager_serves_and_stops(redis_url: str) -> None:
    with run_server(make_settings(redis_url)) as replica:
        with grpc.insecure_channel(replica.address) as channel:
            assert Api(channel).register().id


def test_an_ipv6_proxy_is_trusted_for_the_client_address(redis_url: str) -> None:
    """Envoy may reach a replica over IPv6: its X-Forwarded-For must still name the client."""
    settings = make_settings(redis_url, grpc_host="::1", rate_limit_ip=RateLimit(requests=1, window_seconds=60))
    with run_server(settings) as replica, grpc.insecure_channel(replica.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)  # exempt from limits: only readiness here
        health.Check(health_pb2.HealthCheckRequest())
        auth = Api(channel).auth
        for client in (f"10.9.{os.getpid() % 250}.1", f"10.9.{os.getpid() % 250}.2"):  # one call each: within budget
            request = auth_pb2.LoginRequest(email=unique_email(), password=PASSWORD)
            with pytest.raises(grpc.RpcError) as info:
                auth.Login(request, metadata=(("x-forwarded-for", client),))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # unknown user, not RESOURCE_EXHAUSTED


def test_a_login_shed_under_load_says_it_changed_nothing(app: App, channel: grpc.Channel) -> None:
    """With every password-hashing queue place taken (held by the test), Login is refused
    at once with UNAVAILABLE, RetryInfo, `retry-after` and `x-retry-safe: true` (so balancers
    may retry it)."""
    waiting = app.accounts._hasher._waiting
    held = 0
    while waiting.acquire(blocking=False):
        held += 1
    try:
        with pytest.raises(grpc.RpcError) as info:
            Api(channel).auth.Login(auth_pb2.LoginRequest(email=unique_email(), password=PASSWORD))
    finally:
        for _ in range(held):
            waiting.release()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_details(info.value)["ErrorInfo"].reason == "PASSWORD_HASHING_BUSY"
    headers = tuple(as_call(info.value).initial_metadata())
    assert ("x-retry-safe", "true") in headers
    assert [value for key, value in headers if key == "retry-after"] == ["1"]  # RetryInfo's 1 s
