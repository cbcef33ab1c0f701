"""What Envoy itself does at the edge: its own errors in our JSON shape, CORS, limits,
request ids, headers, gRPC passthrough, and a config that `envoy --mode validate` accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from taskapi.server import edge
from taskapi.v1 import auth_pb2, auth_pb2_grpc, task_pb2, task_pb2_grpc
from tests.conftest import unique_email
from tests.e2e.conftest import ALLOWED_ORIGIN, PASSWORD, Account, Stack, assert_error
from tests.support.edge import RestClient, edge_config, upstream_requests

INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, UNIMPLEMENTED = 3, 5, 8, 12


def test_rendered_config_passes_envoy_validate(tmp_path: Path) -> None:
    config = edge_config([("127.0.0.1", 50051), ("127.0.0.1", 50052)], cors_origins=("*",))
    result = edge.validate(edge.write(config, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


def test_rendered_config_with_an_otlp_collector_passes_envoy_validate(tmp_path: Path) -> None:
    config = edge_config([("127.0.0.1", 50051)], otlp_endpoint=("collector.example.com", 4317))
    path = edge.write(config, tmp_path)
    result = edge.validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    rendered = yaml.safe_load(path.read_text())
    clusters = {cluster["name"]: cluster for cluster in rendered["static_resources"]["clusters"]}
    assert "otlp_disabled" not in clusters
    address = clusters["otlp_collector"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "collector.example.com", "port_value": 4317}
    for listener in rendered["static_resources"]["listeners"]:
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        assert manager["tracing"]["random_sampling"]["value"] == 100.0
        tracer = manager["tracing"]["provider"]["typed_config"]
        assert tracer["grpc_service"]["envoy_grpc"]["cluster_name"] == "otlp_collector"


def test_without_a_collector_envoy_traces_unsampled_and_exports_nowhere() -> None:
    rendered = yaml.safe_load(edge.render(edge_config([("127.0.0.1", 1)])))
    clusters = {cluster["name"]: cluster for cluster in rendered["static_resources"]["clusters"]}
    assert "otlp_collector" not in clusters and clusters["otlp_disabled"]["load_assignment"]["endpoints"] == []
    for listener in rendered["static_resources"]["listeners"]:
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        assert manager["tracing"]["random_sampling"]["value"] == 0.0
        assert manager["tracing"]["provider"]["typed_config"]["http_service"]["http_uri"]["cluster"] == "otlp_disabled"


def test_without_a_trace_context_envoy_has_no_tracer(tmp_path: Path) -> None:
    path = edge.write(edge_config([("127.0.0.1", 1)], trace_context=False), tmp_path)
    assert edge.validate(path).returncode == 0
    rendered = yaml.safe_load(path.read_text())
    assert [cluster["name"] for cluster in rendered["static_resources"]["clusters"]] == [edge.CLUSTER]
    for listener in rendered["static_resources"]["listeners"]:
        assert "tracing" not in listener["filter_chains"][0]["filters"][0]["typed_config"]


def test_rendered_config_keeps_admin_on_loopback(tmp_path: Path) -> None:
    rendered = edge.render(edge_config([("127.0.0.1", 1)], listen_address="0.0.0.0"))
    admin_block = rendered.split("static_resources:")[0]
    assert "address: 127.0.0.1" in admin_block
    assert rendered.index("admin:") < rendered.index("listeners:") < rendered.index("clusters:")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/nope"),
        ("PUT", "/api/v1/nope"),
        ("GET", "/api/v2/tasks"),
        ("GET", "/"),
        ("GET", "/api/v1/tasks/a/b"),
    ],
)
def test_unmapped_path_is_404_json(client: RestClient, account: Account, method: str, path: str) -> None:
    body = assert_error(client.request(method, path, token=account.token), 404, NOT_FOUND)
    assert body["details"] == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/api/v1/tasks", "GET, POST"),
        ("DELETE", "/api/v1/tasks?pageSize=1", "GET, POST"),
        ("POST", "/api/v1/tasks/6b0ad6a03e182fdd97bd66d1", "GET, PATCH, DELETE"),
        ("TRACE", "/api/v1/auth/login", "POST"),
        ("GET", "/api/v1/users/me:changePassword", "POST"),
        ("OPTIONS", "/api/v1/users", "GET"),  # not a CORS preflight (no Origin)
        ("QUERY", "/api/v1/tasks", "GET, POST"),  # a method the HTTP/1 codec does not know (400 inside Envoy)
        # A literal path that a template also matches: DeleteUser would get the id "me".
        ("DELETE", "/api/v1/users/me", "GET, PATCH"),
    ],
)
def test_known_path_with_another_method_is_405_with_allow(
    stack: Stack, client: RestClient, account: Account, method: str, path: str, allow: str
) -> None:
    before = upstream_requests(stack.envoy)
    response = client.request(method, path, token=account.token)
    body = assert_error(response, 405, UNIMPLEMENTED)
    assert response.headers["allow"] == allow
    assert body["message"] == f"{method} is not allowed on this path; it allows {allow}"
    assert upstream_requests(stack.envoy) == before  # answered at the edge


def test_unknown_query_parameter_is_400_json(client: RestClient, account: Account) -> None:
    body = assert_error(client.get("tasks", token=account.token, query={"colour": "red"}), 400, INVALID_ARGUMENT)
    assert "colour" in body["message"]


def test_query_parameters_bind_in_either_spelling(client: RestClient, account: Account) -> None:
    for name in ("pageSize", "page_size"):
        assert client.get("tasks", token=account.token, query={name: 1}).status == 200


def test_body_over_one_mebibyte_is_413_json(client: RestClient, account: Account) -> None:
    huge = {"title": "big", "description": "x" * (2 << 20)}
    assert_error(client.post("tasks", huge, token=account.token), 413, RESOURCE_EXHAUSTED)


def test_cors_preflight_from_an_allowed_origin(client: RestClient) -> None:
    response = client.request(
        "OPTIONS",
        "tasks",
        headers={
            "origin": ALLOWED_ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert response.status in (200, 204), response
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "PATCH" in response.headers["access-control-allow-methods"]
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers


def test_cors_preflight_from_another_origin_gets_no_grant(client: RestClient) -> None:
    response = client.request(
        "OPTIONS",
        "tasks",
        headers={"origin": "http://evil.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in response.headers


def test_cors_headers_on_actual_requests(client: RestClient, account: Account) -> None:
    allowed = client.get("users/me", token=account.token, headers={"origin": ALLOWED_ORIGIN})
    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    exposed = allowed.headers["access-control-expose-headers"].lower()
    assert {"ratelimit", "ratelimit-policy", "retry-after", "x-request-id"} <= {h.strip() for h in exposed.split(",")}
    other = client.get("users/me", token=account.token, headers={"origin": "http://evil.example"})
    assert other.status == 200
    assert "access-control-allow-origin" not in other.headers


def test_request_id_is_generated_at_the_edge(client: RestClient, account: Account) -> None:
    first = client.get("users/me", token=account.token)
    second = client.get("users/me", token=account.token, headers={"x-request-id": "client-chosen"})
    assert first.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert second.headers["x-request-id"] != "client-chosen"  # never trusted from outside


def test_rest_responses_carry_no_grpc_or_envoy_leftovers(client: RestClient, account: Account) -> None:
    for response in (
        client.get("users/me", token=account.token),
        client.get("tasks/bad-id", token=account.token),
    ):
        assert response.headers["content-type"] == "application/json"
        assert response.headers["server"] == "taskapi"
        leaked = [h for h in response.headers if h.lower().startswith(("grpc-", "x-envoy-"))]
        assert leaked == [], leaked


def test_rate_limit_headers_on_allowed_calls(client: RestClient, account: Account) -> None:
    response = client.get("tasks", token=account.token)
    assert response.status == 200
    assert response.headers["ratelimit-policy"], response.headers
    assert "remaining=" in response.headers["ratelimit"], response.headers


def test_access_log_is_json_with_the_rest_path(stack: Stack, client: RestClient, account: Account) -> None:
    import time

    rid = client.get("tasks", token=account.token, query={"pageSize": 3}).headers["x-request-id"]
    log_path = stack.access_log_path
    entry = None
    for _ in range(100):  # Envoy flushes its access log about once a second
        lines = log_path.read_text().splitlines() if log_path.exists() else []
        matches = [json.loads(line) for line in lines if rid in line]
        if matches:
            entry = matches[0]
            break
        time.sleep(0.1)
    assert entry is not None, "request not in the access log"
    assert entry["path"] == "/api/v1/tasks?pageSize=3"
    assert entry["method"] == "GET"
    assert entry["rpc"] == "/taskapi.v1.TaskService/ListTasks"
    assert entry["status"] == 200
    assert entry["grpc_status"] == "OK"


def test_grpc_through_envoy(stack: Stack) -> None:
    with grpc.insecure_channel(stack.envoy.grpc_target) as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        email = unique_email("grpc")
        registered = auth.Register(
            auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="Via gRPC"), timeout=10
        )
        token = registered.access_token
        tasks = task_pb2_grpc.TaskServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        created = tasks.CreateTask(
            task_pb2.CreateTaskRequest(task=task_pb2.Task(title="over grpc")), metadata=metadata, timeout=10
        )
        fetched = tasks.GetTask(task_pb2.GetTaskRequest(id=created.id), metadata=metadata, timeout=10)
        assert fetched.title == "over grpc"
        with pytest.raises(grpc.RpcError) as error:
            tasks.GetTask(task_pb2.GetTaskRequest(id="0123456789abcdef01234567"), metadata=metadata, timeout=10)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        unknown: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/taskapi.v1.NoSuchService/Nope")
        with pytest.raises(grpc.RpcError) as error:
            unknown(b"", timeout=10)
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_reflection_is_not_reachable_through_the_rest_port(stack: Stack) -> None:
    """The server treats reflection as public; the REST listener routes only the three
    services, so a reflection call sent there never reaches a replica."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    rest_port = f"127.0.0.1:{stack.envoy.config.rest_port}"
    before = upstream_requests(stack.envoy)
    with grpc.insecure_channel(rest_port) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            list(
                reflection.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
                )
            )
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED, error.value
    assert upstream_requests(stack.envoy) == before


@pytest.mark.parametrize(
    "path",
    [
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.health.v1.Health/Check",
        "/taskapi.v1.NoSuchService/Nope",
        "/api/v1/tasks/x",  # a REST path, but native gRPC is not transcoded, so not forwarded
    ],
)
def test_other_paths_on_the_rest_port_never_reach_a_replica(stack: Stack, client: RestClient, path: str) -> None:
    before = upstream_requests(stack.envoy)
    # Native gRPC (which the transcoder passes through): Envoy answers it itself, in
    # gRPC's shape (HTTP 200, grpc-status UNIMPLEMENTED), as gRPC clients expect.
    framed = b"\x00\x00\x00\x00\x00"  # one empty gRPC message
    response = client.post(path, body=framed, headers={"content-type": "application/grpc", "te": "trailers"})
    assert response.headers["grpc-status"] == str(UNIMPLEMENTED), response.headers
    assert response.body == b""
    # The same path as a plain HTTP call: 404 in the JSON error shape (405 for the REST path,
    # which serves other methods than POST).
    if path.startswith("/api/"):
        assert_error(client.post(path, {}), 405, UNIMPLEMENTED)
    else:
        assert_error(client.post(path, {}), 404, NOT_FOUND)
    assert upstream_requests(stack.envoy) == before


def test_native_grpc_to_the_services_still_works_on_the_rest_port(stack: Stack) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{stack.envoy.config.rest_port}") as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            auth.Login(auth_pb2.LoginRequest(email=unique_email("nobody"), password=PASSWORD), timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED  # the server answered


@pytest.mark.parametrize(
    ("method", "retry_on"),
    [
        ("/taskapi.v1.AuthService/Refresh", edge.SAFE_RETRY_ON),
        ("/taskapi.v1.AuthService/Register", edge.SAFE_RETRY_ON),
        ("/taskapi.v1.UserService/ChangePassword", edge.SAFE_RETRY_ON),
        ("/taskapi.v1.TaskService/UpdateTask", edge.SAFE_RETRY_ON),
        ("/taskapi.v1.TaskService/GetTask", edge.IDEMPOTENT_RETRY_ON),
        ("/taskapi.v1.UserService/ListUsers", edge.IDEMPOTENT_RETRY_ON),
        # IDEMPOTENT in the protos: Envoy and the SDK agree (both read the method options).
        ("/taskapi.v1.AuthService/Logout", edge.IDEMPOTENT_RETRY_ON),
    ],
)
def test_only_idempotent_calls_are_retried_on_unavailable(method: str, retry_on: str) -> None:
    """UNAVAILABLE can come after part of a write happened (a store failure mid-call):
    writes are retried only when they never reached a replica."""
    for routes in _route_tables():
        # The first route that matches the method's path (CreateTask's needs a header too).
        route = next(
            r
            for r in routes
            if "headers" not in r["match"]
            and (r["match"].get("path") == method or method.startswith(r["match"].get("prefix", "\0")))
        )
        assert route["route"]["retry_policy"]["retry_on"] == retry_on
        # A refusal the server marks as having changed nothing is retried for any call.
        assert route["route"]["retry_policy"]["retriable_headers"] == [
            {"name": "x-retry-safe", "string_match": {"exact": "true"}}
        ]
    assert "retriable-headers" in edge.SAFE_RETRY_ON.split(",")
    assert "unavailable" not in edge.SAFE_RETRY_ON.split(",")
    assert "reset" not in edge.SAFE_RETRY_ON.split(",") and "cancelled" not in edge.SAFE_RETRY_ON.split(",")
    assert "unavailable" in edge.IDEMPOTENT_RETRY_ON.split(",")


def test_create_task_is_retried_on_unavailable_only_with_a_request_id() -> None:
    rest_routes, grpc_routes = _route_tables()
    create_task = "/taskapi.v1.TaskService/CreateTask"
    assert edge.REQUEST_ID_METHODS == (create_task,)  # derived from the protos (AIP-155 request_id)
    with_id = [r for r in rest_routes if r["match"].get("path") == create_task]
    assert len(with_id) == 1 and with_id[0]["match"]["headers"]
    assert with_id[0]["route"]["retry_policy"]["retry_on"] == edge.IDEMPOTENT_RETRY_ON
    # Over native gRPC the request_id is in the body, where Envoy cannot see it.
    assert not [r for r in grpc_routes if r["match"].get("path") == create_task]


def _route_tables() -> list[list[dict[str, Any]]]:
    """The rendered route tables, REST listener first."""
    rendered = yaml.safe_load(edge.render(edge_config([("127.0.0.1", 1)])))
    tables = [
        listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
        for listener in rendered["static_resources"]["listeners"]
    ]
    assert len(tables) == 2, tables
    return tables


def test_a_long_query_string_gets_the_field_rule_not_a_metadata_limit(client: RestClient, account: Account) -> None:
    """Envoy accepts 32 KiB of headers and forwards the REST path as x-envoy-original-path; the
    replica takes that much metadata, so `q` over its limit is the 400 naming it (never a 429)."""
    for size in (9_000, 20_000, 30_000):
        body = assert_error(client.get("tasks", token=account.token, query={"q": "a" * size}), 400, INVALID_ARGUMENT)
        assert "q: must be at most 200 characters" in body["message"], size
