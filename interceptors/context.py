"""Per-call state shared by the interceptors and the servicers.

The sync gRPC server runs the interceptor chain and the handler in the same worker
thread, so a ContextVar set by the outermost interceptor (CallState) is visible to
everything inside the call, and to nothing else; it is reset when the call ends.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

import grpc

from taskapi.interceptors.initial_metadata import defer as defer_initial_metadata
from taskapi.server.domain.caller import Caller
from taskapi.server.domain.errors import Unauthenticated


@dataclass
class CallState:
    """What the chain learns about one call."""

    method: str  # full gRPC method, "/taskapi.v1.TaskService/GetTask"
    client_ip: str
    request_id: str
    # The caller's W3C `traceparent`, as sent (Envoy always sends one): log lines carry its
    # trace id even when this server does not trace (interceptors/logging.py).
    traceparent: str | None = None
    traced: bool = False  # the tracing layer runs this call in a span (tracing on)
    caller: Caller | None = None
    # Why the token was refused; raised by the access check, after the rate limiter counted the call.
    auth_error: Exception | None = None
    # Sent as initial metadata, with the response (or the error): Envoy turns it
    # into HTTP headers, which trailing metadata on an error never becomes.
    response_metadata: list[tuple[str, str]] = field(default_factory=list)
    response_metadata_sent: bool = False
    # (the exception the call ended with below a recording layer, or None; the status code
    # the client sees): computed once by the innermost layer that records it (metrics.call_code).
    outcome: tuple[BaseException | None, grpc.StatusCode] | None = None

    def send_response_metadata(self, context: Any) -> None:
        """Send `response_metadata` as initial metadata, once (a second send is an error in grpc),
        with the response or the error rather than in a batch of its own (initial_metadata.py)."""
        if not self.response_metadata_sent:
            self.response_metadata_sent = True
            defer_initial_metadata(context, tuple(self.response_metadata))


# What an interceptor's `intercept` calls to run the rest of the chain and the handler.
Continuation = Callable[[Any, grpc.ServicerContext], Any]


def recorded_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The status code set on `context` so far (grpcio's `code()`, which types-grpcio lacks)."""
    code = context.code()  # type: ignore[attr-defined]
    return code if isinstance(code, grpc.StatusCode) else None


_current: ContextVar[CallState | None] = ContextVar("taskapi_call_state", default=None)


def current_call() -> CallState:
    """The state of the call being served; raises outside a call."""
    state = _current.get()
    if state is None:
        raise RuntimeError("no gRPC call in progress")
    return state


def current_call_or_none() -> CallState | None:
    """The state of the call being served, or None outside a call (a log line at start-up)."""
    return _current.get()


def current_caller() -> Caller:
    """The verified caller of this call. Servicers of non-public RPCs call it: the access
    check has run by then, so a missing caller means the chain is miswired; refuse."""
    caller = current_call().caller
    if caller is None:
        raise Unauthenticated("a bearer token is required", reason="TOKEN_MISSING")
    return caller


def bind_call(state: CallState) -> Token[CallState | None]:
    """Bind `state` to this call; pass the returned token to `unbind_call`."""
    return _current.set(state)


def unbind_call(token: Token[CallState | None]) -> None:
    _current.reset(token)
