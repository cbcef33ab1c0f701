"""LoggingInterceptor's one line per call (health checks at DEBUG), JsonFormatter and TextFormatter."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from taskapi.interceptors.logging import JsonFormatter, LoggingInterceptor, TextFormatter
from taskapi.interceptors.metrics import Metrics, MetricsInterceptor
from taskapi.interceptors.ratelimit import RateLimitInterceptor
from taskapi.server.app import App
from taskapi.server.cache.client import connect_redis
from taskapi.server.config import Settings
from taskapi.server.domain.limits import RateLimit
from taskapi.v1 import auth_pb2, task_pb2
from tests.integration.chain_server import TASK_ID, make_chain, run_server, stubs, unique_prefix

PASSWORD = "hunter2-very-secret"
EMAIL = "carol@example.com"
TOKEN = "Bearer user-42"


def json_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records if r.name == "taskapi.interceptors.logging"]
    for line in lines:
        assert PASSWORD not in line and EMAIL not in line and "user-42" not in line and "Bearer" not in line
    return [json.loads(line) for line in lines]


def test_one_json_line_per_call_without_secrets(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(CollectorRegistry())
    limiter = RateLimitInterceptor(
        connect_redis(redis_url, 500),
        auth=RateLimit(requests=1, window_seconds=60),
        key_prefix=unique_prefix(),
        metrics=metrics,
    )
    chain = make_chain(metrics=MetricsInterceptor(metrics), logging=LoggingInterceptor(), ratelimit=limiter)
    login = auth_pb2.LoginRequest(email=EMAIL, password=PASSWORD)
    with caplog.at_level(logging.INFO, "taskapi.interceptors.logging"):
        with run_server(chain) as (_, port), stubs(port) as (auth, tasks):
            tasks.GetTask(
                task_pb2.GetTaskRequest(id=TASK_ID),
                metadata=(("authorization", TOKEN), ("x-request-id", "req-1")),
            )
            auth.Login(login, metadata=(("x-request-id", "req-2"), ("x-forwarded-for", "10.1.2.3")))
            with pytest.raises(grpc.RpcError) as err:  # over the Login budget of 1 per IP
                auth.Login(login, metadata=(("x-request-id", "req-3"), ("x-forwarded-for", "10.1.2.3")))
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED

    # Only this test's calls: session-wide servers (e2e stacks under health checks) log too.
    lines = [line for line in json_lines(caplog) if line["request_id"] in ("req-1", "req-2", "req-3")]
    assert [(line["request_id"], line["grpc_method"], line["grpc_code"]) for line in lines] == [
        ("req-1", "/taskapi.v1.TaskService/GetTask", "OK"),
        ("req-2", "/taskapi.v1.AuthService/Login", "OK"),
        ("req-3", "/taskapi.v1.AuthService/Login", "RESOURCE_EXHAUSTED"),
    ]
    assert lines[0]["user_id"] == "42"
    assert lines[1]["user_id"] is None
    assert [line["client_ip"] for line in lines] == ["127.0.0.1", "10.1.2.3", "10.1.2.3"]
    assert all(isinstance(line["duration_ms"], float) for line in lines)
    assert {line["level"] for line in lines} == {"INFO"}
    # the rejected call is also counted by the outer metrics interceptor
    labels = {"grpc_type": "unary", "grpc_service": "taskapi.v1.AuthService", "grpc_method": "Login"}
    assert (
        metrics.registry.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": "RESOURCE_EXHAUSTED"})
        == 1
    )


def test_formatter_renders_extras_and_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("once",), exc_info)
    record.request_id = "req-9"
    record.odd = object()  # not JSON-serialisable: rendered with str(), never raises
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed once"
    assert line["level"] == "ERROR"
    assert line["request_id"] == "req-9"
    assert "ValueError: boom" in line["exc_info"]
    assert line["odd"].startswith("<object object")


def test_health_checks_and_reflection_are_counted_not_logged_at_info(
    settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    app = App(settings_factory())
    try:
        replica = app.start_replica(0)
        with caplog.at_level(logging.DEBUG, "taskapi.interceptors.logging"):
            with grpc.insecure_channel(replica.address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                for _ in range(3):  # what Envoy sends every replica every 2 s
                    assert (
                        health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
                    )
                listed = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                )
                assert any(s.name == "taskapi.v1.TaskService" for s in next(listed).list_services_response.service)
        handled = app.metrics.registry.get_sample_value(
            "grpc_server_handled_total",
            {"grpc_type": "unary", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Check", "grpc_code": "OK"},
        )
    finally:
        app.close(grace=1.0)
    assert handled == 3
    probes = [
        r for r in caplog.records if getattr(r, "grpc_method", "").startswith(("/grpc.health.", "/grpc.reflection."))
    ]
    # Any server in this process (the e2e stacks are health-checked too) logs them at DEBUG only.
    assert probes and {r.levelno for r in probes} == {logging.DEBUG}


def test_text_formatter_renders_a_call_as_one_readable_line() -> None:
    call = logging.LogRecord(
        "taskapi.interceptors.logging", logging.INFO, __file__, 0, "%s %s %.1f ms", ("m", "OK", 3.14), None
    )
    call.__dict__.update(
        grpc_method="/taskapi.v1.TaskService/GetTask",
        grpc_code="OK",
        duration_ms=3.14159,
        request_id="req-1",
        user_id="42",
        client_ip="127.0.0.1",
    )
    line = TextFormatter().format(call)
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} /taskapi\.v1\.TaskService/GetTask OK 3\.1ms user=42 req=req-1 ip=127\.0\.0\.1", line
    ), line

    call.levelno, call.levelname, call.grpc_code, call.user_id = logging.ERROR, "ERROR", "INTERNAL", None
    assert " ERROR /taskapi.v1.TaskService/GetTask INTERNAL 3.1ms user=- req=req-1 " in TextFormatter().format(call)

    other = logging.LogRecord("server.app", logging.WARNING, __file__, 0, "replica %s is %s", ("r1", "slow"), None)
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} WARNING server\.app: replica r1 is slow", TextFormatter().format(other))
