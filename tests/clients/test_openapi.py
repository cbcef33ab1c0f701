"""The OpenAPI document (clients/openapi) against the descriptor it is generated from.

Freshness is checked by tests/contract (`scripts/protos.py check`); these tests check
that the document says what the transcoder does."""

from __future__ import annotations

import json
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


def test_every_rpc_is_an_operation_on_its_http_rule(doc: Json, methods: Methods) -> None:
    operations = _operations(doc)
    assert len(operations) == len(methods)
    for service, method in methods:
        rule = method.options.Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        assert operations[f"{service}_{method.name}"][:2] == (verb, getattr(rule, verb))


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
        assert ("401" in op["responses"]) is not public


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
    assert [(p["name"], p["in"]) for p in update["parameters"]] == [
        ("task.id", "path"),
        ("updateMask", "query"),
    ]
    assert update["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("taskapi.v1.Task")
    # body "*": the whole request message is the body and nothing is left for the query.
    register = ops["AuthService_Register"][2]
    assert "parameters" not in register
    assert register["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("RegisterRequest")


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
    assert schemas["taskapi.v1.RegisterRequest"]["required"] == ["email", "password", "name"]
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
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
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
    come from the same descriptor): the message's JSON and proto field names, nothing else."""
    schemas = doc["components"]["schemas"]
    rules = body_rules(ROOT / "envoy" / "taskapi.binpb")
    with_body = [op for verbs in doc["paths"].values() for op in verbs.values() if "requestBody" in op]
    assert len(with_body) == len(rules)
    for rule in rules:
        body = doc["paths"][rule.template][rule.method.lower()]["requestBody"]["content"]["application/json"]
        schema = body["schema"]
        closed = schema.get("unevaluatedProperties", schema.get("additionalProperties"))
        assert closed is False, rule.template
        target = schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema
        assert set(target["properties"]) | set(schema.get("properties", {})) == set(rule.fields), rule.template
    for name, schema in schemas.items():  # responses and shared schemas stay open
        assert schema.get("additionalProperties") is not False, name
