"""The interceptor chain, in the one order that is correct, and why.

The first interceptor is the outermost: it sees the call first and its end last.

    1. CallState    binds method, client IP and request id for everything inside, and
                    sends the response metadata (rate-limit headers, x-request-id). It
                    rejects nothing, so nothing it does escapes the counts below.
    2. Metrics      outside everything that can reject, so every call is counted and
                    timed, including calls rejected further in (auth, rate limit,
                    validation); inside CallState, so the call's final status code is
                    computed once and shared by Logging, Tracing and Metrics
                    (metrics.call_code keeps it on the CallState).
    3. Tracing      (only when tracing is on) the call's server span, continuing the
                    caller's traceparent; inside CallState (the span names the request id),
                    outside Logging, so the call's log line carries the span's ids.
    4. Logging      inside CallState (it logs the request id, caller and client IP from
                    it), outside Errors (it logs the final status code).
    5. Errors       turns every exception from below into a status with details, so
                    what is outside it only ever sees a finished status.
    6. Token        verifies the bearer token (no I/O) and names the caller; a bad token
                    is only recorded, so the rate limiter still counts the call by IP.
    7. RateLimit    after Token, because the per-user budget needs the caller; one Redis
                    round trip that also prefetches what Access and the handler read.
    8. Access       rejects a bad token, confirms the session is live (revoked, disabled,
                    current role) from the prefetched read, and applies the access level.
    9. Validation   checks field rules once the caller may call the method at all.

Metrics, Tracing, Logging and RateLimit are optional here so tests can build a chain
without them; Tracing is absent unless tracing is on, so a call pays nothing for it then.

The layers run inside ONE grpc.ServerInterceptor (InterceptorChain), which composes
their handlers once per method rather than once per call: grpc-interceptor's
`intercept_service` builds a new RpcMethodHandler and closure on every call, so eight
registered layers cost eight rebuilds per call, for a result that never changes.
Each layer keeps its one `intercept()` hook, which still runs on every call.

The composed handler also decodes requests without ever failing (interceptors/decoding.py):
bytes that are not a valid request reach the layers as an `UndecodableRequest`, so such a
call is counted, logged and rate limited, and Validation refuses it with INVALID_ARGUMENT
instead of grpcio answering INTERNAL before any layer runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_interceptor import ServerInterceptor

from taskapi.interceptors.auth import AccessInterceptor, AccessPolicy, Authenticator, TokenInterceptor
from taskapi.interceptors.call_state import CallStateInterceptor, Network
from taskapi.interceptors.decoding import tolerant
from taskapi.interceptors.logging import LoggingInterceptor
from taskapi.interceptors.metrics import MetricsInterceptor
from taskapi.interceptors.ratelimit import RateLimitInterceptor
from taskapi.interceptors.status import ErrorInterceptor, Translator
from taskapi.interceptors.tracing import TracingInterceptor
from taskapi.interceptors.validation import ValidationInterceptor


def build_chain(
    *,
    authenticator: Authenticator,
    services: Sequence[ServiceDescriptor],
    trusted_proxies: Iterable[Network],
    translators: Iterable[Translator] = (),
    metrics: MetricsInterceptor | None = None,
    logging: LoggingInterceptor | None = None,
    ratelimit: RateLimitInterceptor | None = None,
    tracing: TracingInterceptor | None = None,
) -> list[grpc.ServerInterceptor]:
    """The chain, ready for `grpc.server(interceptors=...)`: one interceptor running all layers."""
    policy = AccessPolicy(services)
    chain: list[ServerInterceptor | None] = [
        CallStateInterceptor(trusted_proxies),
        metrics,
        tracing,
        logging,
        ErrorInterceptor(translators),
        TokenInterceptor(authenticator, policy),
        ratelimit,
        AccessInterceptor(authenticator, policy),
        ValidationInterceptor(),
    ]
    return [InterceptorChain([interceptor for interceptor in chain if interceptor is not None])]


@dataclass(frozen=True)
class _MethodDetails:
    """What a layer's `intercept_service` may read when its handler is composed.

    Only the method: the composed handler outlives the call it was built for, so it must
    not keep that call's metadata (a bearer token) alive.
    """

    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


class InterceptorChain(grpc.ServerInterceptor):
    """Runs `layers` (outermost first) as one interceptor, composing them once per method.

    Each layer's own `intercept_service` wraps the handler below it, exactly as if the
    layers were registered one by one, but only the first time a method is called: later
    calls reuse the composed handler while the server returns the same handler object
    for the method (it does: handlers are registered once). A layer must therefore make
    per-call decisions in `intercept()`, never in `intercept_service`.
    """

    _MAX_METHODS = 4096  # a bound against a generic handler that accepts any method name

    def __init__(self, layers: Sequence[ServerInterceptor]) -> None:
        self.layers = tuple(layers)
        # method -> (the server's handler, that handler wrapped in every layer)
        self._composed: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    def intercept_service(
        self, continuation: Callable[[Any], grpc.RpcMethodHandler[Any, Any] | None], handler_call_details: Any
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:  # unknown method: grpcio answers UNIMPLEMENTED itself
            return None
        method = handler_call_details.method
        composed = self._composed.get(method)
        if composed is not None and composed[0] is handler:
            return composed[1]
        wrapped = self._compose(method, handler)
        if wrapped is None:
            return None
        if len(self._composed) < self._MAX_METHODS:
            self._composed[method] = (handler, wrapped)  # a racing thread may compose too: same result
        return wrapped

    def _compose(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any] | None:
        details = _MethodDetails(method)
        wrapped: grpc.RpcMethodHandler[Any, Any] | None = handler
        for layer in reversed(self.layers):
            inner = wrapped
            wrapped = layer.intercept_service(lambda _details, inner=inner: inner, details)  # type: ignore[no-untyped-call]
            if wrapped is None:  # a layer declined the method: so does the chain
                return None
        return tolerant(wrapped) if wrapped is not None else None
