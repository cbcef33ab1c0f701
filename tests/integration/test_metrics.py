"""MetricsInterceptor and the /metrics endpoint, read back over HTTP after known calls."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from taskapi.interceptors.logging import JsonFormatter, LoggingInterceptor
from taskapi.interceptors.metrics import Metrics, MetricsInterceptor, serve_metrics
from taskapi.interceptors.ratelimit import RateLimitInterceptor
from taskapi.server.cache.client import connect_redis
from taskapi.server.domain.limits import RateLimit
from taskapi.v1 import auth_pb2, task_pb2
from tests.integration.chain_server import SLOW_SECONDS, TASK_ID, make_chain, run_server, stubs, unique_prefix

AUTH = (("authorization", "Bearer user-1"),)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def rpc(method: str, **extra: str) -> frozenset[tuple[str, str]]:
    service, name = method.split("/")
    return frozenset({"grpc_type": "unary", "grpc_service": service, "grpc_method": name, **extra}.items())


def test_counts_and_codes_read_back_over_http(redis_url: str) -> None:
    metrics = Metrics(CollectorRegistry())
    limiter = RateLimitInterceptor(
        connect_redis(redis_url, 500),
        ip=RateLimit(requests=4, window_seconds=60),
        key_prefix=unique_prefix(),
        metrics=metrics,
    )
    chain = make_chain(metrics=MetricsInterceptor(metrics), ratelimit=limiter)
    endpoint = serve_metrics(metrics.registry, port=0)
    try:
        assert endpoint.port > 0
        with run_server(chain) as (_, port), stubs(port) as (auth, tasks):
            tasks.GetTask(task_pb2.GetTaskRequest(id=TASK_ID), metadata=AUTH)
            tasks.GetTask(task_pb2.GetTaskRequest(id=TASK_ID), metadata=AUTH)
            auth.Login(auth_pb2.LoginRequest(email="a@example.com", password="x" * 12))
            with pytest.raises(grpc.RpcError) as not_found:
                tasks.DeleteTask(task_pb2.DeleteTaskRequest(id=TASK_ID), metadata=AUTH)
            assert not_found.value.code() is grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as limited:  # the fifth call: rejected, still counted
                tasks.GetTask(task_pb2.GetTaskRequest(id=TASK_ID), metadata=AUTH)
            assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        metrics.cache_hit("task")
        metrics.cache_hit("task")
        metrics.cache_miss("task")
        metrics.cache_error("user")
        samples = scrape(endpoint.port)
    finally:
        endpoint.close()

    get, login, delete = (
        "taskapi.v1.TaskService/GetTask",
        "taskapi.v1.AuthService/Login",
        "taskapi.v1.TaskService/DeleteTask",
    )
    assert samples[("grpc_server_started_total", rpc(get))] == 3
    assert samples[("grpc_server_handled_total", rpc(get, grpc_code="OK"))] == 2
    assert samples[("grpc_server_handled_total", rpc(get, grpc_code="RESOURCE_EXHAUSTED"))] == 1
    assert samples[("grpc_server_handling_seconds_count", rpc(get))] == 3
    assert samples[("grpc_server_handling_seconds_bucket", rpc(get, le="+Inf"))] == 3
    assert samples[("grpc_server_started_total", rpc(login))] == 1
    assert samples[("grpc_server_handled_total", rpc(login, grpc_code="OK"))] == 1
    assert samples[("grpc_server_handled_total", rpc(delete, grpc_code="NOT_FOUND"))] == 1
    handled = [k for k in samples if k[0] == "grpc_server_handled_total"]
    assert len(handled) == 4  # no other codes or methods appeared

    def decisions(decision: str, backend: str) -> float:
        key = frozenset({"decision": decision, "backend": backend}.items())
        return samples[("taskapi_ratelimit_decisions_total", key)]

    assert decisions("allowed", "redis") == 4
    assert decisions("rejected", "redis") == 1
    assert samples[("taskapi_cache_requests_total", frozenset({"cache": "task", "result": "hit"}.items()))] == 2
    assert samples[("taskapi_cache_requests_total", frozenset({"cache": "task", "result": "miss"}.items()))] == 1
    assert samples[("taskapi_cache_requests_total", frozenset({"cache": "user", "result": "error"}.items()))] == 1


def test_a_call_answered_after_its_deadline_counts_as_deadline_exceeded(caplog: pytest.LogCaptureFixture) -> None:
    """The client saw DEADLINE_EXCEEDED, so the server's metrics (and log line) say so too,
    not the OK its handler returned too late: error rates and SLOs count what clients got."""
    metrics = Metrics(CollectorRegistry())
    endpoint = serve_metrics(metrics.registry, port=0)
    try:
        with run_server(make_chain(metrics=MetricsInterceptor(metrics))) as (_, port), stubs(port) as (_, tasks):
            with pytest.raises(grpc.RpcError) as late:
                tasks.ListTasks(task_pb2.ListTasksRequest(), metadata=AUTH, timeout=SLOW_SECONDS / 4)
            assert late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            tasks.ListTasks(task_pb2.ListTasksRequest(), metadata=AUTH, timeout=10 * SLOW_SECONDS)
            time.sleep(SLOW_SECONDS)  # the late call's handler has returned by now
        samples = scrape(endpoint.port)
    finally:
        endpoint.close()
    listed = "taskapi.v1.TaskService/ListTasks"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []  # not a bug, no traceback
    assert samples[("grpc_server_handled_total", rpc(listed, grpc_code="DEADLINE_EXCEEDED"))] == 1
    assert samples[("grpc_server_handled_total", rpc(listed, grpc_code="OK"))] == 1


def test_two_servers_keep_separate_registries() -> None:
    first, second = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    with (
        run_server([MetricsInterceptor(first)]) as (_, port_a),
        run_server([MetricsInterceptor(second)]) as (
            _,
            port_b,
        ),
    ):
        with stubs(port_a) as (_, tasks_a), stubs(port_b) as (_, tasks_b):
            tasks_a.GetTask(task_pb2.GetTaskRequest(id=TASK_ID))
            tasks_a.GetTask(task_pb2.GetTaskRequest(id=TASK_ID))
            tasks_b.GetTask(task_pb2.GetTaskRequest(id=TASK_ID))
    labels = {"grpc_type": "unary", "grpc_service": "taskapi.v1.TaskService", "grpc_method": "GetTask"}
    assert first.registry.get_sample_value("grpc_server_started_total", labels) == 2
    assert second.registry.get_sample_value("grpc_server_started_total", labels) == 1


def test_the_log_line_and_the_metrics_name_the_same_code_for_every_call(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The final code is decided once per call (metrics.call_code) and shared by the log line
    and the counters: OK, an error from the handler, a rate-limit rejection, a refused token,
    and a call whose client gave up before the handler returned all read the same in both."""
    metrics = Metrics(CollectorRegistry())
    limiter = RateLimitInterceptor(
        connect_redis(redis_url, 500),
        user=RateLimit(requests=2, window_seconds=60),
        key_prefix=unique_prefix(),
        metrics=metrics,
    )
    chain = make_chain(metrics=MetricsInterceptor(metrics), logging=LoggingInterceptor(), ratelimit=limiter)
    expected = {
        "get-ok": grpc.StatusCode.OK,
        "delete": grpc.StatusCode.NOT_FOUND,
        "get-limited": grpc.StatusCode.RESOURCE_EXHAUSTED,
        "bad-token": grpc.StatusCode.UNAUTHENTICATED,
        "late": grpc.StatusCode.DEADLINE_EXCEEDED,
    }
    with caplog.at_level(logging.INFO, "taskapi.interceptors.logging"):
        with run_server(chain) as (_, port), stubs(port) as (_, tasks):

            def call(request_id: str, method: Any, request: Any, token: str = "Bearer user-7", **kw: Any) -> None:
                metadata = (("authorization", token), ("x-request-id", request_id))
                try:
                    method(request, metadata=metadata, **kw)
                except grpc.RpcError as error:
                    assert error.code() is expected[request_id], request_id
                else:
                    assert expected[request_id] is grpc.StatusCode.OK, request_id

            get = task_pb2.GetTaskRequest(id=TASK_ID)
            call("get-ok", tasks.GetTask, get)
            call("delete", tasks.DeleteTask, task_pb2.DeleteTaskRequest(id=TASK_ID))
            call("get-limited", tasks.GetTask, get)  # user 7's third call: over its budget of 2
            call("bad-token", tasks.GetTask, get, token="Bearer nobody")
            call("late", tasks.ListTasks, task_pb2.ListTasksRequest(), token="Bearer user-8", timeout=SLOW_SECONDS / 4)
            time.sleep(SLOW_SECONDS)  # the late call's handler has returned by now
    logged = {
        line["request_id"]: line["grpc_code"]
        for line in (json.loads(JsonFormatter().format(r)) for r in caplog.records if hasattr(r, "grpc_code"))
        if line["request_id"] in expected
    }
    assert logged == {request_id: code.name for request_id, code in expected.items()}
    counted = {
        (sample.labels["grpc_method"], sample.labels["grpc_code"]): sample.value
        for family in metrics.registry.collect()
        if family.name == "grpc_server_handled"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert counted == {
        ("GetTask", "OK"): 1,
        ("DeleteTask", "NOT_FOUND"): 1,
        ("GetTask", "RESOURCE_EXHAUSTED"): 1,
        ("GetTask", "UNAUTHENTICATED"): 1,
        ("ListTasks", "DEADLINE_EXCEEDED"): 1,
    }
