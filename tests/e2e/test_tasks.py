"""TaskService over REST, through Envoy: every row of API.md, with status codes and error bodies."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Account, assert_error, request_id, resource, violated_fields
from tests.support.edge import RestClient

INVALID_ARGUMENT, NOT_FOUND, ABORTED, UNAUTHENTICATED = 3, 5, 10, 16
MISSING_ID = "0123456789abcdef01234567"


def create(client: RestClient, account: Account, **task: Any) -> dict[str, Any]:
    task.setdefault("title", "a task")
    return resource(client.post("tasks", task, token=account.token))


def test_create_returns_the_task(client: RestClient, account: Account) -> None:
    task = create(
        client,
        account,
        title="Write the report",
        description="quarterly",
        priority="HIGH",
        tags=["work", "q1"],
        dueTime="2030-02-11T09:00:00Z",
    )
    assert len(task["id"]) == 24
    assert task["title"] == "Write the report"
    assert task["description"] == "quarterly"
    assert task["priority"] == "HIGH"
    assert task["status"] == "PENDING"
    assert task["tags"] == ["work", "q1"]
    assert task["dueTime"] == "2030-02-11T09:00:00Z"
    assert task["owner"] == account.user["id"]
    assert task["createTime"] and task["updateTime"] and task["etag"]
    assert "completeTime" not in task


def test_enums_are_case_insensitive_on_input(client: RestClient, account: Account) -> None:
    assert create(client, account, priority="high", status="in_progress")["priority"] == "HIGH"


def test_create_without_title_names_the_field(client: RestClient, account: Account) -> None:
    body = assert_error(client.post("tasks", {"description": "no title"}, token=account.token), 400, INVALID_ARGUMENT)
    assert "task.title" in violated_fields(body)


def test_create_field_rules(client: RestClient, account: Account) -> None:
    too_long = client.post("tasks", {"title": "x" * 101, "tags": ["ok", ""]}, token=account.token)
    body = assert_error(too_long, 400, INVALID_ARGUMENT)
    fields = violated_fields(body)
    assert "task.title" in fields
    assert any(f.startswith("task.tags") for f in fields), fields


def test_unknown_enum_and_malformed_json_are_400(client: RestClient, account: Account) -> None:
    assert_error(client.post("tasks", {"title": "t", "priority": "URGENT"}, token=account.token), 400, INVALID_ARGUMENT)
    malformed = client.request(
        "POST", "tasks", body=b'{"title": ', token=account.token, headers={"content-type": "application/json"}
    )
    assert_error(malformed, 400, INVALID_ARGUMENT)


def test_create_with_request_id_is_idempotent(client: RestClient, account: Account) -> None:
    rid = request_id()
    first = resource(client.post("tasks", {"title": "once"}, token=account.token, query={"requestId": rid}))
    again = resource(client.post("tasks", {"title": "once"}, token=account.token, query={"requestId": rid}))
    assert again["id"] == first["id"]
    listed = client.get("tasks", token=account.token, query={"q": "once"}).json()
    assert [task["id"] for task in listed["tasks"]] == [first["id"]]


def test_get_task(client: RestClient, account: Account) -> None:
    task = create(client, account, title="fetch me")
    assert resource(client.get(f"tasks/{task['id']}", token=account.token)) == task


def test_get_missing_or_bad_id(client: RestClient, account: Account) -> None:
    assert_error(client.get(f"tasks/{MISSING_ID}", token=account.token), 404, NOT_FOUND)
    assert_error(client.get("tasks/not-an-id", token=account.token), 400, INVALID_ARGUMENT)


def test_another_users_task_is_not_found(client: RestClient, account: Account, other_account: Account) -> None:
    task = create(client, account, title="mine")
    missing = assert_error(client.get(f"tasks/{MISSING_ID}", token=other_account.token), 404, NOT_FOUND)
    theirs = assert_error(client.get(f"tasks/{task['id']}", token=other_account.token), 404, NOT_FOUND)
    assert theirs["message"] == missing["message"].replace(MISSING_ID, task["id"])
    update = client.patch(f"tasks/{task['id']}", {"title": "stolen"}, token=other_account.token)
    assert_error(update, 404, NOT_FOUND)
    assert_error(client.delete(f"tasks/{task['id']}", token=other_account.token), 404, NOT_FOUND)
    assert resource(client.get(f"tasks/{task['id']}", token=account.token))["title"] == "mine"


def test_tasks_need_a_token(client: RestClient) -> None:
    assert_error(client.get("tasks"), 401, UNAUTHENTICATED)
    assert_error(client.post("tasks", {"title": "anonymous"}), 401, UNAUTHENTICATED)


def test_list_with_filters_order_and_pages(client: RestClient, account: Account) -> None:
    a = create(client, account, title="Alpha report", priority="LOW", tags=["work"], dueTime="2030-01-01T00:00:00Z")
    b = create(
        client,
        account,
        title="beta",
        description="the REPORT draft",
        priority="HIGH",
        tags=["work", "urgent"],
        dueTime="2030-03-01T00:00:00Z",
    )
    c = create(
        client,
        account,
        title="gamma",
        priority="MEDIUM",
        status="COMPLETED",
        tags=["home"],
        dueTime="2030-02-01T00:00:00Z",
    )

    def ids(**query: Any) -> list[str]:
        response = client.get("tasks", token=account.token, query=query)
        assert response.status == 200, response
        return [task["id"] for task in response.json()["tasks"]]

    assert set(ids(status="COMPLETED")) == {c["id"]}
    assert set(ids(status="pending")) == {a["id"], b["id"]}
    assert set(ids(priority="HIGH")) == {b["id"]}
    assert set(ids(tag="work")) == {a["id"], b["id"]}
    assert set(ids(tag=["home", "urgent"])) <= {b["id"], c["id"]}
    assert set(ids(q="report")) == {a["id"], b["id"]}  # title or description, any case
    assert set(ids(dueAfter="2030-01-15T00:00:00Z", dueBefore="2030-02-15T00:00:00Z")) == {c["id"]}
    assert ids(orderBy="dueTime") == [a["id"], c["id"], b["id"]]
    assert ids(orderBy="priority desc") == [b["id"], c["id"], a["id"]]
    # Form encoding: "+" is a space, in orderBy and in q alike.
    plus = client.get("tasks?orderBy=priority+desc&q=report+draft", token=account.token)
    assert plus.status == 200, plus
    assert [task["id"] for task in plus.json()["tasks"]] == [b["id"]]

    first = client.get("tasks", token=account.token, query={"pageSize": 2, "orderBy": "dueTime"}).json()
    assert first["totalSize"] == 3
    assert [t["id"] for t in first["tasks"]] == [a["id"], c["id"]]
    assert first["nextPageToken"]
    second = client.get(
        "tasks",
        token=account.token,
        query={"pageSize": 2, "orderBy": "dueTime", "pageToken": first["nextPageToken"]},
    ).json()
    assert [t["id"] for t in second["tasks"]] == [b["id"]]
    assert second["nextPageToken"] == ""


def test_list_page_size_rules(client: RestClient, account: Account) -> None:
    body = assert_error(client.get("tasks", token=account.token, query={"pageSize": -1}), 400, INVALID_ARGUMENT)
    assert "page_size" in violated_fields(body) or "pageSize" in violated_fields(body)
    assert client.get("tasks", token=account.token, query={"pageSize": 1000}).status == 200
    assert_error(client.get("tasks", token=account.token, query={"pageToken": "garbage"}), 400, INVALID_ARGUMENT)


def test_a_full_page_of_the_largest_tasks_is_served(client: RestClient, account: Account) -> None:
    """100 tasks at every field's limit, in 4-byte characters, are a ~1.1 MB page: more than the
    1 MiB a request may be, and still a page the server must send (not grpc's "Sent message
    larger than max" as a 429)."""
    wide = "\U0001f600"
    largest = {"title": wide * 100, "description": wide * 2000, "tags": [wide * 31 + chr(97 + n) for n in range(20)]}
    for _ in range(100):
        create(client, account, **largest)
    response = client.get("tasks", token=account.token, query={"pageSize": 100})
    page = resource(response)
    assert len(page["tasks"]) == 100 and all(task["description"] == largest["description"] for task in page["tasks"])
    assert len(response.body) > 1 << 20


def test_update_with_mask_changes_only_masked_fields(client: RestClient, account: Account) -> None:
    task = create(client, account, title="before", description="keep me", priority="LOW")
    response = client.patch(
        f"tasks/{task['id']}",
        {"title": "after", "description": "ignored", "priority": "HIGH"},
        token=account.token,
        query={"updateMask": "title,priority"},
    )
    updated = resource(response)
    assert (updated["title"], updated["description"], updated["priority"]) == ("after", "keep me", "HIGH")
    assert updated["etag"] != task["etag"]


def test_update_without_mask_changes_fields_present(client: RestClient, account: Account) -> None:
    task = create(client, account, title="before", description="keep me")
    updated = resource(client.patch(f"tasks/{task['id']}", {"status": "COMPLETED"}, token=account.token))
    assert updated["status"] == "COMPLETED"
    assert updated["completeTime"]
    assert (updated["title"], updated["description"]) == ("before", "keep me")


def test_update_with_stale_etag_is_aborted(client: RestClient, account: Account) -> None:
    task = create(client, account)
    fresh = client.patch(f"tasks/{task['id']}", {"title": "one", "etag": task["etag"]}, token=account.token)
    assert resource(fresh)["title"] == "one"
    stale = client.patch(f"tasks/{task['id']}", {"title": "two", "etag": task["etag"]}, token=account.token)
    assert_error(stale, 409, ABORTED)


def test_update_rejects_bad_fields(client: RestClient, account: Account) -> None:
    task = create(client, account)
    response = client.patch(f"tasks/{task['id']}", {"title": ""}, token=account.token, query={"updateMask": "title"})
    assert "task.title" in violated_fields(assert_error(response, 400, INVALID_ARGUMENT))


def test_delete(client: RestClient, account: Account) -> None:
    task = create(client, account)
    response = client.delete(f"tasks/{task['id']}", token=account.token)
    assert response.status == 200, response
    assert response.json() == {}
    assert_error(client.get(f"tasks/{task['id']}", token=account.token), 404, NOT_FOUND)
    assert_error(client.delete(f"tasks/{task['id']}", token=account.token), 404, NOT_FOUND)


def test_admin_reads_any_users_tasks(client: RestClient, admin: Account, account: Account) -> None:
    task = create(client, account, title="visible to admins")
    listed = client.get("tasks", token=admin.token, query={"owner": account.user["id"]})
    assert listed.status == 200, listed
    assert [t["id"] for t in listed.json()["tasks"]] == [task["id"]]
    # A user's owner filter never reaches other users' tasks.
    own_only = client.get("tasks", token=account.token, query={"owner": admin.user["id"]})
    assert own_only.status in (200, 403), own_only
    if own_only.status == 200:
        assert all(t["owner"] == account.user["id"] for t in own_only.json()["tasks"])


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "tasks/%ff%fe", "id"),
        ("DELETE", "tasks/%ff", "id"),
        ("GET", "tasks?q=%ff", "q"),
        ("GET", "tasks?orderBy=title%c3", "order_by"),
        ("PATCH", "tasks/%ff?updateMask=title", "task.id"),
    ],
)
def test_bytes_that_are_not_utf8_are_400_naming_the_field(
    client: RestClient, account: Account, method: str, path: str, field: str
) -> None:
    """Envoy passes percent-decoded bytes through as they are; the server, not grpcio, refuses them."""
    body = {"title": "t"} if method == "PATCH" else None
    response = client.request(method, path, json_body=body, token=account.token)
    error = assert_error(response, 400, INVALID_ARGUMENT)
    assert violated_fields(error) == {field}
    assert "UTF-8" in error["message"]


def test_update_mask_star_resets_what_the_body_leaves_out(client: RestClient, account: Account) -> None:
    task = create(client, account, title="full", description="d", priority="HIGH", tags=["a"], status="IN_PROGRESS")
    path = f"tasks/{task['id']}"
    refused = client.patch(path, {"description": "x"}, token=account.token, query={"updateMask": "*"})
    assert violated_fields(assert_error(refused, 400, INVALID_ARGUMENT)) == {"task.title"}
    reset = resource(client.patch(path, {}, token=account.token, query={"updateMask": "priority,status"}))
    assert (reset["priority"], reset["status"], reset["description"]) == ("MEDIUM", "PENDING", "d")
    replaced = resource(client.patch(path, {"title": "only"}, token=account.token, query={"updateMask": "*"}))
    assert (replaced["title"], replaced["description"], replaced["tags"]) == ("only", "", [])
