"""The store's queries, captured at the store layer while the task API is used through the
REST edge: every task query is scoped by owner (the shard key), every listing is bounded.

The whole e2e run is checked the same way (the `store_queries` fixture in conftest.py);
this test drives every task operation on purpose, so the check never passes for want of
traffic, and shows that an admin's cross-owner listing is the one marked scatter-gather.
"""

from __future__ import annotations

from typing import Any

import pytest

from taskapi.server.store import audit
from taskapi.server.store.audit import StoreQuery
from tests.e2e.conftest import Account, request_id, resource
from tests.support.edge import RestClient


# The capture is in this process: the single layout's servers run here; the split layout's
# are `taskapi dev --split`'s child processes.
@pytest.mark.parametrize("stack", ["single"], indirect=True)
def test_every_task_query_is_scoped_by_owner_and_every_listing_bounded(
    client: RestClient, account: Account, admin: Account
) -> None:
    seen: list[StoreQuery] = []
    with audit.listening(seen.append):
        created = resource(
            client.post(f"tasks?requestId={request_id()}", {"title": "a", "tags": ["x"]}, token=account.token)
        )
        task_id = created["id"]
        resource(client.get(f"tasks/{task_id}", token=account.token))
        listed = resource(client.get("tasks?pageSize=1&tag=x&orderBy=dueTime%20desc", token=account.token))
        resource(client.post("tasks", {"title": "b"}, token=account.token))
        page = resource(client.get("tasks?pageSize=1", token=account.token))
        resource(client.get(f"tasks?pageSize=1&pageToken={page['nextPageToken']}", token=account.token))
        resource(client.patch(f"tasks/{task_id}?updateMask=title", {"title": "a2"}, token=account.token))
        assert client.delete(f"tasks/{task_id}", token=account.token).status == 200
        resource(client.get("tasks?owner=-&pageSize=5", token=admin.token))
        resource(client.get("users?pageSize=5", token=admin.token))
    assert listed["totalSize"] == 1
    tasks = [q for q in seen if q.collection == audit.TASKS]
    assert {q.operation for q in tasks} >= {"insert", "find", "count", "update", "delete"}
    assert audit.violations(seen) == []
    cross = [q for q in tasks if q.cross_owner]
    assert cross and all(not _has_owner(q.filter) for q in cross)  # only the admin's "-" listing
    assert all(q.limit is not None for q in seen if q.operation == "find")


def test_the_check_catches_an_unscoped_query_and_an_unbounded_listing() -> None:
    unscoped = StoreQuery(audit.TASKS, "find", {"_id": "x"}, 1)
    unbounded = StoreQuery("users", "find", {"role": "USER"})
    assert len(audit.violations([unscoped, unbounded])) == 2
    scoped_range = StoreQuery(audit.TASKS, "count", {"owner": {"$in": ["a", "b"]}})
    assert audit.violations([scoped_range])  # several owners: not one shard


def _has_owner(match: Any) -> bool:
    return "owner" in match
