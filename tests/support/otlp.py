"""A local OTLP/gRPC collector for tests and benchmarks: opentelemetry-proto's TraceService on
a free port, keeping every span it receives (from the Python SDK's exporter and from Envoy's
OpenTelemetry tracer alike) as a `ReceivedSpan`.

    with otlp_receiver() as receiver:
        ...  # point OTEL_EXPORTER_OTLP_ENDPOINT / EdgeConfig.otlp_endpoint at receiver.endpoint
        spans = receiver.wait_for(lambda spans: any(s.name == "..." for s in spans))

`python -m tests.support.otlp` runs one until interrupted and prints its endpoint (for bench/).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 2 server, 3 client, 5 consumer
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    attributes: dict[str, Any] = field(default_factory=dict)
    status_code: int = 0  # 0 unset, 1 ok, 2 error


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in ("string_value", "bool_value", "int_value", "double_value") else str(value)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Condition()

    def Export(  # noqa: N802  # the proto's name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=service,
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            status_code=span.status.code,
                        )
                    )
        with self.lock:
            self.spans.extend(received)
            self.lock.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()


@dataclass
class Receiver:
    port: int
    _collector: _Collector

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._collector.lock:
            return list(self._collector.spans)

    def wait_for(self, done: Callable[[list[ReceivedSpan]], bool], timeout: float = 30.0) -> list[ReceivedSpan]:
        """The spans received so far once `done(spans)` holds; raises after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._collector.lock:
            while not done(list(self._collector.spans)):
                left = deadline - time.monotonic()
                if left <= 0:
                    names = sorted({f"{s.service}:{s.name}" for s in self._collector.spans})
                    raise AssertionError(f"spans not received in {timeout} s; have: {names}")
                self._collector.lock.wait(left)
            return list(self._collector.spans)


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    collector = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]  # generated without types
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Receiver(port, collector)
    finally:
        server.stop(grace=None).wait()


def main() -> None:
    with otlp_receiver() as receiver:
        print(receiver.endpoint, flush=True)
        try:
            sys.stdin.read()  # until stdin closes (the parent process ends or closes the pipe)
        except KeyboardInterrupt:
            pass
        print(len(receiver.spans), "spans", file=sys.stderr)


if __name__ == "__main__":
    main()
