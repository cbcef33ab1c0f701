"""Tracing in the server and the worker, with a local OTLP collector: a native gRPC caller's
traceparent is continued, the job an RPC's event causes continues that RPC's trace (the
traceparent travels in the outbox and the job), and what a span records stays free of
personal data. The REST path through Envoy is tests/e2e/test_tracing.py."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client import CollectorRegistry

from taskapi.server import store, worker
from taskapi.server.app import App
from taskapi.server.config import Settings, TracingSettings
from taskapi.server.tracing import Tracing
from taskapi.v1 import auth_pb2, task_pb2
from tests.conftest import unique_email
from tests.integration.api import PASSWORD, Api, fails
from tests.support.jobs import job_settings
from tests.support.otlp import ReceivedSpan, Receiver, otlp_receiver
from tests.support.smtp import SmtpSink, running_sink

SERVER, CONSUMER = 2, 5  # OTLP SpanKind
STATUS_ERROR = 2


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with running_sink() as running:
        yield running


@pytest.fixture
def settings(redis_url: str, sink: SmtpSink, receiver: Receiver) -> Settings:
    return job_settings(redis_url, sink.port, tracing=TracingSettings(endpoint=receiver.endpoint, export_delay_ms=100))


@pytest.fixture
def app(settings: Settings) -> Iterator[App]:
    """A traced server with its outbox relay, over an outbox emptied of other tests' events
    (the embedded store is the whole test process's)."""
    store.connect(settings)
    outbox = store.MongoOutbox()
    while events := outbox.pending(1000):
        for event in events:
            outbox.sent(event)
    running = App(settings)
    try:
        yield running
    finally:
        running.close(grace=1.0)


@pytest.fixture
def api(app: App) -> Iterator[Api]:
    replica = app.start_replica(0)
    with grpc.insecure_channel(replica.address) as channel:
        yield Api(channel)


def parent(trace_id: str) -> tuple[tuple[str, str], str]:
    span_id = secrets.token_hex(8)
    return ("traceparent", f"00-{trace_id}-{span_id}-01"), span_id


def test_the_welcome_email_job_continues_the_trace_of_the_register_call(
    api: Api, settings: Settings, sink: SmtpSink, receiver: Receiver
) -> None:
    trace_id = secrets.token_hex(16)
    header, caller_span = parent(trace_id)
    assert settings.tracing is not None
    tracing = Tracing(settings.tracing, component="taskapi-worker")
    try:
        with worker.running_worker(settings, worker.job_metrics(CollectorRegistry()), relay=False, tracing=tracing):
            email = unique_email("traced")
            api.auth.Register(
                auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="Ada"), metadata=(header,), timeout=10
            )
            sink.wait_for(1, to=email)
    finally:
        tracing.shutdown()

    def job_traced(spans: list[ReceivedSpan]) -> bool:
        return any(span.kind == CONSUMER and span.trace_id == trace_id for span in spans)

    spans = [span for span in receiver.wait_for(job_traced) if span.trace_id == trace_id]
    by_id = {span.span_id: span for span in spans}
    register = next(span for span in spans if span.kind == SERVER)
    assert register.name == "taskapi.v1.AuthService/Register" and register.parent_span_id == caller_span
    [job] = [span for span in spans if span.kind == CONSUMER]
    assert job.name == "process welcome_email"
    assert job.attributes["messaging.destination.name"] == "welcome_email"
    # The job's parent is the store write that recorded its event, inside the Register call.
    recorded = by_id[job.parent_span_id]
    assert recorded.name == "store.users.insert" and recorded.parent_span_id == register.span_id
    # The worker's own store and Redis work are inside the job's span, never under the RPC.
    assert any(span.parent_span_id == job.span_id and span.name.startswith("redis ") for span in spans)
    # No address, name or password in any span.
    assert not any(email in str(span.attributes) or PASSWORD in str(span.attributes) for span in spans)


def test_a_native_grpc_caller_s_trace_is_continued_and_an_error_status_recorded(api: Api, receiver: Receiver) -> None:
    user = api.register("native")
    trace_id = secrets.token_hex(16)
    header, caller_span = parent(trace_id)
    fails(
        lambda: api.tasks.GetTask(task_pb2.GetTaskRequest(id="0" * 24), metadata=(*user.auth, header), timeout=5),
        grpc.StatusCode.NOT_FOUND,
    )
    spans = receiver.wait_for(lambda spans: any(span.trace_id == trace_id and span.kind == SERVER for span in spans))
    [server] = [span for span in spans if span.trace_id == trace_id and span.kind == SERVER]
    assert server.name == "taskapi.v1.TaskService/GetTask" and server.parent_span_id == caller_span
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert server.status_code != STATUS_ERROR  # a client's mistake is not the server's error


def test_a_call_without_a_traceparent_starts_a_trace(api: Api, receiver: Receiver) -> None:
    api.register("untraced")
    spans = receiver.wait_for(lambda spans: any(span.name == "taskapi.v1.AuthService/Register" for span in spans))
    server = next(span for span in spans if span.name == "taskapi.v1.AuthService/Register")
    assert server.parent_span_id == "" and len(server.trace_id) == 32
