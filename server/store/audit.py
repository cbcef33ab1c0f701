"""Every query the store issues, shown to whoever listens: the check that task queries stay
targeted on a sharded cluster (docs/scaling.md: the shard key is the owner).

Two sources, one record (`StoreQuery`):
- the store layer itself (`record`, called next to each task query and each listing): it
  works on the embedded store, which has no driver underneath to watch;
- with a real MongoDB, pymongo's command monitoring (`CommandAudit`, registered by
  `taskapi.server.store.connect`): what the driver actually sent, filters as sent.

Listeners are process-wide, as pymongo's own monitoring registry is: a test adds one for
its duration (tests/e2e/conftest.py). With none, recording costs one empty-list check.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pymongo import monitoring

TASKS = "tasks"  # TaskDoc's collection


@dataclass(frozen=True)
class StoreQuery:
    collection: str
    operation: str  # find, count, update, delete, insert (driver: the command's name)
    filter: Mapping[str, Any]
    limit: int | None = None  # a find's limit; None: unbounded
    cross_owner: bool = False  # an admin asked for every owner's tasks (a scatter-gather, on purpose)
    source: str = "store"  # "store" or "driver"


QueryListener = Callable[[StoreQuery], None]
_listeners: list[QueryListener] = []
_lock = threading.Lock()


def record(query: StoreQuery) -> None:
    for listener in tuple(_listeners):
        listener(query)


@contextmanager
def listening(listener: QueryListener) -> Iterator[None]:
    """Send every query to `listener` while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def violations(queries: list[StoreQuery]) -> list[str]:
    """What breaks the rules: a task query not scoped by owner (unless an admin asked for every
    owner), or a listing (a find that returns many) without a limit."""
    found = []
    # The driver's view of an admin's cross-owner listing carries the filter the store recorded.
    deliberate = [dict(q.filter) for q in queries if q.cross_owner]
    for query in queries:
        if query.collection == TASKS and query.operation != "insert" and not query.cross_owner:
            if not _scoped_by_owner(query.filter) and dict(query.filter) not in deliberate:
                found.append(f"task {query.operation} not scoped by owner: {dict(query.filter)}")
        if query.operation == "find" and query.limit is None and not _by_unique_key(query.filter):
            found.append(f"unbounded {query.collection} listing: {dict(query.filter)}")
    return found


def _scoped_by_owner(match: Mapping[str, Any]) -> bool:
    if "owner" in match and not isinstance(match["owner"], Mapping):  # an equality, not a range
        return True
    return any(_scoped_by_owner(part) for part in match.get("$and", ()))


def _by_unique_key(match: Mapping[str, Any]) -> bool:
    return "_id" in match or "id" in match


class CommandAudit(monitoring.CommandListener):
    """pymongo's command events as StoreQuery records (real MongoDB only)."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        query = from_command(event.command_name, event.command)
        if query is not None:
            record(query)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def from_command(name: str, command: Mapping[str, Any]) -> StoreQuery | None:
    """The query a driver command carries, or None for commands that query nothing."""
    collection = command.get(name)
    if not isinstance(collection, str):
        return None
    cross = False  # the driver cannot tell; `violations` matches it to the store's own record
    if name == "find":
        limit = command.get("limit")
        return StoreQuery(collection, "find", command.get("filter", {}), limit or None, cross, "driver")
    if name == "aggregate":  # count_documents: {$match} then {$group}
        stages = command.get("pipeline", [])
        match = stages[0].get("$match", {}) if stages else {}
        return StoreQuery(collection, "count", match, None, cross, "driver")
    if name == "findAndModify":
        return StoreQuery(collection, "update", command.get("query", {}), 1, cross, "driver")
    for kind, items in (("update", "updates"), ("delete", "deletes")):
        if name == kind:
            statements = command.get(items, [])
            match = statements[0].get("q", {}) if len(statements) == 1 else {"$or": [s.get("q") for s in statements]}
            return StoreQuery(collection, kind, match, None, cross, "driver")
    if name == "insert":
        return StoreQuery(collection, "insert", {}, None, cross, "driver")
    return None
