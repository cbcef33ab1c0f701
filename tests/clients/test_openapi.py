"""The OpenAPI document (clients/openapi) against the descriptor it is generated from.

Freshness is checked by tests/contract (`scripts/protos.py check`); these tests check
that the document says what the transcoder does."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from taskapi.server.edge.strict_json import body_rules
from taskapi.v1 import access_pb2
from tests.clients.conftest import CLIENTS, ROOT

VERBS = ("get", "put", "post", "delete", "patch")


Json = dict[str, Any]  # a JSON object of the document
Methods = list[tuple[str, descriptor_pb2.MethodDescriptorProto]]  # (service name, method)


@pytest.fixture(scope="module")
def doc() -> Json:
    document = json.loads((CLIENTS / "openapi" / "taskapi.openapi.json").read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def methods() -> Methods:
    fds = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "envoy" / "taskapi.binpb").read_bytes())
    return [
        (service.name, method)
        for file in fds.file
        if file.package == "taskapi.v1"
        for service in file.service
        for method in service.method
    ]


def _operations(doc: Json) -> dict[str, tuple[str, str, Json]]:
    return {op["operationId"]: (verb, path, op) for path, verbs in doc["paths"].items() for verb, op in verbs.items()}


def _template(path: str, op: Json) -> str:
    """The http rule's template of a documented path: `{taskId}` back to the field it binds."""
    for parameter in op.get("parameters", []):
        if parameter["in"] == "path":
            path = path.replace("{" + parameter["name"] + "}", "{" + parameter["x-proto-field"] + "}")
    return path


def test_every_rpc_is_an_operation_on_its_http_rule(doc: Json, methods: Methods) -> None:
    operations = _operations(doc)
    assert len(operations) == len(methods)
    for service, method in methods:
        rule = method.options.Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        documented_verb, path, op = operations[f"{service}_{method.name}"]
        assert (documented_verb, _template(path, op)) == (verb, getattr(rule, verb))


def test_path_parameters_have_plain_names_one_per_path(doc: Json) -> None:
    """No dots (tools refuse them), and one name per path shape: OpenAPI holds /tasks/{id} and
    /tasks/{task.id} to be the same path."""
    shapes: dict[str, str] = {}
    for path in doc["paths"]:
        assert "." not in path, path
        shape = re.sub(r"\{[^}]+\}", "{}", path)
        assert shapes.setdefault(shape, path) == path, (shapes[shape], path)
    assert {"/api/v1/tasks/{taskId}", "/api/v1/users/{userId}"} <= set(doc["paths"])
    assert set(doc["paths"]["/api/v1/tasks/{taskId}"]) == {"get", "patch", "delete"}


def test_bearer_security_follows_the_access_option(doc: Json, methods: Methods) -> None:
    operations = _operations(doc)
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for service, method in methods:
        _, _, op = operations[f"{service}_{method.name}"]
        # The generated access_pb2.pyi types the extension as a plain FieldDescriptor (as taskapi_client.policy notes).
        level: int = method.options.Extensions[access_pb2.access]  # type: ignore[index]
        public = level == access_pb2.ACCESS_LEVEL_PUBLIC
        assert (op.get("security") == []) is public, method.name
        if not public:
            assert "401" in op["responses"], method.name


def test_responses_list_every_status_from_the_errors_option(doc: Json, methods: Methods) -> None:
    ops = _operations(doc)
    update = ops["TaskService_UpdateTask"][2]["responses"]
    assert set(update) == {"200", "400", "401", "404", "409", "413", "429", "500", "503", "504"}
    assert "default" not in update
    assert set(ops["UserService_ListUsers"][2]["responses"]) == {"200", "400", "401", "403", "429", "500", "503", "504"}
    assert "409" in ops["AuthService_Register"][2]["responses"]  # ALREADY_EXISTS
    assert "401" in ops["AuthService_Login"][2]["responses"]  # a public RPC that answers UNAUTHENTICATED
    headers = doc["components"]["responses"]["RateLimited"]["headers"]
    assert set(headers) == {"Retry-After", "RateLimit-Policy", "RateLimit"}
    assert set(ops["TaskService_GetTask"][2]["responses"]["200"]["headers"]) == {"RateLimit-Policy", "RateLimit"}


def test_parameters_follow_the_transcoder(doc: Json) -> None:
    ops = _operations(doc)
    list_params = {p["name"]: p for p in ops["TaskService_ListTasks"][2]["parameters"]}
    assert set(list_params) == {
        "status",
        "priority",
        "tag",
        "dueAfter",
        "dueBefore",
        "q",
        "orderBy",
        "pageSize",
        "pageToken",
        "owner",
    }
    assert list_params["dueAfter"]["schema"]["format"] == "date-time"
    assert list_params["tag"]["schema"]["type"] == "array" and list_params["tag"]["explode"] is True
    assert list_params["status"]["schema"] == {"$ref": "#/components/schemas/taskapi.v1.TaskStatus"}

    update = ops["TaskService_UpdateTask"][2]
    assert [(p["name"], p["in"], p.get("x-proto-field")) for p in update["parameters"]] == [
        ("taskId", "path", "task.id"),
        ("updateMask", "query", None),
    ]
    # The CEL rule on UpdateTaskRequest.task (id.format) is the path parameter's pattern.
    assert update["parameters"][0]["schema"]["pattern"] == "^[0-9a-f]{24}$"
    mask = update["parameters"][1]["schema"]["pattern"]
    for accepted in ("", "*", "title", "title,status", "dueTime,due_time,tags"):
        assert re.fullmatch(mask, accepted), accepted
    for refused in ("owner", "title,*", "createTime", "title,"):
        assert not re.fullmatch(mask, refused), refused
    body = update["requestBody"]["content"]["application/json"]["schema"]
    assert "id" not in body["properties"]  # bound by the path
    assert body["properties"]["status"]["enum"] == ["PENDING", "IN_PROGRESS", "COMPLETED", None]
    # body "*": the whole request message is the body and nothing is left for the query.
    register = ops["AuthService_Register"][2]
    assert "parameters" not in register
    schema = register["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["email", "password", "name"]
    assert schema["properties"]["password"] | {"description": ""} == {
        "type": "string",
        "minLength": 8,
        "maxLength": 72,
        "x-minBytes": 8,
        "x-maxBytes": 72,
        "description": "",
    }
    assert schema["properties"]["email"]["format"] == "email"
    order_by = list_params["orderBy"]["schema"]["pattern"]
    for accepted in ("", "dueTime", "priority desc, dueTime", "title asc,status desc", "due_time"):
        assert re.fullmatch(order_by, accepted), accepted
    for refused in ("owner", "title sideways", "title,", "priority desc asc"):
        assert not re.fullmatch(order_by, refused), refused
    create = ops["TaskService_CreateTask"][2]["requestBody"]["content"]["application/json"]["schema"]
    assert create["required"] == ["title"]  # the CEL rule title.required


def test_schemas_use_the_proto3_json_mapping(doc: Json) -> None:
    schemas = doc["components"]["schemas"]
    task = schemas["taskapi.v1.Task"]["properties"]
    assert {"dueTime", "createTime", "completeTime", "etag"} <= set(task)
    assert task["createTime"]["readOnly"] is True and task["createTime"]["format"] == "date-time"
    assert task["title"]["maxLength"] == 100
    assert schemas["taskapi.v1.TaskStatus"]["enum"] == [
        "STATUS_UNSPECIFIED",
        "PENDING",
        "IN_PROGRESS",
        "COMPLETED",
    ]
    assert "Server-assigned id" in task["id"]["description"]  # proto comments become descriptions
    status = schemas["google.rpc.Status"]["properties"]
    assert set(status) == {"code", "message", "details"}
    assert {"google.rpc.BadRequest", "google.rpc.ErrorInfo", "google.rpc.RetryInfo"} <= set(schemas)


def test_every_reference_resolves(doc: Json) -> None:
    refs = set(_refs(doc))
    assert refs
    for ref in refs:
        section, name = ref.removeprefix("#/components/").split("/", 1)
        assert name in doc["components"][section], ref


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _ok_schema(op: Json) -> Json:
    content = op["responses"]["200"]["content"]
    if "text/event-stream" in content:  # a server stream (WatchTasks): each event's data is one message
        schema = content["text/event-stream"]["schema"]["properties"]["data"]["contentSchema"]
    else:
        schema = content["application/json"]["schema"]
    assert isinstance(schema, dict), op
    return schema


def test_single_resource_responses_are_the_resource(doc: Json, methods: Methods) -> None:
    """AIP style: the 200 body is the RPC's output message, and for Register, GetTask,
    GetCurrentUser, ... that is the AuthSession, Task or User itself (no wrapper)."""
    ops = _operations(doc)
    for service, method in methods:
        expected = {"$ref": f"#/components/schemas/{method.output_type.lstrip('.')}"}
        assert _ok_schema(ops[f"{service}_{method.name}"][2]) == expected, method.name
    single = (
        "AuthService_Register",
        "AuthService_Login",
        "AuthService_Refresh",
        "TaskService_CreateTask",
        "TaskService_GetTask",
        "TaskService_UpdateTask",
        "UserService_GetCurrentUser",
        "UserService_UpdateCurrentUser",
        "UserService_GetUser",
        "UserService_UpdateUser",
    )
    returned = {_ok_schema(ops[name][2])["$ref"].rsplit("/", 1)[1] for name in single}
    assert returned == {"taskapi.v1.AuthSession", "taskapi.v1.Task", "taskapi.v1.User"}
    schemas = doc["components"]["schemas"]
    session = set(schemas["taskapi.v1.AuthSession"]["properties"])
    assert {"accessToken", "refreshToken", "tokenType", "expiresIn", "user"} <= session
    wrappers = {"taskapi.v1.RegisterResponse", "taskapi.v1.GetTaskResponse", "taskapi.v1.GetUserResponse"}
    assert not wrappers & set(schemas)


def test_request_bodies_are_closed_exactly_as_the_edge_enforces(doc: Json) -> None:
    """What a body may hold per the document is what envoy/strict_json.lua lets through (its rules
    come from the same descriptor): the message's JSON and proto field names, nothing else, less
    the fields the path binds (their body value must equal the path's)."""
    schemas = doc["components"]["schemas"]
    rules = body_rules(ROOT / "envoy" / "taskapi.binpb")
    operations = {
        (verb.upper(), _template(path, op)): op for path, verbs in doc["paths"].items() for verb, op in verbs.items()
    }
    assert len([op for op in operations.values() if "requestBody" in op]) == len(rules)
    for rule in rules:
        op = operations[(rule.method, rule.template)]
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        assert schema["additionalProperties"] is False, rule.template
        bound = {
            name
            for p in op.get("parameters", [])
            if p["in"] == "path" and "." in p["x-proto-field"]
            for name in (p["x-proto-field"].split(".", 1)[1],)
        }
        assert set(schema["properties"]) == set(rule.fields) - bound, rule.template
    for name, schema in schemas.items():  # responses and shared schemas stay open
        assert schema.get("additionalProperties") is not False, name
