"""Requests the server cannot decode (not protobuf, or a string field that is not UTF-8).

grpcio decodes a request before any interceptor runs and, on failure, answers INTERNAL
itself. The chain's deserializer turns the failure into INVALID_ARGUMENT raised inside the
chain, so such a call is also counted, logged and rate limited like any other. The bytes
are sent as they are (`request_serializer=lambda b: b`), as a broken client would.
"""

from __future__ import annotations

import logging

import grpc
import pytest
from prometheus_client import CollectorRegistry

from taskapi.interceptors.logging import LoggingInterceptor
from taskapi.interceptors.metrics import Metrics, MetricsInterceptor
from taskapi.interceptors.ratelimit import RateLimitInterceptor
from taskapi.server.cache.client import connect_redis
from taskapi.server.domain.limits import RateLimit
from taskapi.v1 import task_pb2
from tests.integration.api import Api, error_details, fails, violated_fields
from tests.integration.chain_server import GET_TASK, LOGIN, make_chain, run_server, unique_prefix
from tests.integration.test_logging import json_lines

CREATE_TASK = "/taskapi.v1.TaskService/CreateTask"
LIST_TASKS = "/taskapi.v1.TaskService/ListTasks"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
NOT_UTF8 = b"\xff\xfe"


def length_delimited(field: int, payload: bytes) -> bytes:
    """One length-delimited field (wire type 2) of a protobuf message, payload under 128 bytes."""
    assert len(payload) < 128
    return bytes([field << 3 | 2, len(payload)]) + payload


def send(channel: grpc.Channel, method: str, data: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return call(data, metadata=metadata, timeout=10)


@pytest.mark.parametrize(
    ("method", "data", "field"),
    [
        (GET_TASK, length_delimited(1, NOT_UTF8), "id"),
        (LIST_TASKS, length_delimited(6, b"a" + NOT_UTF8), "q"),
        (CREATE_TASK, length_delimited(1, length_delimited(2, NOT_UTF8)), "task.title"),
        (
            CREATE_TASK,
            length_delimited(1, length_delimited(2, b"ok") + length_delimited(7, b"a") + length_delimited(7, NOT_UTF8)),
            "task.tags[1]",
        ),
    ],
)
def test_a_string_that_is_not_utf8_is_invalid_argument_naming_the_field(
    channel: grpc.Channel, method: str, data: bytes, field: str
) -> None:
    user = Api(channel).register()
    error = fails(lambda: send(channel, method, data, user.auth), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == {field}
    details = error.details() or ""
    assert "UTF-8" in details and field in details
    assert error_details(error)["ErrorInfo"].reason == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff\xff\xff",  # a varint that never ends
        length_delimited(1, b"abcdef")[:4],  # a field longer than the message
        b"\x0b",  # a group start (wire type 3) that is never closed
    ],
)
@pytest.mark.parametrize(
    ("method", "message_type"),
    [
        (GET_TASK, "taskapi.v1.GetTaskRequest"),
        (LOGIN, "taskapi.v1.LoginRequest"),
        (HEALTH_CHECK, "grpc.health.v1.HealthCheckRequest"),
    ],
)
def test_bytes_that_are_not_protobuf_are_invalid_argument(
    channel: grpc.Channel, method: str, message_type: str, data: bytes
) -> None:
    user = Api(channel).register()
    error = fails(lambda: send(channel, method, data, user.auth), grpc.StatusCode.INVALID_ARGUMENT)
    assert error.details() == f"invalid request: not a valid {message_type} message"
    assert violated_fields(error) == set()


def test_valid_bytes_still_reach_the_handler(channel: grpc.Channel) -> None:
    user = Api(channel).register()
    request = task_pb2.CreateTaskRequest(task=task_pb2.Task(title="raw"))
    created = send(channel, CREATE_TASK, request.SerializeToString(), user.auth)
    assert task_pb2.Task.FromString(created).title == "raw"


def test_undecodable_calls_are_counted_logged_and_rate_limited(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics(CollectorRegistry())
    limiter = RateLimitInterceptor(
        connect_redis(redis_url, 500),
        ip=RateLimit(requests=2, window_seconds=60),
        key_prefix=unique_prefix(),
        metrics=metrics,
    )
    chain = make_chain(metrics=MetricsInterceptor(metrics), logging=LoggingInterceptor(), ratelimit=limiter)
    garbage = b"\xff\xff\xff\xff"
    codes = []
    with caplog.at_level(logging.INFO, "taskapi.interceptors.logging"):
        with run_server(chain) as (_, port), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            for n in range(3):
                metadata = (("authorization", "Bearer user-7"), ("x-request-id", f"undecodable-{n}"))
                with pytest.raises(grpc.RpcError) as info:
                    send(channel, GET_TASK, garbage, metadata)
                codes.append(info.value.code())
    # The third call is over the IP budget of 2: the garbage was counted like any call.
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    labels = {"grpc_type": "unary", "grpc_service": "taskapi.v1.TaskService", "grpc_method": "GetTask"}
    sample = metrics.registry.get_sample_value
    assert sample("grpc_server_started_total", labels) == 3
    assert sample("grpc_server_handled_total", {**labels, "grpc_code": "INVALID_ARGUMENT"}) == 2
    assert sample("grpc_server_handled_total", {**labels, "grpc_code": "RESOURCE_EXHAUSTED"}) == 1
    lines = [line for line in json_lines(caplog) if str(line["request_id"]).startswith("undecodable-")]
    assert [(line["grpc_method"], line["grpc_code"], line["user_id"]) for line in lines] == [
        (GET_TASK, "INVALID_ARGUMENT", "7"),
        (GET_TASK, "INVALID_ARGUMENT", "7"),
        (GET_TASK, "RESOURCE_EXHAUSTED", "7"),
    ]


def test_login_with_garbage_needs_no_token_to_be_refused(channel: grpc.Channel) -> None:
    error = fails(lambda: send(channel, LOGIN, b"\x0a\x01\xff"), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == {"email"}
    assert error.details() == "invalid request: email: must be valid UTF-8"
