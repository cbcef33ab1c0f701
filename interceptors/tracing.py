"""Tracing: one server span per call, continuing the caller's W3C trace context.

The caller's `traceparent` (and `tracestate`) arrive as gRPC metadata: from Envoy, which
generates one when a client sent none, or from a native client. The span is the parent of
everything the call does (the Redis round trip, store queries, the outbox event it records,
and so the job that handles it). It follows OpenTelemetry's RPC conventions: named by the
full method, `rpc.system=grpc`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`; a
status that is the server's fault (UNKNOWN, INTERNAL, ...) marks the span an error.

This layer is in the chain only when tracing is on (interceptors/chain.py): off, a call
pays nothing for it. Nothing from the request message and no other metadata is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from grpc_interceptor import ServerInterceptor, parse_method_name
from opentelemetry import context as otel_context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from taskapi.interceptors.context import Continuation, current_call
from taskapi.interceptors.metrics import call_code

# The server's fault: what OpenTelemetry's gRPC conventions count as a server span error.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
PROPAGATOR = TraceContextTextMapPropagator()


class _MetadataGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if value is not None else None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _MetadataGetter()


class TracingInterceptor(ServerInterceptor):
    """Runs the call inside a SERVER span whose parent is the caller's trace context.

    Sits inside CallState (the span gets the request id) and outside Logging, so the
    call's log line is written inside the span and carries its ids.
    """

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._names: dict[str, tuple[str, str]] = {}  # method -> (service, method), bounded by the methods served

    def intercept(self, method: Continuation, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        carrier = {
            key: value
            for key, value in context.invocation_metadata()
            if key in ("traceparent", "tracestate") and isinstance(value, str)
        }
        parent = PROPAGATOR.extract(carrier, getter=_GETTER) if carrier else None
        service, rpc = self._names.get(method_name) or self._name(method_name)
        span = self._tracer.start_span(
            method_name.lstrip("/"),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc},
        )
        try:
            state = current_call()
        except RuntimeError:
            pass
        else:
            state.traced = True
            span.set_attribute("taskapi.request_id", state.request_id)
        token = otel_context.attach(set_span_in_context(span))
        try:
            response = method(request, context)
        except BaseException as exc:
            self._finish(span, call_code(context, exc), exc)
            raise
        else:
            self._finish(span, call_code(context, None), None)
            return response
        finally:
            otel_context.detach(token)
            span.end()

    def _finish(self, span: Span, code: grpc.StatusCode, exc: BaseException | None) -> None:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, code.name))
            if exc is not None:
                span.record_exception(exc)

    def _name(self, method_name: str) -> tuple[str, str]:
        parsed = parse_method_name(method_name)
        names = (parsed.fully_qualified_service, parsed.method)
        self._names[method_name] = names  # a racing thread stores the same value
        return names
