"""Small helpers over the generated stubs for the integration tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from taskapi.v1 import auth_pb2, auth_pb2_grpc, task_pb2_grpc, user_pb2_grpc
from tests.conftest import unique_email

PASSWORD = "correct horse battery"


@dataclass
class User:
    session: auth_pb2.AuthSession
    email: str
    password: str

    @property
    def id(self) -> str:
        return self.session.user.id

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.session.access_token}"),)


class Api:
    def __init__(self, channel: grpc.Channel) -> None:
        self.auth = auth_pb2_grpc.AuthServiceStub(channel)
        self.tasks = task_pb2_grpc.TaskServiceStub(channel)
        self.users = user_pb2_grpc.UserServiceStub(channel)

    def register(self, prefix: str = "user", password: str = PASSWORD) -> User:
        email = unique_email(prefix)
        response = self.auth.Register(
            auth_pb2.RegisterRequest(email=email, password=password, name=prefix.title()), timeout=10
        )
        return User(session=response, email=email, password=password)


def fails(call: Callable[[], object], code: grpc.StatusCode) -> grpc.RpcError:
    """Run `call`, assert it fails with `code`, return the error."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    return info.value


def as_call(error: grpc.RpcError) -> grpc.Call:
    """The error a unary call raises is also its grpc.Call: initial metadata and all."""
    # As `object`: the stubs' RpcError.details (str | None) and Call.details (str) differ, so mypy
    # holds an RpcError that is a Call impossible; grpc's _InactiveRpcError is both.
    call: object = error
    assert isinstance(call, grpc.Call), type(error)
    return call


def headers(reply: grpc.Call | grpc.RpcError) -> dict[str, str]:
    """A reply's initial metadata by key. grpc hands bytes only for `-bin` keys, and we send none."""
    call = reply if isinstance(reply, grpc.Call) else as_call(reply)
    found: dict[str, str] = {}
    for key, value in call.initial_metadata():
        assert isinstance(value, str), (key, value)
        found[key] = value
    return found


# google.rpc's messages ship no type information (pyproject's mypy overrides): Any, honestly.
def error_details(error: grpc.RpcError) -> dict[str, Any]:
    """The google.rpc details of a failed call, by type name."""
    status = rpc_status.from_call(error)
    found: dict[str, Any] = {}
    if status is None:
        return found
    for detail in status.details:
        for kind in (
            error_details_pb2.BadRequest,
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.QuotaFailure,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.DESCRIPTOR.name] = message
    return found


def violated_fields(error: grpc.RpcError) -> set[str]:
    bad_request = error_details(error).get("BadRequest")
    return {v.field for v in bad_request.field_violations} if bad_request else set()
