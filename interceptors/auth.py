"""Authentication and the access policy, declared once in the protos.

Each RPC carries a `(taskapi.v1.access)` method option: PUBLIC, USER or ADMIN.
The table is read from the service descriptors at start-up, so adding an
admin-only RPC is a one-line proto change, with no check in a handler.

Two interceptors share it, either side of the rate limiter:
- TokenInterceptor verifies the bearer token (CPU only: signature, expiry,
  issuer, audience), so the limiter can count per user;
- AccessInterceptor confirms the session is still live (revocation, disabled
  account, current role) and applies the level. Its Redis read travels in the
  limiter's round trip (prefetch), so the hot path costs one round trip.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_interceptor import ServerInterceptor

from taskapi.interceptors.context import Continuation, current_call
from taskapi.server.domain.caller import Caller
from taskapi.server.domain.errors import PermissionDenied, Unauthenticated
from taskapi.v1 import access_pb2
from taskapi_client.policy import access_level

PUBLIC, USER, ADMIN = access_pb2.ACCESS_LEVEL_PUBLIC, access_pb2.ACCESS_LEVEL_USER, access_pb2.ACCESS_LEVEL_ADMIN
# Infrastructure services every probe and tool must reach without a token.
OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


class Authenticator(Protocol):
    def authenticate(self, token: str) -> Caller:
        """The caller a bearer token names, from the token alone; raises Unauthenticated."""

    def confirm(self, caller: Caller) -> Caller:
        """The caller as of now (live session, current role); raises Unauthenticated."""


class AccessPolicy:
    """`/pkg.Service/Method` -> access level; an undeclared level means USER (the safe default)."""

    def __init__(self, services: Iterable[ServiceDescriptor]) -> None:
        self._table: dict[str, int] = {}
        for service in services:
            for method in service.methods:
                level = access_level(method.GetOptions())
                self._table[f"/{service.full_name}/{method.name}"] = level or USER
        for name in OPEN_SERVICES:
            self._table[f"/{name}/"] = PUBLIC

    def level(self, method_name: str) -> int:
        level = self._table.get(method_name)
        if level is None:
            level = self._table.get(method_name[: method_name.rfind("/") + 1], USER)
        return level


class TokenInterceptor(ServerInterceptor):
    def __init__(self, authenticator: Authenticator, policy: AccessPolicy) -> None:
        self._authenticator = authenticator
        self._policy = policy

    def intercept(self, method: Continuation, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        if self._policy.level(method_name) != PUBLIC:
            state = current_call()
            try:
                state.caller = self._authenticator.authenticate(bearer_token(context.invocation_metadata()))
            except Unauthenticated as error:
                # Not raised here: the rate limiter must count this call by IP first
                # (token guessing is limited too); AccessInterceptor raises it.
                state.auth_error = error
        return method(request, context)


class AccessInterceptor(ServerInterceptor):
    def __init__(self, authenticator: Authenticator, policy: AccessPolicy) -> None:
        self._authenticator = authenticator
        self._policy = policy

    def intercept(self, method: Continuation, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        level = self._policy.level(method_name)
        if level != PUBLIC:
            state = current_call()
            if state.caller is None:  # a bad token, or no TokenInterceptor in the chain: fail closed
                raise state.auth_error or Unauthenticated("a bearer token is required", reason="TOKEN_MISSING")
            state.caller = self._authenticator.confirm(state.caller)
            if level == ADMIN and not state.caller.is_admin:
                raise PermissionDenied("this method is for admins only", reason="ADMIN_ONLY")
        return method(request, context)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The call's access token (unary calls here, streams on the watch server), or UNAUTHENTICATED."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise Unauthenticated(
        "a bearer token is required: send `authorization: Bearer <access token>`", reason="TOKEN_MISSING"
    )
