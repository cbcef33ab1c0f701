"""Tracing end to end: one REST call's trace, Envoy → server → Redis → store, as a local OTLP
collector receives it from Envoy's OpenTelemetry tracer and the server's OTLP exporter; and
the call's JSON log line carrying that trace's ids, with tracing on and with it off."""

from __future__ import annotations

import io
import json
import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from taskapi.interceptors.logging import JsonFormatter
from taskapi.server.config import TracingSettings
from tests.conftest import make_settings
from tests.e2e.conftest import Stack, register, running_stack
from tests.support.otlp import ReceivedSpan, Receiver, otlp_receiver

SERVER, CLIENT = 2, 3  # OTLP SpanKind
CREATE_TASK = "taskapi.v1.TaskService/CreateTask"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced_stack(redis_url: str, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Both ends export to the receiver: the server (OTLP/gRPC exporter, 100 ms batches) and Envoy."""
    tracing = TracingSettings(endpoint=receiver.endpoint, export_delay_ms=100)
    settings = make_settings(redis_url, tracing=tracing)
    workdir = tmp_path_factory.mktemp("traced-edge")
    with running_stack(settings, workdir, otlp_endpoint=tracing.host_port) as stack:
        yield stack


@contextmanager
def call_log_lines() -> Iterator[io.StringIO]:
    """The call log lines (LoggingInterceptor's), JSON-formatted as `taskapi serve` writes them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("taskapi.interceptors.logging")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def line_of(out: io.StringIO, request_id: str) -> dict[str, Any]:
    lines: list[dict[str, Any]] = [json.loads(line) for line in out.getvalue().splitlines()]
    [line] = [line for line in lines if line.get("request_id") == request_id]
    return line


def access_log_trace_id(workdir: Path, request_id: str, timeout: float = 10.0) -> str:
    """The trace id of the request's access-log entry, once Envoy wrote it (it flushes about once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        text = (workdir / "access.log").read_text()
        entries = [json.loads(line) for line in text.splitlines() if request_id in line]
        if entries or time.monotonic() > deadline:
            [entry] = entries
            return str(entry["trace_id"])
        time.sleep(0.1)


def one(spans: list[ReceivedSpan], **match: Any) -> ReceivedSpan:
    found = [span for span in spans if all(getattr(span, key) == value for key, value in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def test_one_rest_call_is_one_trace_from_envoy_through_the_server_to_redis_and_the_store(
    traced_stack: Stack, receiver: Receiver
) -> None:
    account = register(traced_stack.client)
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    with call_log_lines() as out:
        response = traced_stack.client.post(
            "tasks",
            {"title": "traced"},
            token=account.token,
            headers={"traceparent": f"00-{trace_id}-{client_span}-01"},
        )
    assert response.status == 200, response.text

    def complete(spans: list[ReceivedSpan]) -> bool:
        mine = [span for span in spans if span.trace_id == trace_id]
        return {"taskapi-edge", "taskapi"} <= {span.service for span in mine} and any(
            span.name.startswith("store.tasks.") for span in mine
        )

    spans = [span for span in receiver.wait_for(complete) if span.trace_id == trace_id]
    by_id = {span.span_id: span for span in spans}
    # Envoy continues the client's trace: its span is the child of the client's.
    edge = [span for span in spans if span.service == "taskapi-edge"]
    assert edge and any(span.parent_span_id == client_span for span in edge)
    # The server's span is a child of one of Envoy's, named by the RPC.
    server = one(spans, service="taskapi", kind=SERVER)
    assert server.name == CREATE_TASK
    assert by_id[server.parent_span_id].service == "taskapi-edge"
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.method"] == "CreateTask"
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.attributes["taskapi.request_id"] == response.headers["x-request-id"]
    # Inside it: the limiter's one Redis round trip (one EVALSHA, no pipeline on one server), and the store's insert.
    redis = [span for span in spans if span.attributes.get("db.system") == "redis"]
    assert any(span.name == "redis EVALSHA" and span.parent_span_id == server.span_id for span in redis)
    assert all(span.kind == CLIENT for span in redis)
    insert = one(spans, name="store.tasks.insert")
    assert insert.parent_span_id == server.span_id and insert.attributes["db.system"] == "mongodb"
    # No key or value of a command is recorded (keys hold hashed emails and ids).
    assert not any(account.user["id"] in str(span.attributes) for span in spans)
    # The call's log line carries the trace and the server span's ids.
    line = line_of(out, response.headers["x-request-id"])
    assert (line["trace_id"], line["span_id"]) == (trace_id, server.span_id)
    assert access_log_trace_id(traced_stack.workdir, response.headers["x-request-id"]) == trace_id


def test_envoy_starts_a_trace_for_a_call_that_brings_none(traced_stack: Stack, receiver: Receiver) -> None:
    account = register(traced_stack.client)
    response = traced_stack.client.get("tasks", token=account.token)
    assert response.status == 200, response.text
    request_id = response.headers["x-request-id"]
    trace_id = access_log_trace_id(traced_stack.workdir, request_id)

    def both_ends(spans: list[ReceivedSpan]) -> bool:  # Envoy sends its spans every few seconds
        return {"taskapi", "taskapi-edge"} <= {span.service for span in spans if span.trace_id == trace_id}

    spans = receiver.wait_for(both_ends)
    server = one(
        spans,
        kind=SERVER,
        name="taskapi.v1.TaskService/ListTasks",
        trace_id=access_log_trace_id(traced_stack.workdir, request_id),
    )
    assert server.attributes["taskapi.request_id"] == request_id
    parent = [span for span in spans if span.span_id == server.parent_span_id]
    assert parent and parent[0].service == "taskapi-edge"


# The capture is in this process: the single layout's servers run here; the split layout's
# are `taskapi dev --split`'s child processes.
@pytest.mark.parametrize("stack", ["single"], indirect=True)
def test_with_tracing_off_the_log_line_still_carries_envoys_trace_id(stack: Stack) -> None:
    """The default: no collector, nothing exported, but Envoy still starts a trace context and
    the replica's log line names it, so the line and Envoy's access-log entry join."""
    account = register(stack.client)
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    with call_log_lines() as out:
        traced = stack.client.get(
            "tasks", token=account.token, headers={"traceparent": f"00-{trace_id}-{client_span}-01"}
        )
        fresh = stack.client.get("tasks", token=account.token)
    assert traced.status == fresh.status == 200
    line = line_of(out, traced.headers["x-request-id"])
    assert line["trace_id"] == trace_id and len(line["span_id"]) == 16 and line["span_id"] != client_span
    assert access_log_trace_id(stack.workdir, traced.headers["x-request-id"]) == trace_id
    started = line_of(out, fresh.headers["x-request-id"])
    assert len(started["trace_id"]) == 32 and started["trace_id"] != trace_id
    assert access_log_trace_id(stack.workdir, fresh.headers["x-request-id"]) == started["trace_id"]
