"""Test helpers for the interceptor tests: the production chain in a real gRPC server.

The servicers below subclass the generated base classes and return canned responses:
the interceptors under test run in a real grpc.server on a free port, reached through a
real channel; only the business logic behind them is canned, because it is not under test.
The chain is `interceptors.chain.build_chain`, the production order, with a token-free
`Authenticator` (`Bearer user-<id>` is user <id>) so tests need no JWTs.
Redis comes from tests/conftest.py (`redis_url`, `redis_process`).
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc

from taskapi.interceptors.chain import build_chain
from taskapi.interceptors.logging import LoggingInterceptor
from taskapi.interceptors.metrics import MetricsInterceptor
from taskapi.interceptors.ratelimit import RateLimitInterceptor
from taskapi.interceptors.tracing import TracingInterceptor
from taskapi.server.domain.caller import Caller
from taskapi.server.domain.errors import NotFound, Unauthenticated
from taskapi.v1 import auth_pb2, auth_pb2_grpc, task_pb2, task_pb2_grpc

LOGIN = "/taskapi.v1.AuthService/Login"
SLOW_SECONDS = 0.4  # what the canned ListTasks takes
GET_TASK = "/taskapi.v1.TaskService/GetTask"
TASK_ID = "0123456789abcdef01234567"
SERVICES = (
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    task_pb2.DESCRIPTOR.services_by_name["TaskService"],
)
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def unique_prefix() -> str:
    """Keys of one test never meet another test's, even on a shared Redis."""
    return f"test:{uuid.uuid4().hex}:"


class UserIdAuthenticator:
    """Implements interceptors.auth.Authenticator: the token `user-<id>` is user <id>."""

    def authenticate(self, token: str) -> Caller:
        if not token.startswith("user-"):
            raise Unauthenticated("unknown token")
        return Caller(user_id=token.removeprefix("user-"), role="USER", session_id="s", issued_at=0)

    def confirm(self, caller: Caller) -> Caller:
        return caller


# --- canned servicers -------------------------------------------------------------------


class CannedAuth(auth_pb2_grpc.AuthServiceServicer):
    def Login(self, request: auth_pb2.LoginRequest, context: grpc.ServicerContext) -> auth_pb2.AuthSession:
        return auth_pb2.AuthSession()

    def Register(self, request: auth_pb2.RegisterRequest, context: grpc.ServicerContext) -> auth_pb2.AuthSession:
        return auth_pb2.AuthSession()


class CannedTasks(task_pb2_grpc.TaskServiceServicer):
    def GetTask(self, request: task_pb2.GetTaskRequest, context: grpc.ServicerContext) -> task_pb2.Task:
        return task_pb2.Task(id=request.id, title="canned")

    def DeleteTask(self, request: task_pb2.DeleteTaskRequest, context: grpc.ServicerContext) -> Any:
        raise NotFound("Task not found.")  # an inner interceptor (Errors) aborts with NOT_FOUND

    def ListTasks(self, request: task_pb2.ListTasksRequest, context: grpc.ServicerContext) -> Any:
        time.sleep(SLOW_SECONDS)  # slow on purpose: longer than the deadline the tests give it
        return task_pb2.ListTasksResponse()


def make_chain(
    *,
    metrics: MetricsInterceptor | None = None,
    logging: LoggingInterceptor | None = None,
    ratelimit: RateLimitInterceptor | None = None,
    tracing: TracingInterceptor | None = None,
) -> list[grpc.ServerInterceptor]:
    """The production chain (interceptors/chain.py) with the given optional layers."""
    return build_chain(
        authenticator=UserIdAuthenticator(),
        services=SERVICES,
        trusted_proxies=LOOPBACK,
        metrics=metrics,
        logging=logging,
        ratelimit=ratelimit,
        tracing=tracing,
    )


@contextmanager
def run_server(
    interceptors: Sequence[grpc.ServerInterceptor], *, workers: int = 4
) -> Iterator[tuple[grpc.Server, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), interceptors=list(interceptors))
    # The stubs mark every RPC abstract; grpc's real base classes answer UNIMPLEMENTED for those
    # the canned servicers leave out, which is what these tests want.
    auth_pb2_grpc.add_AuthServiceServicer_to_server(CannedAuth(), server)  # type: ignore[abstract]
    task_pb2_grpc.add_TaskServiceServicer_to_server(CannedTasks(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield server, port
    finally:
        server.stop(grace=None).wait()


@contextmanager
def stubs(port: int) -> Iterator[tuple[auth_pb2_grpc.AuthServiceStub, task_pb2_grpc.TaskServiceStub]]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield auth_pb2_grpc.AuthServiceStub(channel), task_pb2_grpc.TaskServiceStub(channel)
