"""JSON request bodies are strict at the edge: unknown fields and wrong JSON types are 400s.

Envoy's transcoder alone drops unknown fields ("dueDate" for "dueTime" succeeded and set
nothing) and coerces some types ("tags": "x" became ["x"]); the REST listener's Lua filter
(envoy/strict_json.lua, allow-list from the descriptor) refuses both before transcoding.
"""

from __future__ import annotations

from typing import Any

import pytest

from taskapi.server.edge import DESCRIPTOR
from taskapi.server.edge.strict_json import body_rules
from tests.e2e.conftest import Account, assert_error, resource
from tests.support.edge import Response, RestClient

INVALID_ARGUMENT = 3
OTHER_ID = "0123456789abcdef01234567"


def task_of(client: RestClient, account: Account, **fields: Any) -> dict[str, Any]:
    return resource(client.post("tasks", {"title": "t", **fields}, token=account.token))


def refused(response: Response, *words: str) -> str:
    """A 400 in the JSON error shape whose message has every one of `words`."""
    message: str = assert_error(response, 400, INVALID_ARGUMENT)["message"]  # a str: assert_error checks
    for word in words:
        assert word in message, message
    return message


def test_an_unknown_field_is_refused_and_nothing_is_created(client: RestClient, account: Account) -> None:
    before = client.get("tasks", token=account.token).json()["totalSize"]
    response = client.post("tasks", {"title": "typo", "dueDate": "2030-01-01T00:00:00Z"}, token=account.token)
    refused(response, "task.dueDate", "unknown field", "taskapi.v1.Task")
    assert client.get("tasks", token=account.token).json()["totalSize"] == before


@pytest.mark.parametrize(
    ("method", "path", "body", "words"),
    [
        ("PATCH", "tasks/{task}", {"titel": "x"}, ("task.titel",)),
        ("PATCH", "users/me", {"nickname": "x"}, ("user.nickname", "taskapi.v1.User")),
        ("POST", "users/me:changePassword", {"currentPassword": "a", "newPassword": "b" * 9, "x": 1}, ("x",)),
        (
            "POST",
            "auth/register",
            {"email": "a@example.com", "password": "p" * 9, "name": "n", "role": "ADMIN"},
            ("role",),
        ),
        ("POST", "auth/login", {"email": "a@example.com", "password": "p", "remember": True}, ("remember",)),
        ("POST", "auth/refresh", {"refreshToken": "r", "token": "t"}, ("token",)),
        ("POST", "auth/logout", {"refreshToken": "r", "all": True}, ("all",)),
        ("POST", "tasks/", {"title": "t", "colour": "red"}, ("task.colour",)),  # a trailing slash maps too
    ],
)
def test_every_body_refuses_unknown_fields(
    client: RestClient, account: Account, method: str, path: str, body: dict[str, Any], words: tuple[str, ...]
) -> None:
    if "{task}" in path:
        path = path.format(task=task_of(client, account)["id"])
    refused(client.request(method, path, json_body=body, token=account.token), "unknown field", *words)


def test_an_admin_update_refuses_unknown_fields(client: RestClient, admin: Account, account: Account) -> None:
    response = client.patch(f"users/{account.user['id']}", {"isAdmin": True}, token=admin.token)
    refused(response, "user.isAdmin", "unknown field")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"tags": "x"}, ("task.tags", "array", "string")),  # was accepted as ["x"]
        ({"tags": [["x"]]}, ("task.tags[0]", "string", "array")),  # was flattened to ["x"]
        ({"tags": ["a", {"b": 1}]}, ("task.tags[1]", "string", "object")),
        ({"dueTime": {"seconds": 5}}, ("task.dueTime", "string", "object")),  # was 1970-01-01T00:00:05Z
        ({"dueTime": {"x": 1}}, ("task.dueTime", "string")),  # was the epoch
        ({"title": 5}, ("task.title", "string", "number")),
        ({"description": ["d"]}, ("task.description", "string", "array")),
        ({"priority": True}, ("task.priority",)),
    ],
)
def test_wrong_json_types_are_refused(
    client: RestClient, account: Account, body: dict[str, Any], words: tuple[str, ...]
) -> None:
    refused(client.post("tasks", {"title": "t", **body}, token=account.token), *words)


def test_a_bool_must_be_a_json_boolean(client: RestClient, admin: Account, account: Account) -> None:
    path = f"users/{account.user['id']}"
    refused(client.patch(path, {"disabled": "true"}, token=admin.token), "user.disabled", "true or false")
    assert resource(client.patch(path, {"disabled": False}, token=admin.token))["disabled"] is False


def test_what_the_proto3_json_mapping_allows_is_still_accepted(client: RestClient, account: Account) -> None:
    task = task_of(
        client,
        account,
        due_time="2030-01-02T03:04:05Z",  # the proto name, besides the JSON name
        priority=3,  # an enum's number, besides its name (in any case)
        status="in_progress",
        description=None,  # null: the same as leaving the field out
        tags=None,
    )
    assert (task["dueTime"], task["priority"], task["status"], task["tags"]) == (
        "2030-01-02T03:04:05Z",
        "HIGH",
        "IN_PROGRESS",
        [],
    )
    escaped = client.request(
        "POST",
        "tasks",
        body=b' {\n "ti\\u0074le" : "escaped key" , "tags" : [ "a" , "b" ] }\n',
        token=account.token,
        headers={"content-type": "application/json"},
    )
    assert resource(escaped)["title"] == "escaped key"


def test_sending_back_a_read_resource_is_accepted(client: RestClient, account: Account) -> None:
    """Output-only fields (id, owner, createTime, etag, ...) are known fields: ignored, not refused."""
    task = task_of(client, account, tags=["a"])
    task["title"] = "renamed"
    assert resource(client.patch(f"tasks/{task['id']}", task, token=account.token))["title"] == "renamed"
    me = resource(client.get("users/me", token=account.token))
    me["name"] = "Renamed"
    assert resource(client.patch("users/me", me, token=account.token))["name"] == "Renamed"


def test_an_id_in_the_body_must_match_the_path(client: RestClient, account: Account) -> None:
    """Without the transcoder's reject_binding_body_field_collisions, the body's id won over the
    path's and the update went to another resource."""
    task = task_of(client, account)
    other = task_of(client, account, title="other")
    response = client.patch(f"tasks/{task['id']}", {"id": other["id"], "title": "x"}, token=account.token)
    refused(response, task["id"], other["id"])
    assert resource(client.get(f"tasks/{other['id']}", token=account.token))["title"] == "other"
    same = client.patch(f"tasks/{task['id']}", {"id": task["id"], "title": "x"}, token=account.token)
    assert resource(same)["title"] == "x"


def test_malformed_json_is_still_the_transcoders_400(client: RestClient, account: Account) -> None:
    for body in (b'{"title": ', b'{"title": "a"} trailing', b"[1]", b'"text"'):
        response = client.request(
            "POST", "tasks", body=body, token=account.token, headers={"content-type": "application/json"}
        )
        assert_error(response, 400, INVALID_ARGUMENT)


def test_calls_without_a_body_rule_are_not_checked(client: RestClient, account: Account) -> None:
    listed = client.request(
        "GET", "tasks", body=b'{"anything": 1}', token=account.token, headers={"content-type": "application/json"}
    )
    assert listed.status == 200, listed


@pytest.mark.parametrize(
    "raw",
    [
        rb'{"description": "a \" quote, a } brace", "bogus": 1, "title": "t"}',
        rb'{"description": "ends in a backslash \\", "bogus": 1, "title": "t"}',
        rb'{"tags": ["[", "]", "\\\"{"], "bogus": 1, "title": "t"}',
        b'{"description": "caf\xc3\xa9 \\u00e9", "bogus": 1, "title": "t"}',
    ],
)
def test_the_check_keeps_its_place_through_strings(client: RestClient, account: Account, raw: bytes) -> None:
    """Quotes, braces and backslashes inside strings never hide the unknown key after them."""
    response = client.request(
        "POST", "tasks", body=raw, token=account.token, headers={"content-type": "application/json"}
    )
    refused(response, "task.bogus")
    valid = raw.replace(b'"bogus": 1, ', b"")
    accepted = client.request(
        "POST", "tasks", body=valid, token=account.token, headers={"content-type": "application/json"}
    )
    assert accepted.status == 200, accepted


def test_every_rule_rendered_from_the_descriptor_is_enforced(client: RestClient) -> None:
    """Each REST route with a body (server/strict_json.py reads them from the descriptor) refuses
    an unknown field, before any token is looked at."""
    rules = body_rules(DESCRIPTOR)
    assert {(rule.method, rule.message) for rule in rules} >= {
        ("POST", "taskapi.v1.Task"),
        ("PATCH", "taskapi.v1.User"),
    }
    for rule in rules:
        path = rule.path.removeprefix("^").removesuffix("/?$").replace("[^/]*", OTHER_ID).replace("%", "")
        response = client.request(rule.method, path, json_body={"notAField": 1})
        refused(response, f"{rule.prefix}notAField: unknown field of {rule.message}")


@pytest.mark.parametrize(
    "body",
    [
        b'{"refreshToken": "a", "refresh_token": "b"}',  # one field by both names
        b'{"refreshToken": "a", "refreshToken": "b"}',  # one key twice
    ],
)
def test_one_field_given_twice_is_refused(client: RestClient, body: bytes) -> None:
    """The parser would keep one of the two silently; the OpenAPI document says never both."""
    response = client.post("auth/logout", body=body, headers={"content-type": "application/json"})
    refused(response, "refresh", "given twice")


def test_a_null_twin_is_no_second_value(client: RestClient, account: Account) -> None:
    """`null` is an absent field, so a null beside the other name is no conflict."""
    body = b'{"title": "named once", "description": null, "due_time": null, "dueTime": "2030-01-01T00:00:00Z"}'
    response = client.post("tasks", body=body, headers={"content-type": "application/json"}, token=account.token)
    assert resource(response)["dueTime"] == "2030-01-01T00:00:00Z"


def test_update_mask_star_over_rest_replaces_the_task(client: RestClient, account: Account) -> None:
    """AIP-134's `*` passes the field-mask rule (it lists `*`): a full replacement, resets included."""
    task = task_of(client, account, description="gone after", tags=["a"], priority="HIGH")
    replaced = resource(
        client.patch(f"tasks/{task['id']}", {"title": "only"}, token=account.token, query={"updateMask": "*"})
    )
    assert (replaced["title"], replaced["description"], replaced["tags"], replaced["priority"]) == (
        "only",
        "",
        [],
        "MEDIUM",
    )
    for mask in ("title,*", "owner", "createTime"):
        refused(client.patch(f"tasks/{task['id']}", {"title": "x"}, token=account.token, query={"updateMask": mask}))
