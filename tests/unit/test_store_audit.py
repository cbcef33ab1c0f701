"""The query audit's view of driver commands (real MongoDB only: pymongo's command events).

No MongoDB server runs here, so the events are built by hand, shaped as pymongo sends them;
the store-layer side of the audit runs for real in tests/e2e/test_store_queries.py."""

from __future__ import annotations

from bson import ObjectId
from pymongo import monitoring

from taskapi.server.store import audit
from taskapi.server.store.audit import CommandAudit, StoreQuery, from_command

OWNER = ObjectId()


def test_driver_commands_become_store_queries() -> None:
    find = from_command("find", {"find": "tasks", "filter": {"owner": OWNER}, "limit": 20})
    assert find == StoreQuery("tasks", "find", {"owner": OWNER}, 20, source="driver")
    count = from_command(
        "aggregate", {"aggregate": "tasks", "pipeline": [{"$match": {"owner": OWNER}}, {"$group": {}}]}
    )
    assert count is not None and count.operation == "count" and count.filter == {"owner": OWNER}
    update = from_command("update", {"update": "tasks", "updates": [{"q": {"_id": 1}, "u": {}}]})
    assert update is not None and audit.violations([update])  # no owner: flagged
    modify = from_command("findAndModify", {"findAndModify": "tasks", "query": {"_id": 1, "owner": OWNER}})
    assert modify is not None and audit.violations([modify]) == []
    unbounded = from_command("find", {"find": "users", "filter": {"role": "USER"}})
    assert unbounded is not None and unbounded.limit is None and audit.violations([unbounded])
    assert from_command("ping", {"ping": 1}) is None
    assert from_command("insert", {"insert": "tasks", "documents": []}) == StoreQuery(
        "tasks", "insert", {}, None, source="driver"
    )


def test_the_listener_reports_what_the_driver_sends() -> None:
    seen: list[StoreQuery] = []
    event = monitoring.CommandStartedEvent(
        {"find": "tasks", "filter": {"owner": OWNER}, "limit": 1}, "taskapi", 1, ("localhost", 27017), 1
    )
    with audit.listening(seen.append):
        CommandAudit().started(event)
    CommandAudit().started(event)  # after the block: nobody listens
    assert [q.filter for q in seen] == [{"owner": OWNER}]


def test_an_admins_cross_owner_listing_is_matched_to_the_stores_record() -> None:
    store = StoreQuery("tasks", "find", {"status": 1}, 10, cross_owner=True)
    driver = StoreQuery("tasks", "find", {"status": 1}, 10, source="driver")
    assert audit.violations([store, driver]) == []
    assert audit.violations([driver])
