"""Tracing, wired: the OpenTelemetry SDK built from TracingSettings, and what it traces.

Off by default (Settings.tracing is None without an OTLP endpoint): then nothing here is
built, the chain has no tracing layer, Redis clients are plain and stores unwrapped, so the
request path is what it was (bench/bench_tracing.py measures both). On, each process gets:

- its own TracerProvider (never the global one: tests and `taskapi dev` run several Apps
  in one process), exporting in batches over OTLP/gRPC to the configured endpoint;
- a SERVER span per call (interceptors/tracing.py), CLIENT spans per Redis round trip
  (cache/tracing.py) and per store query (`traced`, below);
- the current `traceparent` written into each outbox event (`current_traceparent`), so the
  job that handles the event continues the trace of the call that recorded it.

The SDK is given every value explicitly: it would otherwise read OTEL_* itself, and the
configuration rule is one reader (Settings). Only W3C Trace Context is propagated.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, SpanKind, Tracer

from taskapi.interceptors.tracing import PROPAGATOR, TracingInterceptor
from taskapi.server.config import TracingSettings

log = logging.getLogger(__name__)
_T = TypeVar("_T")
INSTRUMENTATION = "taskapi"


def sampler(settings: TracingSettings) -> Sampler:
    """OTEL_TRACES_SAMPLER's named samplers (the SDK's own names)."""
    ratio, name = settings.sampler_ratio, settings.sampler
    if name == "always_on":
        return ALWAYS_ON
    if name == "always_off":
        return ALWAYS_OFF
    if name == "traceidratio":
        return TraceIdRatioBased(ratio)
    if name == "parentbased_always_off":
        return ParentBased(ALWAYS_OFF)
    if name == "parentbased_traceidratio":
        return ParentBasedTraceIdRatio(ratio)
    return ParentBased(ALWAYS_ON)


class Tracing:
    """One process's tracer provider and the helpers the wiring hands to each part."""

    def __init__(self, settings: TracingSettings, *, component: str) -> None:
        attributes: dict[str, str] = dict(settings.resource_attributes)
        attributes["service.name"] = settings.service_name
        attributes.setdefault("service.component", component)  # taskapi-server, taskapi-worker
        self.provider = TracerProvider(resource=Resource(attributes), sampler=sampler(settings))
        exporter = OTLPSpanExporter(
            endpoint=settings.endpoint,
            insecure=settings.insecure,
            headers=settings.headers,
            timeout=settings.timeout_seconds,
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=2048,
                schedule_delay_millis=settings.export_delay_ms,
                max_export_batch_size=512,
                export_timeout_millis=settings.timeout_seconds * 1000,
            )
        )
        self.tracer: Tracer = self.provider.get_tracer(INSTRUMENTATION)
        # The endpoint only: OTEL_EXPORTER_OTLP_HEADERS usually holds a credential.
        log.info("tracing on: spans go to %s (sampler %s)", settings.endpoint, settings.sampler)

    def interceptor(self) -> TracingInterceptor:
        return TracingInterceptor(self.tracer)

    def traced(self, target: _T, component: str) -> _T:
        """`target` with every public method call a CLIENT span `{component}.{method}`
        (a store: `db.system.name=mongodb`). Arguments and results are not recorded."""
        return cast(_T, _Traced(target, self.tracer, component))

    @contextmanager
    def job_span(self, job_type: str, event_id: str, traceparent: str) -> Iterator[Span]:
        """A CONSUMER span for one attempt at a job, a child of the span that recorded its
        event (the RPC's), or a new trace when the event carries none."""
        parent = PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
        attributes = {
            "messaging.system": "dramatiq",
            "messaging.operation.type": "process",
            "messaging.destination.name": job_type,
            "messaging.message.id": event_id,
        }
        with self.tracer.start_as_current_span(
            f"process {job_type}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        ) as span:
            yield span

    def shutdown(self) -> None:
        """Send what is buffered, then stop exporting."""
        self.provider.shutdown()


def current_traceparent() -> str:
    """The W3C traceparent of the current span ("" outside one, or when it is not sampled)."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return carrier.get("traceparent", "")


class _Traced:
    """A proxy whose public methods run in a span; everything else is the target's."""

    def __init__(self, target: Any, tracer: Tracer, component: str) -> None:
        self._target = target
        self._tracer = tracer
        self._component = component

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if name.startswith("_") or not callable(attribute):
            return attribute
        wrapped = self._wrap(name, attribute)
        setattr(self, name, wrapped)  # built once per method
        return wrapped

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        span_name = f"{self._component}.{name}"
        attributes = {"db.system.name": "mongodb", "db.system": "mongodb", "db.operation.name": name}

        @functools.wraps(method)
        def traced(*args: Any, **kwargs: Any) -> Any:
            with self._tracer.start_as_current_span(span_name, kind=SpanKind.CLIENT, attributes=attributes):
                return method(*args, **kwargs)

        return traced
