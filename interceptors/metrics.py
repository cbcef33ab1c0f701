"""Prometheus metrics: gRPC server metrics named as Go's grpc-prometheus, plus ours.

Every collector lives in a `CollectorRegistry` passed in, never the global one, so
several servers in one process (tests, benchmarks) keep separate counts.

    grpc_server_started_total{grpc_type,grpc_service,grpc_method}
    grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}
    grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}   (histogram)
    taskapi_ratelimit_decisions_total{decision="allowed|rejected",backend="redis|local"}
    taskapi_cache_requests_total{cache,result="hit|miss|error"}
    taskapi_password_hashing{state="running|waiting"}     bcrypt work now (the bcrypt queue)
    taskapi_password_hashing_slots                       hashes allowed at once (BCRYPT_CONCURRENCY)
    taskapi_password_hashing_refused_total               calls shed with UNAVAILABLE: the queue was full
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_interceptor import ServerInterceptor, parse_method_name
from grpc_interceptor.exceptions import GrpcException
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from taskapi.interceptors.context import Continuation, current_call_or_none, recorded_code

# Go's prometheus.DefBuckets, which grpc-prometheus uses: dashboards built for Go
# services then read ours unchanged.
GO_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

UNARY = "unary"
CLIENT_STREAM = "client_stream"
SERVER_STREAM = "server_stream"
BIDI_STREAM = "bidi_stream"


def final_code(context: grpc.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    """The status the client will see, seen from an interceptor after the inner call.

    `context.abort` records the code and then raises, so after an exception the recorded
    code wins; an exception without one becomes UNKNOWN in grpcio.
    """
    code = recorded_code(context)
    if code in (None, grpc.StatusCode.OK) and not context.is_active():
        # Ended before the handler did: the client saw its deadline pass (or cancelled),
        # not this OK nor the error grpcio raises for answering a finished call (which would
        # read as UNKNOWN). Logs, metrics and SLOs count what the client got.
        return grpc.StatusCode.DEADLINE_EXCEEDED if _deadline_passed(context) else grpc.StatusCode.CANCELLED
    if exc is None:
        return code or grpc.StatusCode.OK
    if code is not None and code is not grpc.StatusCode.OK:
        return code
    if isinstance(exc, GrpcException):
        return exc.status_code
    return grpc.StatusCode.UNKNOWN


def call_code(context: grpc.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    """`final_code`, computed once per call: the layers that record a call's outcome
    (Logging, Tracing, Metrics, innermost first) each ask when the call ends below them;
    the first answer is kept on the call's CallState and reused by the others, for as long
    as they see the same exception (or none). Outside a bound call it is `final_code`.
    """
    state = current_call_or_none()
    if state is None:
        return final_code(context, exc)
    known = state.outcome
    if known is not None and known[0] is exc:
        return known[1]
    code = final_code(context, exc)
    state.outcome = (exc, code)
    return code


def _deadline_passed(context: grpc.ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


class Metrics:
    """The collectors, and the small API the rest of the service records through."""

    def __init__(self, registry: CollectorRegistry, *, buckets: tuple[float, ...] = GO_DEFAULT_BUCKETS) -> None:
        self.registry = registry
        rpc_labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            rpc_labels,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            [*rpc_labels, "grpc_code"],
            registry=registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            # grpc-prometheus's own help text, so the two read the same in dashboards.
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            rpc_labels,
            buckets=buckets,
            registry=registry,
        )
        self.ratelimit_decisions = Counter(
            "taskapi_ratelimit_decisions",
            "Rate-limit decisions, by outcome and by where they were made.",
            ["decision", "backend"],
            registry=registry,
        )
        self.cache_requests = Counter(
            "taskapi_cache_requests",
            "Cache lookups by cache and result.",
            ["cache", "result"],
            registry=registry,
        )
        # Label children by label values: `.labels()` takes a lock and builds a tuple on every
        # call; these few combinations (2 x 2 decisions, caches x 3 results) are resolved once.
        self._children: dict[tuple[Counter, str, str], Any] = {}

    def _child(self, counter: Counter, first: str, second: str) -> Any:
        key = (counter, first, second)
        child = self._children.get(key)
        if child is None:  # a racing thread resolves the same child
            child = self._children[key] = counter.labels(first, second)
        return child

    def measure_password_hashing(self, load: Callable[[], tuple[int, int, int]], slots: int) -> None:
        """Read (running, waiting, refused) from `load` at every scrape (the PasswordHasher's)."""
        self.registry.register(_PasswordHashing(load, slots))

    def cache_hit(self, cache: str) -> None:
        self._child(self.cache_requests, cache, "hit").inc()

    def cache_miss(self, cache: str) -> None:
        self._child(self.cache_requests, cache, "miss").inc()

    def cache_error(self, cache: str) -> None:
        self._child(self.cache_requests, cache, "error").inc()

    def ratelimit_decision(self, *, allowed: bool, backend: str) -> None:
        self._child(self.ratelimit_decisions, "allowed" if allowed else "rejected", backend).inc()


class _PasswordHashing(Collector):
    def __init__(self, load: Callable[[], tuple[int, int, int]], slots: int) -> None:
        self._load = load
        self._slots = slots

    def collect(self) -> Iterator[Metric]:
        running, waiting, refused = self._load()
        now = GaugeMetricFamily(
            "taskapi_password_hashing", "Password hashes (bcrypt) running, and waiting for a slot.", labels=["state"]
        )
        now.add_metric(["running"], running)
        now.add_metric(["waiting"], waiting)
        yield now
        yield GaugeMetricFamily(
            "taskapi_password_hashing_slots", "Password hashes allowed to run at once.", value=self._slots
        )
        yield CounterMetricFamily(
            "taskapi_password_hashing_refused",
            "Calls refused with UNAVAILABLE because the password-hashing queue was full.",
            value=refused,
        )


@dataclass(frozen=True)
class _MethodMetrics:
    """Label children resolved once per method: `.labels()` takes a lock and a dict lookup."""

    grpc_type: str
    service: str
    method: str
    started: Any
    handling: Any
    handled: Any  # the grpc_server_handled counter, for children by code
    # grpc_code -> child, filled as codes occur (at most the 17 status codes)
    handled_by_code: dict[grpc.StatusCode, Any] = field(default_factory=dict)

    def handled_child(self, code: grpc.StatusCode) -> Any:
        child = self.handled_by_code.get(code)
        if child is None:  # first call ending with this code; a racing thread gets the same child
            child = self.handled.labels(self.grpc_type, self.service, self.method, code.name)
            self.handled_by_code[code] = child
        return child


class MetricsInterceptor(ServerInterceptor):
    """Counts every call, including those the inner ones reject (just inside CallState)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._methods: dict[str, _MethodMetrics] = {}  # bounded by the methods served
        self._lock = threading.Lock()

    def intercept_service(
        self, continuation: Callable[[Any], grpc.RpcMethodHandler[Any, Any] | None], handler_call_details: Any
    ) -> Any:
        # The base class hides the handler, but grpc_type (unary or streaming) lives only
        # there; look at it once per method, then let the base class do the wrapping.
        handler = continuation(handler_call_details)
        if handler is None:  # unknown method: grpcio answers UNIMPLEMENTED itself
            return None
        name = handler_call_details.method
        if name not in self._methods:
            self._register(name, _grpc_type(handler))
        return super().intercept_service(lambda _details: handler, handler_call_details)  # type: ignore[no-untyped-call]

    def _register(self, name: str, grpc_type: str) -> None:
        parsed = parse_method_name(name)
        service, method = parsed.fully_qualified_service, parsed.method
        with self._lock:
            self._methods[name] = _MethodMetrics(
                grpc_type,
                service,
                method,
                self._metrics.started.labels(grpc_type, service, method),
                self._metrics.handling_seconds.labels(grpc_type, service, method),
                self._metrics.handled,
            )

    def intercept(self, method: Continuation, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        m = self._methods[method_name]
        m.started.inc()
        start = time.perf_counter()
        try:
            response = method(request, context)
        except BaseException as exc:
            self._done(m, start, call_code(context, exc))
            raise
        if m.grpc_type in (SERVER_STREAM, BIDI_STREAM):
            return self._stream(m, start, response, context)
        self._done(m, start, call_code(context, None))
        return response

    def _stream(
        self, m: _MethodMetrics, start: float, responses: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        # A streaming call ends when its iterator does, not when the handler returns it.
        try:
            yield from responses
        except BaseException as exc:
            self._done(m, start, call_code(context, exc))
            raise
        self._done(m, start, call_code(context, None))

    def _done(self, m: _MethodMetrics, start: float, code: grpc.StatusCode) -> None:
        m.handling.observe(time.perf_counter() - start)
        m.handled_child(code).inc()


def _grpc_type(handler: grpc.RpcMethodHandler[Any, Any]) -> str:
    if handler.request_streaming and handler.response_streaming:
        return BIDI_STREAM
    if handler.request_streaming:
        return CLIENT_STREAM
    if handler.response_streaming:
        return SERVER_STREAM
    return UNARY


@dataclass(frozen=True)
class MetricsEndpoint:
    """The `/metrics` HTTP server; `port` is the real one when 0 was asked for."""

    server: WSGIServer
    thread: threading.Thread
    port: int

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(registry: CollectorRegistry, *, port: int = 0, addr: str = "127.0.0.1") -> MetricsEndpoint:
    """Serve Prometheus text for `registry` on its own port, in a daemon thread."""
    server, thread = start_http_server(port, addr, registry=registry)
    return MetricsEndpoint(server, thread, server.server_port)
