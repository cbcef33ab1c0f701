"""Per-call state shared by the interceptors and the handler.

The sync gRPC server runs the interceptor chain and the handler in the same
worker thread, so a ContextVar set by the outermost interceptor is visible to
everything inside the call, and to nothing else.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

ROLE_USER = "USER"
ROLE_ADMIN = "ADMIN"


@dataclass(frozen=True)
class Caller:
    """Who is calling, from a verified access token."""

    user_id: str
    role: str  # ROLE_USER or ROLE_ADMIN
    session_id: str  # the refresh-token family the access token was issued from
    issued_at: int  # the token's `iat`, seconds since the epoch

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN


@dataclass
class CallState:
    """What the chain learns about one call."""

    method: str  # full gRPC method, "/taskapi.v1.TaskService/GetTask"
    client_ip: str
    request_id: str
    caller: Caller | None = None
    # Why the token was refused; raised by the access check, after the rate limiter counted the call.
    auth_error: Exception | None = None
    # Sent as initial metadata before the response (or the error): Envoy turns it
    # into HTTP headers, which trailing metadata on an error never becomes.
    response_metadata: list[tuple[str, str]] = field(default_factory=list)
    # Redis reads done ahead of the handler in the rate limiter's pipeline, keyed by
    # the command tuple; absent when not prefetched (then read on demand).
    prefetched: dict[tuple[str, ...], Any] = field(default_factory=dict)
    response_metadata_sent: bool = False
    # Values worked out once per call by one layer and reused by another (say, the read
    # cache's entry name: the prefetch hook needs it, and so does the handler).
    notes: dict[str, Any] = field(default_factory=dict)

    def send_response_metadata(self, context: Any) -> None:
        """Send `response_metadata` as initial metadata, once (a second send is an error in grpc)."""
        if not self.response_metadata_sent:
            self.response_metadata_sent = True
            context.send_initial_metadata(tuple(self.response_metadata))


_current: ContextVar[CallState | None] = ContextVar("taskapi_call_state", default=None)


def current_call() -> CallState:
    """The state of the call being served; raises outside a call."""
    state = _current.get()
    if state is None:
        raise RuntimeError("no gRPC call in progress")
    return state


def prefetched(command: tuple[str, ...]) -> tuple[bool, Any]:
    """(True, value) when the rate limiter prefetched `command` for this call, else (False, None)."""
    state = _current.get()
    if state is None or command not in state.prefetched:
        return False, None
    return True, state.prefetched[command]


def bind_call(state: CallState) -> object:
    """Bind `state` to this call; pass the returned token to `unbind_call`."""
    return _current.set(state)


def unbind_call(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
